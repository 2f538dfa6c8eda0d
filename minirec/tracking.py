"""MLflow conventions shared by every stage.

- Tracking URI: ``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<project>/mlflow.db`` (the file store is
  refused by recent MLflow). Telemetry is off and the Hugging Face hub is offline.
- One experiment per category, named ``minirec-<Category>`` (``minirec-comparison`` for cross-category runs).
- Every run is tagged ``category``, ``stage`` (what the run is about: data, sft, grpo, popularity, ...),
  ``source`` (where its input came from: a file, a model, a run id) and ``entry_point``; runs holding scored
  beam outputs are also tagged ``scored=true`` so ``compare`` can find them.
- Every run records the git commit, ``pip freeze``, the device, and the sha256 of each data file it read.

Metric names may not contain ``@``: ``HR@10`` is logged as ``HR_at_10`` (:func:`metric_name`).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Iterator, Mapping

from minirec.data.layout import PROJECT_ROOT, CategoryFiles, file_record

COMPARISON_EXPERIMENT = "minirec-comparison"


def configure_environment() -> str:
    """Set the process-wide defaults (tracking URI, telemetry off, HF offline); return the tracking URI."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    import mlflow

    mlflow.set_tracking_uri(uri)
    return uri


def experiment_name(category: str) -> str:
    """The experiment that holds a category's runs; ``all`` (or none) goes to the comparison experiment."""
    return COMPARISON_EXPERIMENT if category in ("", "all", None) else f"minirec-{category}"


def _artifact_root_for(uri: str) -> str | None:
    """For a sqlite store, keep artifacts beside the database (``<dir>/mlartifacts``) instead of the cwd."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()


def ensure_experiment(name: str) -> str:
    """Id of the experiment ``name``, created (with artifacts beside a sqlite store) when missing."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    root = _artifact_root_for(mlflow.get_tracking_uri())
    location = f"{root}/{name}" if root else None
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        # Another process created it between our lookup and our create.
        return mlflow.get_experiment_by_name(name).experiment_id


def metric_name(name: str) -> str:
    """A paper-notation metric name as a valid MLflow key: ``HR@10`` -> ``HR_at_10``."""
    return name.replace("@", "_at_")


def is_main_process() -> bool:
    """True on rank 0 of a distributed launch (or when not distributed): only it logs to MLflow."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def git_commit() -> str:
    """The project's HEAD commit, suffixed ``-dirty`` when tracked files changed; ``unknown`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def pip_freeze() -> str:
    """``pip freeze``-style listing of the installed distributions (read from metadata, no subprocess)."""
    lines = {f"{dist.metadata['Name']}=={dist.version}" for dist in metadata.distributions() if dist.metadata["Name"]}
    return "\n".join(sorted(lines, key=str.lower)) + "\n"


def device_info() -> dict:
    """Device names and counts, for reproducibility."""
    info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda_devices"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if info["cuda_devices"]:
            info["cuda_device_name"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def log_data_files(files: CategoryFiles, roles: tuple[str, ...] = ("train", "valid", "test", "index", "items", "info")) -> dict:
    """Log path, rows and sha256 of each data file read, as params ``data.<role>.*`` and ``data_files.json``."""
    import mlflow

    records = {role: file_record(files.all_files()[role]) for role in roles}
    params = {}
    for role, record in records.items():
        params[f"data.{role}.path"] = record["path"]
        params[f"data.{role}.sha256"] = record["sha256"]
        if "rows" in record:
            params[f"data.{role}.rows"] = record["rows"]
    params["data.train_is_partial"] = files.train_is_partial
    mlflow.log_params(params)
    mlflow.log_dict(records, "data_files.json")
    return records


def adopt_outer_run_as_parent() -> str | None:
    """For a command that makes several runs: turn the run ``mlflow run`` opened into their parent.

    Without this, each of the command's runs would join that one run and overwrite each other's params.
    """
    outer = os.environ.pop("MLFLOW_RUN_ID", None)
    if outer:
        os.environ["MINIREC_PARENT_RUN_ID"] = outer
    return outer


@contextlib.contextmanager
def start_run(
    *,
    category: str,
    stage: str,
    source: str,
    entry_point: str,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    nested: bool = False,
    parent_run_id: str | None = None,
) -> Iterator["mlflow.ActiveRun"]:  # noqa: F821
    """Start (or join, under ``mlflow run``) a run in the category's experiment with the standard tags.

    ``mlflow run`` exports ``MLFLOW_RUN_ID``; ``mlflow.start_run`` then resumes that run, so the entry point's
    run and ours are one and the same.
    """
    configure_environment()
    import mlflow

    if not os.environ.get("MLFLOW_RUN_ID") and not nested:
        mlflow.set_experiment(experiment_id=ensure_experiment(experiment_name(category)))
    all_tags = {
        "category": category,
        "stage": stage,
        "source": source,
        "entry_point": entry_point,
        "git_commit": git_commit(),
        **(tags or {}),
    }
    # ``main`` runs each stage as a child of its pipeline run and says which through the environment.
    parent_run_id = parent_run_id or os.environ.get("MINIREC_PARENT_RUN_ID")
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    # ...and which stage it is, so a later ``main`` can find the finished run and reuse it.
    if os.environ.get("MINIREC_STAGE_KEY"):
        all_tags["minirec.stage_key"] = os.environ["MINIREC_STAGE_KEY"]
    with mlflow.start_run(run_name=run_name, nested=nested, tags=all_tags) as run:
        mlflow.log_text(pip_freeze(), "environment/pip_freeze.txt")
        mlflow.log_dict(device_info(), "environment/device.json")
        yield run


def log_params(params: Mapping[str, object]) -> None:
    """Log params to the active run without clashing with those ``mlflow run`` already logged from ``-P``.

    A key already logged with the same value is skipped; with another value (``''`` for "default", say) the
    resolved value goes under ``resolved.<key>``, since MLflow refuses to change a logged param.
    """
    import mlflow

    run = mlflow.active_run()
    logged = mlflow.get_run(run.info.run_id).data.params if run else {}
    fresh = {}
    for key, value in params.items():
        text = str(value)
        if key not in logged:
            fresh[key] = text
        elif logged[key] != text:
            fresh[f"resolved.{key}"] = text
    if fresh:
        mlflow.log_params(fresh)


def log_json_metrics(values: Mapping[str, float], step: int | None = None) -> None:
    """Log a mapping of paper-notation names (``HR@10``) as MLflow metrics (``HR_at_10``); skips non-numbers."""
    import mlflow

    numeric = {metric_name(k): float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    mlflow.log_metrics(numeric, step=step)


def dump_json(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False)


def project_path(*parts: str) -> Path:
    return PROJECT_ROOT.joinpath(*parts)
