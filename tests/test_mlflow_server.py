"""The stages against a real ``mlflow server`` (HTTP tracking, proxied artifacts) instead of a sqlite file.

One server per module: ``python -m mlflow server`` on 127.0.0.1 and a free port, its backend a sqlite file and
its artifact destination a folder, both in the test's temp dir. Each stage runs as a real subprocess with
``MLFLOW_TRACKING_URI=http://127.0.0.1:PORT``, exactly as a user pointing the harness at a team server would;
the assertions then read the runs back through ``MlflowClient`` and download artifacts through the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import OFFICE, mlflow_server
from mlflow import MlflowClient

from minirec.data import locate
from minirec.data.layout import PROJECT_ROOT, sha256_of
from minirec.models import load_model_and_tokenizer, log_hf_model, resolve_model
from minirec.tiny_model import build_tiny_model
from minirec.tracking import stage_run

STAGE_SECONDS = 300
BASELINES = ("popularity", "transition")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as running:
        yield running


@pytest.fixture(scope="module")
def tracking(server):
    """MLFLOW_TRACKING_URI (this process and the stages it starts) points at the server; no outer run leaks in."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", server.uri)
        for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MINIREC_PARENT_RUN_ID", "MINIREC_STAGE_KEY"):
            patch.delenv(name, raising=False)
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(server.uri)
        yield MlflowClient(tracking_uri=server.uri)
        mlflow.set_tracking_uri(previous)


def run_stage(*args: str) -> subprocess.CompletedProcess:
    """``python -m <args>`` from the project root with this process's environment; fails with its output."""
    done = subprocess.run([sys.executable, "-m", *args], cwd=PROJECT_ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=STAGE_SECONDS)
    if done.returncode:
        pytest.fail(f"python -m {' '.join(args)} exited {done.returncode}\n"
                    f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}")
    return done


def runs_of(client: MlflowClient, experiment: str, entry_point: str) -> list:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"experiment {experiment} is not on the server"
    return client.search_runs([found.experiment_id], f"tags.entry_point = '{entry_point}'")


def download_json(client: MlflowClient, run_id: str, path: str, into: Path) -> dict:
    local = client.download_artifacts(run_id, path, str(into))
    return json.loads(Path(local).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def stages(tracking, tmp_path_factory):
    """data validate, both baselines and compare, run one after another as a user would; returns compare's --out."""
    out = tmp_path_factory.mktemp("compare-out")
    run_stage("minirec.data", "--category", OFFICE)
    for method in BASELINES:  # the non-learned floors; the learned baselines have tests of their own
        run_stage("minirec.baselines", "--category", OFFICE, "--method", method)
    run_stage("minirec.compare", "--paper", "table1", "--category", OFFICE, "--out", str(out))
    return out


def test_data_run_is_on_the_server_with_its_tags_and_validation_results(stages, tracking, tmp_path):
    (run,) = runs_of(tracking, f"minirec-{OFFICE}", "data")
    assert run.info.status == "FINISHED"
    assert {"category": OFFICE, "stage": "data", "entry_point": "data", "validation": "passed"}.items() \
        <= run.data.tags.items()
    files = locate(OFFICE)
    assert run.data.params["data.test.sha256"] == sha256_of(files.test)
    assert run.data.metrics["failed_expectations"] == 0
    results = download_json(tracking, run.info.run_id, "validation/results.json", tmp_path)
    assert results["category"] == OFFICE and results["ok"] is True and results["failed"] == []
    test_rows = len(pd.read_csv(files.test))
    assert results["summary"]["splits"]["test"]["rows"] == run.data.metrics["rows_test"] == test_rows


def test_baseline_scores_download_through_the_server_and_match_the_beams(stages, server, tracking, tmp_path):
    runs = runs_of(tracking, f"minirec-{OFFICE}", "baselines")
    assert sorted(run.data.tags["stage"] for run in runs) == sorted(BASELINES)
    for run in runs:
        run_id, stage = run.info.run_id, run.data.tags["stage"]
        assert run.info.status == "FINISHED"
        assert {"category": OFFICE, "entry_point": "baselines", "scored": "true"}.items() <= run.data.tags.items()
        # Artifacts go through the server's proxy and land in its destination, not beside any local store.
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
        assert list(server.artifacts.rglob(f"{run_id}/artifacts/scores/metrics.json"))

        metrics = download_json(tracking, run_id, "scores/metrics.json", tmp_path / stage)
        assert metrics["HR@10"] == run.data.metrics["HR_at_10"]
        assert metrics["n"] == run.data.metrics["n"] == int(run.data.params["data.test.rows"])

        # HR@10 from the downloaded beams themselves: every beam is a distinct catalogue SID, so a hit in the
        # top ten is simply the target appearing among the first ten predictions.
        beams = pd.read_parquet(tracking.download_artifacts(run_id, "beams/beams.parquet", str(tmp_path / stage)))
        in_top10 = [target in list(predict[:10]) for target, predict in zip(beams["target"], beams["predict"])]
        assert metrics["HR@10"] == pytest.approx(sum(in_top10) / len(beams), abs=1e-12)
    by_stage = {run.data.tags["stage"]: run.data.metrics["HR_at_10"] for run in runs}
    assert by_stage["transition"] > by_stage["popularity"]


def test_comparison_run_reads_the_scored_runs_through_the_server(stages, tracking):
    (comparison,) = runs_of(tracking, "minirec-comparison", "compare")
    baseline_ids = {run.info.run_id for run in runs_of(tracking, f"minirec-{OFFICE}", "baselines")}
    assert comparison.info.status == "FINISHED"
    assert comparison.data.tags["category"] == OFFICE and comparison.data.tags["stage"] == "compare"
    assert set(comparison.data.tags["compared_run_ids"].split(",")) == baseline_ids
    assert (stages / "report.md").is_file() and (stages / "comparison.csv").is_file()
    assert {"report.md", "comparison.csv"} <= {a.path for a in tracking.list_artifacts(comparison.info.run_id)}

    table = pd.read_csv(stages / "comparison.csv")
    for run in runs_of(tracking, f"minirec-{OFFICE}", "baselines"):
        ours = table.loc[(table["stage"] == run.data.tags["stage"]) & (table["metric"] == "HR@10"), "ours"]
        assert ours.tolist() == [pytest.approx(run.data.metrics["HR_at_10"])]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_model(OFFICE, tmp_path_factory.mktemp("models") / "tiny-office")


def test_evaluate_logs_a_tiny_model_run_and_its_beams_to_the_server(tiny_model, tracking, tmp_path):
    run_stage("minirec.evaluate", "--model", str(tiny_model), "--category", OFFICE, "--limit", "8", "--num-beams",
              "10", "--batch-size", "8", "--out", str(tmp_path / "evaluate"))

    (run,) = runs_of(tracking, f"minirec-{OFFICE}", "evaluate")
    assert run.info.status == "FINISHED"
    assert {"category": OFFICE, "stage": "evaluate", "scored": "true", "source": str(tiny_model)}.items() \
        <= run.data.tags.items()
    assert run.data.metrics["invalid_all"] == 0
    assert run.data.metrics["n"] == 8 and run.data.metrics["num_beams"] == 10

    beams = pd.read_parquet(tracking.download_artifacts(run.info.run_id, "beams/beams.parquet", str(tmp_path)))
    assert len(beams) == 8 and all(len(predict) == 10 for predict in beams["predict"])
    metrics = download_json(tracking, run.info.run_id, "scores/metrics.json", tmp_path / "scores")
    assert metrics["HR@10"] == run.data.metrics["HR_at_10"]


def test_a_checkpoint_logged_to_the_server_resolves_by_run_id_and_model_uri(tiny_model, tracking, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("MINIREC_MODEL_CACHE", str(tmp_path / "cache"))
    model, tokenizer = load_model_and_tokenizer(tiny_model)
    with stage_run(category=OFFICE, stage="sft", source=str(tiny_model)) as run:
        model_uri = log_hf_model(model, tokenizer)
    # What was uploaded, saved again locally: save_pretrained of the same objects writes the same bytes.
    model.save_pretrained(tmp_path / "expected")
    tokenizer.save_pretrained(tmp_path / "expected")
    expected = {path.name: path.read_bytes() for path in (tmp_path / "expected").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= expected.keys()

    for ref in (run.info.run_id, model_uri):
        folder = resolve_model(ref)
        assert folder.is_relative_to(tmp_path / "cache")  # a download through the server, not a local folder
        assert {path.name: path.read_bytes() for path in folder.iterdir()} == expected
