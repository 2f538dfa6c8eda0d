"""The MLproject doorways: ``mlflow run . -e <stage>`` runs ``python -m entrypoints.<stage>``, which runs the
stage's own command ``python -m minirec.<stage>`` with the same options and exit status.

The doorways only call into ``minirec``; nothing in ``minirec`` imports them. Users type ``python -m
minirec.<stage>`` (or ``mlflow run``); this package exists so MLproject has one fixed place to call.
"""

from __future__ import annotations

import runpy


def enter(module: str) -> None:
    """Run ``python -m <module>`` in this process (its ``SystemExit`` carries the stage's exit status)."""
    runpy.run_module(module, run_name="__main__", alter_sys=True)
