"""The stages ``main`` chains for one category, how each is launched, and when a finished one is reused.

    mlflow run . -e main -P category=all -P preset=tiny --env-manager local

Each stage runs as its own process (``python -m minirec.<stage> ...``) so a crash or an out-of-memory kill of
one stage is contained and reported by name, and so multi-GPU stages can re-launch themselves through
``accelerate launch``. Two environment variables link a stage's MLflow run back to ``main`` (both read by
:func:`minirec.tracking.stage_run`): ``MINIREC_PIPELINE_RUN_ID`` tags it with the category's pipeline run,
and ``MINIREC_STAGE_KEY`` tags it with a digest of everything that determines its result (stage, arguments,
which include the run ids of its inputs, code version, data digests). A FINISHED run with the same key is
reused instead of recomputed, in the spirit of MLflow's multistep-workflow example; an interrupted one is
resumed from its last checkpoint when the stage supports ``--resume_from``, and marked KILLED either way.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

from minirec.data.layout import PROJECT_ROOT
from minirec.tracking import PIPELINE_ENV, STAGE_KEY_ENV, STAGE_KEY_TAG

UNFINISHED = ("FAILED", "KILLED", "RUNNING")
RERUN_TAG = "minirec.rerun_of"


@dataclass(frozen=True)
class Step:
    """One stage of the pipeline: the entry-point module and its command-line arguments."""

    name: str
    module: str
    args: tuple[str, ...] = field(default_factory=tuple)
    resumable: bool = False  # the stage accepts ``--resume_from <run id>`` and uploads checkpoints

    def command(self, extra: tuple[str, ...] = ()) -> list[str]:
        return [sys.executable, "-m", f"minirec.{self.module}", *self.args, *extra]


class StageFailed(RuntimeError):
    """A stage's process exited non-zero."""


CODE_PATHS = ("minirec", "entrypoints", "configs", "MLproject")


def code_version() -> str:
    """Git tree ids of the code that computes results, plus a digest of uncommitted changes to it.

    Trees rather than the commit, so a change to the README or the tests does not invalidate finished runs.
    """
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True).stdout

    trees = git("rev-parse", *(f"HEAD:{path}" for path in CODE_PATHS)).split()
    version = hashlib.sha256(" ".join(trees).encode()).hexdigest()[:16] if trees else "unknown"
    diff = git("diff", "HEAD", "--", *CODE_PATHS)
    return f"{version}+{hashlib.sha256(diff.encode()).hexdigest()[:12]}" if diff else version


def stage_key(step: Step, category: str, data_digests: dict[str, str], version: str) -> str:
    """Digest of everything that determines a stage's result."""
    payload = {"stage": step.name, "module": step.module, "args": step.args, "category": category,
               "data": data_digests, "code": version}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def runs_with_key(key: str) -> list:
    """Runs of any experiment tagged with ``key``, newest first."""
    import mlflow

    return mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.`{STAGE_KEY_TAG}` = '{key}'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )


def child_environment(parent_run_id: str, key: str = "") -> dict[str, str]:
    """The environment of a stage process: its runs are children of ``parent_run_id`` and carry ``key``.

    ``MLFLOW_RUN_ID`` is dropped, or the stage would log into the run that ``mlflow run`` opened for ``main``.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
    env[PIPELINE_ENV] = parent_run_id
    env[STAGE_KEY_ENV] = key
    return env


def run_step(step: Step, parent_run_id: str, key: str = "", extra: tuple[str, ...] = ()) -> float:
    """Run one stage to completion; return its wall time in seconds, raise :class:`StageFailed` otherwise."""
    command = step.command(extra)
    print(f"[main] stage {step.name}: python {' '.join(command[1:])}", flush=True)
    started = time.monotonic()
    completed = subprocess.run(command, cwd=PROJECT_ROOT, env=child_environment(parent_run_id, key))
    if completed.returncode != 0:
        raise StageFailed(f"stage {step.name!r} failed with exit code {completed.returncode}; "
                          f"run `python {' '.join(command[1:])}` to see it alone, or rerun main to resume it")
    return time.monotonic() - started


@dataclass
class Outcome:
    """What happened to a stage: the run that holds its result, and whether it was reused."""

    run_id: str
    reused: bool
    seconds: float


def has_checkpoint(run_id: str) -> bool:
    """Whether an interrupted run left checkpoint artifacts to continue from."""
    from minirec.resume import checkpoint_steps

    return bool(checkpoint_steps(run_id))


def run_or_reuse(step: Step, key: str, parent_run_id: str, force: bool) -> Outcome:
    """Reuse the newest FINISHED run with ``key``; otherwise run the stage, resuming an interrupted attempt."""
    previous = [] if force else runs_with_key(key)
    finished = [run for run in previous if run.info.status == "FINISHED"]
    if finished:
        run_id = finished[0].info.run_id
        print(f"[main] stage {step.name}: reusing finished run {run_id} (same parameters, code and data)", flush=True)
        return Outcome(run_id, True, 0.0)
    interrupted = [run for run in previous if run.info.status in UNFINISHED]
    resumable = [run for run in interrupted if step.resumable and has_checkpoint(run.info.run_id)]
    extra: tuple[str, ...] = ()
    if resumable:
        extra = ("--resume_from", resumable[0].info.run_id)
        print(f"[main] stage {step.name}: resuming interrupted run {resumable[0].info.run_id}", flush=True)
    if interrupted:
        from minirec.resume import mark_dead

        mark_dead(interrupted[0].info.run_id)
    seconds = run_step(step, parent_run_id, key, extra)
    finished = [run for run in runs_with_key(key) if run.info.status == "FINISHED"]
    if not finished:
        raise StageFailed(f"stage {step.name!r} exited 0 but left no finished MLflow run tagged {key}")
    if interrupted:
        import mlflow

        mlflow.MlflowClient().set_tag(finished[0].info.run_id, RERUN_TAG, interrupted[0].info.run_id)
    return Outcome(finished[0].info.run_id, False, seconds)
