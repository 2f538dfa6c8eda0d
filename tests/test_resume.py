"""Resume by run id (minirec.resume): checkpoints are artifacts with recorded digests, a torn one falls back to
the one before, and a killed SFT or GRPO run continues from a copy of the tracking store in another folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from conftest import INDUSTRIAL, mlflow_server, run_stage

from minirec.data.layout import PROJECT_ROOT
from minirec.errors import UserError
from minirec.resume import CHECKPOINT_DIR, fetch_checkpoint, manifest_param
from minirec.sft.recipe import SFTRecipe

SMALL = ["--preset", "tiny", "--device", "cpu", "--sample", "48", "--valid_sample", "8", "--global_batch_size", "8",
         "--micro_batch_size", "4", "--eval_steps", "2", "--save_steps", "2", "--warmup_steps", "1",
         "--logging_steps", "1", "--early_stopping_patience", "0", "--final_eval_limit", "0",
         "--evaluate_untrained", "false", "--log_model", "false"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from minirec.tiny_model import build_tiny_model

    return build_tiny_model(INDUSTRIAL, tmp_path_factory.mktemp("tiny") / "model", seed=0)


def artifact_folder(run_id: str) -> Path:
    return Path(mlflow.get_run(run_id).info.artifact_uri.removeprefix("file://"))


def train_loss_steps(run_id: str) -> list[int]:
    return [m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "train_loss")]


def test_a_torn_latest_checkpoint_falls_back_to_the_previous_one(tiny_model, mlflow_uri, tmp_path, capsys):
    first = run_stage(SFTRecipe, *SMALL, "--model", tiny_model, "--max_steps", "4", "--output_dir", tmp_path / "a")
    params = mlflow.get_run(first).data.params
    assert manifest_param(2) in params and manifest_param(4) in params
    # A kill while checkpoint-4 was uploaded: its trainer state is cut in half.
    state = artifact_folder(first) / CHECKPOINT_DIR / "checkpoint-4" / "trainer_state.json"
    state.write_text(state.read_text()[: len(state.read_text()) // 2])
    second = run_stage(SFTRecipe, "--resume_from", first, "--max_steps", "6", "--output_dir", tmp_path / "b")
    assert "checkpoint-4 of run" in capsys.readouterr().out
    assert train_loss_steps(second) == [3, 4, 5, 6]  # continued after checkpoint-2, the last whole one
    assert mlflow.get_run(second).data.tags["resumed_from"] == first


def test_a_checkpoint_changed_after_the_run_recorded_it_is_refused(tiny_model, mlflow_uri, tmp_path):
    first = run_stage(SFTRecipe, *SMALL, "--model", tiny_model, "--max_steps", "2", "--output_dir", tmp_path / "a")
    folder = artifact_folder(first) / CHECKPOINT_DIR
    # Someone with write access to the artifact store swaps the RNG state (a pickle) and fixes the manifest.
    rng = folder / "checkpoint-2" / "rng_state.pth"
    rng.write_bytes(rng.read_bytes() + b"\0")
    manifest = json.loads((folder / "checkpoint-2.json").read_text())
    manifest["rng_state.pth"] = "0" * 64
    (folder / "checkpoint-2.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"none of its checkpoints \[2\] is whole"):
        fetch_checkpoint(first, tmp_path / "fetched")
    with pytest.raises(UserError, match="not an MLflow run id"):
        run_stage(SFTRecipe, "--resume_from", str(tmp_path / "a"))


# --- killed, moved, resumed --------------------------------------------------------------------------------------


def start(module: str, *argv, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *map(str, argv)], cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_after_first_checkpoint(process: subprocess.Popen, client, stage: str, timeout: float = 600) -> str:
    """SIGKILL ``process`` once its ``stage`` run has recorded a checkpoint; return the run id (left RUNNING)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = client.get_experiment_by_name(f"minirec-{INDUSTRIAL}")
        runs = client.search_runs([found.experiment_id], f"tags.stage = '{stage}'") if found else []
        for run in runs:
            if any(key.startswith("checkpoint.") for key in run.data.params):
                process.kill()
                process.wait()
                return run.info.run_id
        assert process.poll() is None, "the stage ended before it saved a checkpoint"
        time.sleep(0.2)
    process.kill()
    raise AssertionError("no checkpoint was recorded in time")


@pytest.mark.slow
def test_killed_sft_and_grpo_runs_resume_by_run_id_from_a_moved_tracking_store(tiny_model, tmp_path):
    """Server A, two runs killed mid-training; A's store and artifacts copied to another folder and A deleted,
    with every local output folder; server B on the copy resumes both runs by id, to the end."""
    first_root, second_root = tmp_path / "first", tmp_path / "second"
    first_root.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with mlflow_server(first_root) as server:
        env["MLFLOW_TRACKING_URI"] = server.uri
        client = mlflow.MlflowClient(server.uri)
        sft = start("minirec.sft", *SMALL, "--model", tiny_model, "--max_steps", "12",
                    "--output_dir", tmp_path / "sft-out", env=env)
        sft_run = kill_after_first_checkpoint(sft, client, "sft")
        grpo = start("minirec.grpo", "--preset", "tiny", "--model", tiny_model, "--max_train_prompts", "8",
                     "--prompts_per_step", "2", "--per_device_batch_size", "32",
                     "--save_steps", "1", "--eval_steps", "0", "--eval_limit", "4", "--eval_beams", "10",
                     "--output_dir", tmp_path / "grpo-out", env=env)
        grpo_run = kill_after_first_checkpoint(grpo, client, "grpo")
        assert client.get_run(sft_run).info.status == client.get_run(grpo_run).info.status == "RUNNING"
    shutil.copytree(first_root, second_root)
    for gone in (first_root, tmp_path / "sft-out", tmp_path / "grpo-out"):
        shutil.rmtree(gone)

    with mlflow_server(second_root) as server:
        env["MLFLOW_TRACKING_URI"] = server.uri
        client = mlflow.MlflowClient(server.uri)
        for module, run_id in (("minirec.sft", sft_run), ("minirec.grpo", grpo_run)):
            done = subprocess.run([sys.executable, "-m", module, "--resume_from", run_id, "--output_dir",
                                   str(tmp_path / f"{module}-resumed")], cwd=PROJECT_ROOT, env=env,
                                  capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, done.stderr[-3000:]
            assert client.get_run(run_id).info.status == "KILLED"  # the dead run says so now
            resumed = client.search_runs([client.get_experiment_by_name(f"minirec-{INDUSTRIAL}").experiment_id],
                                         f"tags.resumed_from = '{run_id}'")
            assert len(resumed) == 1 and resumed[0].info.status == "FINISHED"
            assert resumed[0].data.tags["mlflow.parentRunId"] == run_id
            saved = sorted(int(key.split(".")[1]) for key in client.get_run(run_id).data.params
                           if key.startswith("checkpoint."))
            steps = [m.step for m in client.get_metric_history(resumed[0].info.run_id,
                                                                "train_loss" if "sft" in module else "loss")]
            assert steps[0] == saved[-1] + 1 and steps[-1] == (12 if "sft" in module else 4)
