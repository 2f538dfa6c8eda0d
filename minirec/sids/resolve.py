"""Turn ``--data-dir`` values into a local data directory: a folder as it is, or a sids run's ``data/`` artifacts.

    from minirec.sids import resolve_data_dir
    files = locate(category, resolve_data_dir("3f2a...c9"))     # an MLflow run id of the sids stage
    files = locate(category, resolve_data_dir("runs:/3f2a...c9/data"))
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from minirec.data.layout import PROJECT_ROOT

DATA_ARTIFACT = "data"
DOWNLOAD_CACHE = PROJECT_ROOT / ".cache" / "sids"
_RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_RUNS_URI_RE = re.compile(r"^runs:/([0-9a-f]{32})(?:/.*)?$")


def _run_id(ref: str) -> str | None:
    if _RUN_ID_RE.match(ref):
        return ref
    match = _RUNS_URI_RE.match(ref)
    return match.group(1) if match else None


def resolve_data_dir(ref: str | os.PathLike | None, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """A data directory in the upstream layout for ``ref``: ``None`` stays ``None`` (the bundled default),
    an existing folder is returned as is, and a sids run (id or ``runs:/`` URI) has its ``data/`` artifact
    folder downloaded once into ``cache_dir/<run id>/`` (default ``.cache/sids``) and returned."""
    if ref is None or str(ref) == "":
        return None
    if Path(ref).is_dir():
        return Path(ref)
    run_id = _run_id(str(ref))
    if run_id is None:
        raise FileNotFoundError(f"--data-dir {ref!r} is neither an existing folder nor an MLflow run id / runs:/ URI")
    target = Path(cache_dir or DOWNLOAD_CACHE) / run_id
    if (target / DATA_ARTIFACT).is_dir():
        return target / DATA_ARTIFACT
    import mlflow

    run = mlflow.get_run(run_id)
    if run.data.tags.get("stage") != "sids":
        raise ValueError(f"run {run_id} is a {run.data.tags.get('stage')!r} run, not a sids run; it has no SID data directory")
    staging = target.with_name(f".{run_id}.tmp")
    staging.mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=DATA_ARTIFACT, dst_path=str(staging))
    if not Path(local).is_dir():
        raise FileNotFoundError(f"run {run_id} has no '{DATA_ARTIFACT}/' artifact folder")
    os.replace(staging, target)
    return target / DATA_ARTIFACT
