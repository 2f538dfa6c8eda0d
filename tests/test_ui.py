"""What a researcher sees: the report of a real tiny pipeline, and the MLflow UI on its store in a real browser.

Slow (a pipeline on reduced tiny presets, then a real ``mlflow server`` and headless Chromium, which the test
installs with apt when it is absent): ``pytest -m slow tests/test_ui.py``. With ``MINIREC_SCREENSHOTS=docs/ui``
the screenshots are also written there (the README shows them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from conftest import OFFICE, mlflow_server

from minirec.data.layout import PROJECT_ROOT
from test_pipeline import reduced_presets

pytestmark = pytest.mark.slow
VIEW = "workflowType=machine_learning"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed and this user cannot install it (apt-get install chromium)")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        subprocess.run(command, check=True, capture_output=True, timeout=900)
    return shutil.which("chromium")


def browse(url: str, screenshot: Path | None = None) -> str:
    """The page's DOM after its scripts ran (and a 1600x1000 screenshot), from headless Chromium."""
    common = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1600,1000",
              "--virtual-time-budget=30000"]
    if screenshot is not None:
        subprocess.run([*common, f"--screenshot={screenshot}", url], check=True, capture_output=True, timeout=180)
    done = subprocess.run([*common, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=180)
    return done.stdout


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """``main`` for Office on reduced tiny presets, into a store of its own: the runs a user gets."""
    root = tmp_path_factory.mktemp("pipeline")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_RUN_ID", None)
    done = subprocess.run([sys.executable, "-m", "minirec.pipeline", "--category", OFFICE, "--preset",
                           str(reduced_presets(root)), "--out", str(root / "report")],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=2400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root, uri, done.stdout


def test_the_report_says_what_was_run_on_which_rows_and_how_healthy_it_was(pipeline):
    root, uri, printed = pipeline
    report = (root / "report" / "report.md").read_text()
    assert "preset `" in report and "randomly initialised, not pretrained" in report
    assert "tiny preset checks that every stage runs end to end" in report
    assert "first 24 test rows (not a random sample of the split)" in report  # every stage on the same rows
    assert "| HR_coll@10 |" in report
    # The reduced GRPO run has 8 prompts: its groups rarely hit; the report must say so, not present a result.
    assert "### Training health" in report and "roll-out groups with a hit" in report
    assert "### GRPO minus SFT" in report and "paired user bootstrap" in report
    assert not re.search(r"(?<![\w.:])/(?:tmp|work|home|root)/", report), "an absolute machine path is in the report"
    # The end of the run fits on a screen or two apart from the report.
    before_report = printed.split("# minirec against the paper", 1)[0]
    assert len(before_report.splitlines()) < 120, before_report[-3000:]


def test_the_mlflow_ui_lists_every_stage_run_and_opens_the_compared_runs(pipeline, tmp_path):
    root, uri, _ = pipeline
    shots = Path(os.environ.get("MINIREC_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(f"minirec-{OFFICE}")
    stage_runs = [run for run in client.search_runs([experiment.experiment_id])
                  if run.data.tags.get("stage") not in ("pipeline",)]
    with mlflow_server(tmp_path, backend=uri) as server:
        dom = browse(f"{server.uri}/#/experiments/{experiment.experiment_id}/runs?{VIEW}", shots / "runs.png")
        names = {run.info.run_name for run in stage_runs}
        missing = [name for name in names if name not in dom]
        assert not missing, f"the runs table does not list {missing}"
        assert {"sft-", "grpo-", "evaluate-sft-test-", "popularity-test-"} <= {
            prefix for prefix in ("sft-", "grpo-", "evaluate-sft-test-", "popularity-test-")
            if any(name.startswith(prefix) for name in names)}
        scored = [run for run in stage_runs if run.data.tags.get("scored") == "true"]
        ids = json.dumps([run.info.run_id for run in scored], separators=(",", ":"))
        compare = (f"{server.uri}/#/compare-runs?runs={ids}&experiments=[\"{experiment.experiment_id}\"]&{VIEW}")
        dom = browse(compare, shots / "compare.png")
        assert f"Comparing {len(scored)} Runs" in dom
        assert all(run.info.run_id in dom for run in scored)
        sft = next(run for run in stage_runs if run.data.tags.get("stage") == "sft"
                   and run.data.tags.get("entry_point") == "sft")
        browse(f"{server.uri}/#/experiments/{experiment.experiment_id}/runs/{sft.info.run_id}?{VIEW}",
               shots / "sft_run.png")
    for name in ("runs.png", "compare.png", "sft_run.png"):
        assert (shots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (shots / name).stat().st_size > 30_000
    # the report links to exactly this compare view (same runs, same view switch)
    report = (root / "report" / "report.md").read_text()
    assert "compare-runs?runs=" in report and VIEW in report
