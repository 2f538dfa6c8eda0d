"""MLflow conventions and the one run life-cycle every stage goes through (:func:`stage_run`).

    with stage_run(settings, stage="sft", source=settings.model, files=files, splits=SPLITS) as run:
        ...                                     # the stage's work; metrics and artifacts go to ``run``

- Tracking URI: ``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<project>/mlflow.db`` (the file store is
  refused by recent MLflow). Telemetry is off and the Hugging Face hub is offline.
- Before a process first uses a store (:func:`prepare_store`): a sqlite store is created and migrated once,
  under an exclusive lock on ``<db>.lock``, so stages started together on a new store do not race MLflow's
  schema migration; a tracking server gets one ``GET /health`` with a stated timeout
  (``$MINIREC_SERVER_CHECK_TIMEOUT``, 5 s), and a server that does not answer is a one-line error before any
  run. MLflow's HTTP retries are bounded by default (``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` 4,
  ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` 1, ``MLFLOW_HTTP_REQUEST_TIMEOUT`` 30 s; set them to override): a
  request to a dead server gives up after about 15 s instead of minutes.
- A server that stops answering while a stage runs ends the stage with one message (:class:`ServerGone`):
  where the local outputs are and how to log them later; the run is left as the server last saw it.
- One experiment per category, ``minirec-<Category>`` (``minirec-comparison`` for cross-category runs), with its
  artifacts beside a sqlite store in ``mlartifacts/``.
- Every run is tagged ``category``, ``stage`` (what the run is about: data, sft, grpo, popularity, ...),
  ``source`` (where its input came from: a file, a model, a run id), ``entry_point``, ``preset`` and
  ``git_commit``; runs holding scored beam outputs are also tagged ``scored=true`` so ``compare`` finds them.
- Every run logs its resolved settings (params and ``config/resolved.yaml``), ``pip freeze``, the device, the
  data files it read (path, rows, sha256 as ``data.<role>.*`` params) and each split as an MLflow dataset input,
  and which train file stands behind its numbers (``train_file.*``). Training and evaluation runs also log
  system metrics (CPU, memory, and GPUs through ``pynvml`` when installed).
- A run started by ``mlflow run`` (``MLFLOW_RUN_ID``) is joined when it lives in the stage's experiment; a run
  ``mlflow run`` opened elsewhere ("Default") is tagged with a pointer to the stage's own run instead.

Metric names may not contain ``@``: ``HR@10`` is logged as ``HR_at_10`` (:func:`metric_name`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import subprocess
import sys
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from minirec.data.layout import PROJECT_ROOT, CategoryFiles, file_record
from minirec.errors import UserError

COMPARISON_EXPERIMENT = "minirec-comparison"
PARENT_ENV, STAGE_KEY_ENV = "MINIREC_PARENT_RUN_ID", "MINIREC_STAGE_KEY"
# main's stage runs name their pipeline run in a tag, not as MLflow's parent: MLflow 3.17's runs table folds
# children under a collapsed parent row, which hid every stage run of a pipeline.
PIPELINE_ENV, PIPELINE_TAG = "MINIREC_PIPELINE_RUN_ID", "minirec.pipeline_run"
STAGE_KEY_TAG, POINTER_TAG = "minirec.stage_key", "minirec.stage_run"
DATA_ROLES = ("train", "valid", "test", "index", "items", "info")
# Bounded HTTP retries (MLflow's defaults, 7 retries with backoff factor 2 and a 120 s timeout, stall a stage for
# minutes on a dead server); any of them set in the environment wins.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
SERVER_CHECK_ENV, SERVER_CHECK_SECONDS = "MINIREC_SERVER_CHECK_TIMEOUT", 5.0
_PREPARED: set[str] = set()  # tracking URIs this process has prepared (migrated or checked)


class ServerUnreachable(UserError):
    """The tracking server does not answer (at the start of a stage)."""


class ServerGone(UserError):
    """The tracking server stopped answering while a stage ran; the message says where the outputs are."""

    exit_status = 3


def in_pipeline() -> bool:
    """Whether this stage runs as a step of ``main`` (which sets :data:`PIPELINE_ENV` for it)."""
    return bool(os.environ.get(PIPELINE_ENV))


def configure_environment(open_store: bool = True) -> str:
    """Set the process-wide defaults (tracking URI, telemetry off, HF offline, bounded HTTP retries) and prepare
    the store once per process (:func:`prepare_store`); return the tracking URI.

    ``open_store=False`` (a stage's first call, before it knows its input is good) checks a server but leaves a
    sqlite store alone: a mistake found before the first real use of the store leaves no new database file."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    import mlflow

    mlflow.set_tracking_uri(uri)
    if uri not in _PREPARED and (open_store or not uri.startswith("sqlite:")):
        prepare_store(uri)
        _PREPARED.add(uri)
    return uri


def prepare_store(uri: str) -> None:
    """A new sqlite store is created and migrated under a file lock; a server must answer ``/health``."""
    if uri.startswith("sqlite:///"):
        _migrate_sqlite_once(uri)
    elif uri.startswith(("http://", "https://")):
        reason = server_problem(uri)
        if reason:
            raise ServerUnreachable(f"the tracking server {uri} does not answer ({reason}); start it, or point "
                                    "MLFLOW_TRACKING_URI at one that runs")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``None`` for an in-memory one)."""
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _migrate_sqlite_once(uri: str) -> None:
    """Create (or open) the store under an exclusive ``fcntl`` lock on ``<db>.lock``: the first process makes
    the tables and runs MLflow's migrations, the others wait for it and then find them made."""
    path = sqlite_path(uri)
    if path is None:
        return
    import fcntl

    from mlflow.tracking._model_registry.utils import _get_store as registry_store
    from mlflow.tracking._tracking_service.utils import _get_store as tracking_store

    path.parent.mkdir(parents=True, exist_ok=True)
    chatty = logging.getLogger("mlflow.store.db.utils")  # "Creating initial MLflow database tables..."
    level = chatty.level
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        chatty.setLevel(logging.WARNING)
        try:
            tracking_store(uri)  # cached by MLflow: the stage's clients reuse this store
            registry_store(uri)
        finally:
            chatty.setLevel(level)
            fcntl.flock(lock, fcntl.LOCK_UN)


def server_timeout() -> float:
    try:
        return float(os.environ.get(SERVER_CHECK_ENV) or SERVER_CHECK_SECONDS)
    except ValueError:
        return SERVER_CHECK_SECONDS


def server_problem(uri: str, timeout: float | None = None) -> str | None:
    """Why the server at ``uri`` does not answer one ``GET /health`` within ``timeout`` seconds, or ``None``
    when it answers (any HTTP status counts: a server behind a proxy or with auth still answers)."""
    timeout = server_timeout() if timeout is None else timeout
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            return f"no answer to GET /health within {timeout:g} s"
        return f"GET /health: {reason}"


def experiment_name(category: str | None) -> str:
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
    info = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
            "cpu_count": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda_devices"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if info["cuda_devices"]:
            info["cuda_device_name"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


# --- params and data -----------------------------------------------------------------------------------------


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


def train_file_params(files: CategoryFiles) -> dict[str, str]:
    """``train_file.*``: which train split stands behind a run's numbers, its path relative to the data folder."""
    record = file_record(files.train)
    return {"train_file.path": files.relative(files.train), "train_file.data_dir": files.data_dir_label,
            "train_file.rows": str(record["rows"]), "train_file.sha256": record["sha256"],
            "train_file.partial": str(files.train_is_partial).lower()}


def log_data(files: CategoryFiles, roles: Sequence[str] = DATA_ROLES, splits: Sequence[str] = ()) -> dict:
    """Log the data files read (``data.<role>.*`` params, ``data_files.json``) and each of ``splits`` as a
    dataset input (name ``<Category>/<split>``, source its path, digest of its rows); returns the records."""
    import mlflow

    from minirec.data.catalogue import read_split

    records = {role: file_record(files.all_files()[role]) for role in roles}
    params = {"data.root": str(files.root.parent)}
    for role, record in records.items():
        params[f"data.{role}.path"] = record["path"]
        params[f"data.{role}.sha256"] = record["sha256"]
        if "rows" in record:
            params[f"data.{role}.rows"] = record["rows"]
    params["data.train_is_partial"] = files.train_is_partial
    log_params(params)
    mlflow.log_dict(records, "data_files.json")
    for split in splits:
        path = files.split(split)
        frame = read_split(path, parse_histories=False)
        if len(frame):
            dataset = mlflow.data.from_pandas(frame, source=str(path.resolve()), name=f"{files.category}/{split}")
            mlflow.log_input(dataset, context=split)
    return records


def log_json_metrics(values: Mapping[str, float], step: int | None = None) -> None:
    """Log a mapping of paper-notation names (``HR@10``) as MLflow metrics (``HR_at_10``); skips non-numbers."""
    import mlflow

    numeric = {metric_name(k): float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    mlflow.log_metrics(numeric, step=step)


# --- the run life-cycle --------------------------------------------------------------------------------------


def adopt_outer_run_as_parent() -> str | None:
    """For a command that makes several runs: turn the run ``mlflow run`` opened into their parent."""
    outer = os.environ.pop("MLFLOW_RUN_ID", None)
    if outer:
        os.environ[PARENT_ENV] = outer
    return outer


def _joinable_outer_run(experiment_id: str) -> tuple[str | None, str | None]:
    """``(run to join, run to point at ours)`` for the ``MLFLOW_RUN_ID`` that ``mlflow run`` (or our launcher)
    exported: joined when it lives in our experiment, else tagged with a pointer once our run exists."""
    import mlflow

    outer = os.environ.pop("MLFLOW_RUN_ID", None)
    if not outer:
        return None, None
    run = mlflow.MlflowClient().get_run(outer)
    if run.info.experiment_id == experiment_id:
        return outer, None
    return None, outer


def _point_outer_run(outer: str, run, experiment: str) -> None:
    """Tag the run ``mlflow run`` opened outside the stage's experiment with where the stage's run is."""
    import mlflow

    client = mlflow.MlflowClient()
    client.set_tag(outer, POINTER_TAG, run.info.run_id)
    client.set_tag(outer, "mlflow.note.content",
                   f"This stage ran as run {run.info.run_id} in experiment {experiment}; its metrics, model and "
                   f"outputs are there (pass --experiment-name {experiment} to mlflow run to use one run).")
    print(f"[tracking] run {run.info.run_id} in experiment {experiment} (mlflow run's {outer} points to it)",
          flush=True)


@contextlib.contextmanager
def stage_run(
    settings=None,
    *,
    stage: str,
    source: str,
    category: str | None = None,
    run_name: str | None = None,
    entry_point: str | None = None,
    tags: Mapping[str, str] | None = None,
    files: CategoryFiles | None = None,
    roles: Sequence[str] = DATA_ROLES,
    splits: Sequence[str] = (),
    system_metrics: bool = False,
    parent_run_id: str | None = None,
    nested: bool = False,
    experiment: str | None = None,
    module: str | None = None,
) -> Iterator["mlflow.ActiveRun"]:  # noqa: F821
    """Start (or join) a stage's run with the standard tags and records, end it FINISHED, FAILED or KILLED.

    ``settings`` (a :class:`minirec.settings.Settings`) are logged as params and ``config/resolved.yaml``, its
    preset file as ``config/<name>.yaml``; ``files`` are logged as data (``roles``) and dataset inputs
    (``splits``). ``category`` defaults to the settings' category. If the tracking server stops answering
    while the run is open, the run is let go without further requests and :class:`ServerGone` says where the
    outputs are and how to log them later (``module``, ``python -m <module>``, names the command).
    """
    configure_environment()
    import mlflow

    category = category or getattr(settings, "category", "all")
    experiment = experiment or experiment_name(category)
    experiment_id = ensure_experiment(experiment)
    join, point = (None, None) if nested else _joinable_outer_run(experiment_id)
    all_tags = {"category": category, "stage": stage, "source": source, "entry_point": entry_point or stage,
                "git_commit": git_commit(), **({"preset": settings.preset} if getattr(settings, "preset", "") else {}),
                **(tags or {})}
    parent_run_id = parent_run_id or os.environ.get(PARENT_ENV)
    if parent_run_id and parent_run_id != join:
        all_tags["mlflow.parentRunId"] = parent_run_id
    if os.environ.get(PIPELINE_ENV):
        all_tags[PIPELINE_TAG] = os.environ[PIPELINE_ENV]
    if os.environ.get(STAGE_KEY_ENV):
        all_tags[STAGE_KEY_TAG] = os.environ[STAGE_KEY_ENV]
    with contextlib.ExitStack() as stack:
        run = stack.enter_context(mlflow.start_run(
            run_id=join, experiment_id=None if join else experiment_id, run_name=None if join else run_name,
            nested=nested, tags=all_tags, log_system_metrics=system_metrics or None))
        try:
            if point:
                _point_outer_run(point, run, experiment)
            if settings is not None and hasattr(settings, "output_dir") and not settings.output_dir:
                settings.output_dir = str(default_output_dir(settings.STAGE, category, run.info.run_id))
            mlflow.log_text(pip_freeze(), "environment/pip_freeze.txt")
            mlflow.log_dict(device_info(), "environment/device.json")
            if settings is not None:
                log_settings(settings)
            if files is not None:
                log_data(files, roles, splits)
                if "train" in roles:
                    log_params(train_file_params(files))
            try:
                yield run
            except KeyboardInterrupt:
                mlflow.end_run("KILLED")
                raise
        except Exception as error:
            uri = mlflow.get_tracking_uri()
            reason = _lost_server(error, uri)
            if reason is None:
                raise
            _let_go(run.info.run_id)
            raise ServerGone(_gone_message(uri, reason, run.info.run_id, stage, settings, module)) from None


# --- a server that stops answering -----------------------------------------------------------------------------

_CONNECTION_WORDS = ("API request to", "Max retries exceeded", "Connection refused", "ConnectionError",
                     "Read timed out", "RemoteDisconnected")


def _looks_like_connection_error(error: BaseException) -> bool:
    """Whether ``error`` (or an exception in its chain) is a failed HTTP connection, as MLflow reports it."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (ConnectionError, TimeoutError)):
            return True
        module = type(error).__module__.split(".", 1)[0]
        if module in ("requests", "urllib3"):
            return True
        if any(word in str(error) for word in _CONNECTION_WORDS):
            return True
        error = error.__cause__ or error.__context__
    return False


def _lost_server(error: BaseException, uri: str) -> str | None:
    """Why the tracking server is gone, when ``error`` came from losing it (and it still does not answer)."""
    if not uri.startswith(("http://", "https://")) or not _looks_like_connection_error(error):
        return None
    return server_problem(uri)


def _let_go(run_id: str) -> None:
    """Forget the active run locally, with no request to the server (which would only retry and fail)."""
    os.environ.pop("MLFLOW_RUN_ID", None)
    try:
        from mlflow.tracking import fluent

        stack = fluent._active_run_stack.get()
        stack[:] = [active for active in stack if active.info.run_id != run_id]
        monitor = fluent.run_id_to_system_metrics_monitor.pop(run_id, None)
        if monitor is not None:
            monitor._shutdown_event.set()  # its thread (a daemon) stops without a last upload
    except AttributeError:  # another MLflow layout: the run's end_run then fails once more, after bounded retries
        pass


def _gone_message(uri: str, reason: str, run_id: str, stage: str, settings, module: str | None) -> str:
    out = str(Path(settings.output_dir).resolve()) if getattr(settings, "output_dir", "") else ""
    kept = f"its local outputs are kept in {out}" if out else "it had written no local outputs yet"
    command = f"python -m {module or 'minirec.' + stage}"
    if settings is not None and "resume_from" in settings.specs():
        later = f"{command} --resume_from {run_id}"
    elif settings is not None and module:
        later = settings.command_line(module)
    else:
        later = f"{command} again"
    upload = f" (or upload the folder as it is: mlflow artifacts log-artifacts --local-dir {out} --run-id {run_id})" \
        if out else ""
    return (f"the tracking server {uri} stopped answering during {stage} run {run_id} ({reason}); {kept}. When it "
            f"answers again, log them with: {later}{upload}")


def default_output_dir(stage: str, category: str, run_id: str) -> Path:
    """``outputs/<stage>/<category>/<run id>``: a run's own folder, never shared with another run."""
    return PROJECT_ROOT / "outputs" / stage / category / run_id


def log_settings(settings) -> None:
    """The resolved settings as params and ``config/resolved.yaml``, and the preset file they started from."""
    import mlflow

    log_params(settings.as_params())
    mlflow.log_text(settings.to_yaml(), "config/resolved.yaml")
    preset = getattr(settings, "preset", "")
    if preset:
        path = settings.preset_path(preset)
        mlflow.log_text(path.read_text(encoding="utf-8"), f"config/{path.name}")


@contextlib.contextmanager
def attached_run(run_id: str) -> Iterator["mlflow.ActiveRun"]:  # noqa: F821
    """Log into the run the launcher created for this multi-process stage (rank 0 of the launched processes).

    It ends FINISHED or FAILED with this process; the launcher, which waits for every process, marks it FAILED
    afterwards if any other process failed.
    """
    configure_environment()
    import mlflow

    os.environ.pop("MLFLOW_RUN_ID", None)
    with mlflow.start_run(run_id=run_id) as run:
        yield run
