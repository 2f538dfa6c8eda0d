"""Shared fixtures: a fresh sqlite MLflow store per test, offline Hugging Face, the bundled data."""

from __future__ import annotations

import os

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
