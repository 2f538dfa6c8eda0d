"""minirec: an MLflow-tracked reproducibility harness for MiniOneRec (arXiv 2510.24431).

Stages (each an MLproject entry point and a ``python -m`` command):
data -> sids -> sft -> evaluate -> grpo -> evaluate -> compare, chained by ``main``.
"""

__version__ = "0.1.0"
