"""``main``: the whole reproduction in one command (``python -m minirec.pipeline``, ``mlflow run . -e main``).

Modules: ``steps`` (launching a stage, reusing a finished one), ``settings`` and ``recipe`` (the command).
"""
