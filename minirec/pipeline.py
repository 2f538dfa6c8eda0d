"""The stages ``main`` chains for one category, and how each is launched.

    mlflow run . -e main -P category=all -P preset=tiny --env-manager local

Each stage runs as its own process (``python -m entrypoints.<stage> ...``) so a crash or an out-of-memory kill
of one stage is contained, and reported by name, and so multi-GPU stages can re-launch themselves through
``accelerate launch``. The stage's MLflow run becomes a child of the category's pipeline run through
``MINIREC_PARENT_RUN_ID`` (read by :func:`minirec.tracking.start_run`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

from minirec.data.layout import PROJECT_ROOT


@dataclass(frozen=True)
class Step:
    """One stage of the pipeline: the entry-point module and its command-line arguments."""

    name: str
    module: str
    args: tuple[str, ...] = field(default_factory=tuple)

    def command(self) -> list[str]:
        return [sys.executable, "-m", f"entrypoints.{self.module}", *self.args]


class StageFailed(RuntimeError):
    """A stage's process exited non-zero."""


def plan(category: str, preset: str, data_dir: str | None) -> list[Step]:
    """The stages for one category, in order."""
    data_args = ("--data-dir", data_dir) if data_dir else ()
    return [
        Step("data", "data", ("validate", "--category", category, *data_args)),
        Step("baselines", "baselines", ("--category", category, "--method", "all", *data_args)),
    ]


def child_environment(parent_run_id: str) -> dict[str, str]:
    """The environment of a stage process: its runs are children of ``parent_run_id``.

    ``MLFLOW_RUN_ID`` is dropped, or the stage would log into the run that ``mlflow run`` opened for ``main``.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
    env["MINIREC_PARENT_RUN_ID"] = parent_run_id
    return env


def run_step(step: Step, parent_run_id: str) -> float:
    """Run one stage to completion; return its wall time in seconds, raise :class:`StageFailed` otherwise."""
    print(f"[main] stage {step.name}: {' '.join(step.command()[1:])}", flush=True)
    started = time.monotonic()
    completed = subprocess.run(step.command(), cwd=PROJECT_ROOT, env=child_environment(parent_run_id))
    if completed.returncode != 0:
        raise StageFailed(f"stage {step.name!r} failed with exit code {completed.returncode}")
    return time.monotonic() - started
