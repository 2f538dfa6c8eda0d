"""Continuing an interrupted SFT run: from a checkpoint folder, an output folder, or the run's MLflow id.

    python -m minirec.sft --preset tiny --resume_from outputs/sft/Industrial_and_Scientific/20260101-120000
    python -m minirec.sft --preset tiny --resume_from <run id>

The Trainer's ``resume_from_checkpoint`` restores weights, optimiser, scheduler, RNG states and the position
in the data order, so on CPU the continued run ends with the same weights as an uninterrupted one. Each
output folder records the run that wrote it (``run.json``), which is how a checkpoint finds its run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from minirec.atomic import write_json

RUN_FILE = "run.json"
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class ResumeError(ValueError):
    """Nothing to resume from at the given reference."""


def record_run(output_dir: str | Path, run_id: str) -> Path:
    """Write ``run.json`` (the MLflow run id) into the output folder."""
    return write_json(Path(output_dir) / RUN_FILE, {"run_id": run_id})


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The ``checkpoint-N`` sub-folder with the highest N that holds a trainer state, if any."""
    found = [(int(match.group(1)), path) for path in Path(folder).glob("checkpoint-*")
             if (match := _CHECKPOINT.match(path.name)) and (path / "trainer_state.json").exists()]
    return max(found)[1] if found else None


def _run_of(output_dir: Path) -> str | None:
    path = output_dir / RUN_FILE
    return json.loads(path.read_text(encoding="utf-8"))["run_id"] if path.exists() else None


def resolve_resume(ref: str) -> tuple[Path, str | None]:
    """``(checkpoint folder, id of the run that wrote it or None)`` for a folder or a run id."""
    path = Path(ref)
    if path.is_dir():
        checkpoint = path if (path / "trainer_state.json").exists() else latest_checkpoint(path)
        if checkpoint is None:
            raise ResumeError(f"{path} holds no Trainer checkpoint (no trainer_state.json, no checkpoint-N folder)")
        return checkpoint, _run_of(checkpoint.parent)
    if _RUN_ID.match(ref):
        from mlflow import MlflowClient

        params = MlflowClient().get_run(ref).data.params
        # Under ``mlflow run`` the -P value ('' for the default) holds the key and the folder used is "resolved."
        output_dir = params.get("resolved.output_dir") or params.get("output_dir")
        checkpoint = latest_checkpoint(output_dir) if output_dir else None
        if checkpoint is None:
            raise ResumeError(f"run {ref} left no checkpoint in its output_dir {output_dir!r}")
        return checkpoint, ref
    raise ResumeError(f"--resume_from {ref!r} is neither a folder nor an MLflow run id")
