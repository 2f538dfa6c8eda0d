"""The one resume scheme of SFT and GRPO: checkpoints are MLflow artifacts, and ``resume_from=<run id>`` continues.

    python -m minirec.sft  --preset tiny --resume_from <run id>
    python -m minirec.grpo --resume_from <run id> --num_train_epochs 3          # extend a finished run

While training, :class:`CheckpointArtifacts` uploads every checkpoint the Trainer saves to the run's
``checkpoints/checkpoint-<step>`` artifacts, then a manifest ``checkpoints/checkpoint-<step>.json`` of each file's
sha256, and records the manifest's own sha256 as the run param ``checkpoint.<step>.sha256`` (params cannot be
changed once logged). Resuming downloads the newest checkpoint into the new run's output folder and checks it
before use: its manifest must match the param, every file its sha256, and ``trainer_state.json`` must parse; a
torn or altered checkpoint is reported and the previous one is tried. So a run resumes on any machine that
reaches the tracking server, and only loads files (DeepSpeed and RNG states are pickles) whose digests the run
that wrote them recorded. The Trainer's ``resume_from_checkpoint`` then restores weights, optimiser, scheduler,
RNG states and the position in the data order.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from transformers import TrainerCallback

from minirec.errors import NotFoundError
from minirec.refs import get_run, is_run_id

CHECKPOINT_DIR = "checkpoints"
RESUMED_DIR = "resumed"
CHECKPOINT_ENV = "MINIREC_RESUME_CHECKPOINT"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)$")


class ResumeError(NotFoundError):
    """Nothing whole to resume from at the given reference."""


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, keyed by its relative path."""
    digests = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digests[str(path.relative_to(folder))] = digest.hexdigest()
    return digests


def manifest_param(step: int) -> str:
    return f"checkpoint.{step}.sha256"


class CheckpointArtifacts(TrainerCallback):
    """Upload each saved checkpoint, then its digest manifest, and record the manifest's digest as a param."""

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        import mlflow

        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not folder.is_dir():
            return
        mlflow.log_artifacts(str(folder), f"{CHECKPOINT_DIR}/{folder.name}")
        manifest = json.dumps(file_digests(folder), indent=1, sort_keys=True)
        mlflow.log_text(manifest, f"{CHECKPOINT_DIR}/{folder.name}.json")
        mlflow.log_param(manifest_param(state.global_step), hashlib.sha256(manifest.encode()).hexdigest())


def checkpoint_steps(run_id: str) -> list[int]:
    """Steps of the run's checkpoint artifacts, newest first."""
    from mlflow import MlflowClient

    entries = MlflowClient().list_artifacts(run_id, CHECKPOINT_DIR)
    return sorted((int(m.group(1)) for e in entries if e.is_dir and (m := _CHECKPOINT.search(e.path))), reverse=True)


def _verified(run, step: int, into: Path) -> Path:
    """Download checkpoint ``step`` of ``run`` into ``into`` and check it; raise ``ValueError`` saying what is wrong."""
    import mlflow

    recorded = run.data.params.get(manifest_param(step))
    if recorded is None:
        raise ValueError("the run recorded no digest for it (it was not saved whole)")
    manifest_text = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/{CHECKPOINT_DIR}/checkpoint-{step}.json")
    if hashlib.sha256(manifest_text.encode()).hexdigest() != recorded:
        raise ValueError("its manifest does not match the digest the run recorded")
    folder = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                      artifact_path=f"{CHECKPOINT_DIR}/checkpoint-{step}",
                                                      dst_path=str(into)))
    expected, actual = json.loads(manifest_text), file_digests(folder)
    wrong = sorted(name for name in expected.keys() | actual.keys() if expected.get(name) != actual.get(name))
    if wrong:
        raise ValueError(f"{len(wrong)} file(s) differ from the recorded digests (first: {wrong[0]})")
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"trainer_state.json does not parse ({error})") from None
    return folder


def fetch_checkpoint(run_id: str, into: Path) -> Path:
    """The newest whole checkpoint of run ``run_id``, downloaded under ``into``; older ones are tried in turn."""
    run = get_run(run_id)
    steps = checkpoint_steps(run_id)
    if not steps:
        raise ResumeError(f"resume_from {run_id}: the run has no {CHECKPOINT_DIR}/checkpoint-<step> artifacts")
    for step in steps:
        try:
            return _verified(run, step, into / f"step-{step}")
        except ValueError as error:
            print(f"[resume] checkpoint-{step} of run {run_id} is not usable: {error}; trying an earlier one",
                  flush=True)
    raise ResumeError(f"resume_from {run_id}: none of its checkpoints {steps} is whole")


def fetch_for_launch(run_id: str, output_dir: str | Path, machine_rank: int = 0) -> Path:
    """Fetch the checkpoint to resume into ``<output_dir>/resumed/machine-<rank>`` and tell every process of
    this machine where it is (``MINIREC_RESUME_CHECKPOINT``, inherited by launched processes)."""
    import os

    checkpoint = fetch_checkpoint(run_id, Path(output_dir) / RESUMED_DIR / f"machine-{machine_rank}")
    os.environ[CHECKPOINT_ENV] = str(checkpoint)
    return checkpoint


def resumed_checkpoint(settings) -> Path | None:
    """The checkpoint this process resumes from (fetched by its launcher), or ``None`` when not resuming."""
    import os

    value = os.environ.get(CHECKPOINT_ENV)
    return Path(value) if settings.resume_from and value else None


def check_resume_reference(ref: str) -> str:
    """``ref`` if it is a run id; resume takes runs, not folders (a folder would not survive a move)."""
    if not is_run_id(ref):
        raise ResumeError(f"resume_from {ref!r} is not an MLflow run id (resume takes the id of the run to continue)")
    return ref


def mark_dead(run_id: str) -> None:
    """A run being resumed or rerun that still says RUNNING was killed: say so (issue: runs left RUNNING)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, "KILLED")


def resumed_settings(ref: str) -> dict:
    """The settings run ``ref`` was started with (its ``config/resolved.yaml``), the base a resume starts from;
    its output folder stays its own."""
    import mlflow
    import yaml

    run = get_run(check_resume_reference(ref))
    try:
        text = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/config/resolved.yaml")
    except Exception as error:  # a missing artifact surfaces as several MLflow/OS error types
        raise ResumeError(f"resume_from {ref}: the run logged no config/resolved.yaml ({type(error).__name__}); "
                          "it is not a run of this harness") from None
    values = yaml.safe_load(text) or {}
    for own in ("output_dir", "resume_from"):
        values.pop(own, None)
    return values
