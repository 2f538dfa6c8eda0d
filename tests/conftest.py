"""Shared fixtures: a fresh sqlite MLflow store per test, offline Hugging Face, the bundled data."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from minirec.data import BUNDLED_DATA_DIR, locate  # noqa: E402

INDUSTRIAL = "Industrial_and_Scientific"
OFFICE = "Office_Products"


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch):
    """A real, empty sqlite tracking store for this test only; MLFLOW_TRACKING_URI points at it."""
    import mlflow
    import mlflow.tracking.fluent as fluent

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # set_experiment() in an earlier test leaves its experiment id active; that id means nothing in this store.
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(scope="session")
def data_dir():
    return BUNDLED_DATA_DIR


@pytest.fixture(scope="session")
def industrial_files():
    return locate(INDUSTRIAL)


@pytest.fixture(scope="session")
def office_files():
    return locate(OFFICE)


@pytest.fixture(scope="session")
def tiny_industrial(tmp_path_factory):
    """The tiny Industrial model (seed 0), built once per test session and shared by every test file."""
    from minirec.tiny_model import build_tiny_model

    target = tmp_path_factory.getbasetemp() / f"tiny-{INDUSTRIAL}-0"
    if not (target / "config.json").exists():
        build_tiny_model(INDUSTRIAL, target, seed=0)
    return target


@pytest.fixture(scope="module")
def tiny_loaded(tiny_industrial):
    """The tiny Industrial model and its tokenizer, loaded once per test module; tests only read them."""
    from minirec.models import load_model_and_tokenizer

    return load_model_and_tokenizer(tiny_industrial)


@pytest.fixture(scope="module")
def industrial_catalogue(industrial_files):
    """The bundled Industrial catalogue (SIDs, titles, info lines), loaded once per test module."""
    from minirec.data import Catalogue

    return Catalogue.load(industrial_files)


def run_stage(recipe_class, *argv) -> str:
    """Run a stage's command line in this process (as ``python -m minirec.<stage>``); return its run id.

    A user error raises :class:`minirec.errors.UserError` here (the command line would print it and exit 2).
    """
    from minirec.stage import execute

    recipes = execute(recipe_class, [str(arg) for arg in argv])
    return recipes[-1].mlflow_run.info.run_id


def stage_exit(recipe_class, *argv) -> int:
    """The exit status of a stage's command line run in this process."""
    from minirec.stage import main

    return main(recipe_class, [str(arg) for arg in argv])


# --- a real mlflow server on 127.0.0.1 -------------------------------------------------------------------------

SERVER_STARTUP_SECONDS = 120  # a cold server import takes ~10 s on an idle core; the test machine is shared
SERVER_STOP_SECONDS = 15


@dataclass(frozen=True)
class Server:
    uri: str
    root: Path  # holds backend.db and the --artifacts-destination folder
    artifacts: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (server and uvicorn worker), SIGKILL whatever outlives it."""
    try:
        os.killpg(process.pid, signal.SIGTERM)  # start_new_session: the server leads a group of its own
        process.wait(timeout=SERVER_STOP_SECONDS)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=SERVER_STOP_SECONDS)


@contextlib.contextmanager
def mlflow_server(root: Path, backend: str | None = None):
    """``python -m mlflow server`` on 127.0.0.1 and a free port, its backend ``root/backend.db`` (or the store
    ``backend``) and its proxied artifacts in ``root/artifacts`` (``mlflow-artifacts:/`` URIs, so the folder can
    move)."""
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", backend or f"sqlite:///{root / 'backend.db'}",
        "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts",
    ]
    # No background job runner: the stages never submit server-side jobs, and it slows start and stop.
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_STARTUP_SECONDS
        while not _healthy(uri):
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with status {process.returncode}:\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not answer {uri}/health in {SERVER_STARTUP_SECONDS} s")
            time.sleep(0.5)
        yield Server(uri=uri, root=root, artifacts=root / "artifacts")
    finally:
        _stop(process)
