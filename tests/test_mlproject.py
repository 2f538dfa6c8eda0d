"""The MLproject as users call it: ``mlflow run . -e <stage>`` with no experiment flag, and an environment built
from conda.yaml by ``--env-manager uv``. Slow: real ``mlflow run`` processes on a fresh sqlite store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from conftest import INDUSTRIAL, OFFICE

from minirec.data.layout import PROJECT_ROOT

VENV_BIN = Path(sys.executable).parent


def mlflow_run(entry: str, *params: str, env: dict, env_manager: str = "local", timeout: int = 1500):
    command = [str(VENV_BIN / "mlflow"), "run", ".", "-e", entry, "--env-manager", env_manager]
    for param in params:
        command += ["-P", param]
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def user_env(tmp_path: Path) -> dict:
    """A user's shell: the project's .venv first on PATH, a fresh store, no run or experiment inherited."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT", "MINIREC_PARENT", "MINIREC_STAGE"))}
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env['PATH']}", MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
               OMP_NUM_THREADS="1")
    return env


@pytest.mark.slow
def test_sft_then_grpo_by_mlflow_run_without_experiment_flags(tmp_path):
    """The README's own sequence: the GRPO entry point finds the SFT run, and both are in the category's
    experiment although `mlflow run` opened its runs in "Default"."""
    env = user_env(tmp_path)
    mlflow_run("sft", "preset=tiny", f"category={INDUSTRIAL}", "max_steps=4", "final_eval_limit=8",
               "evaluate_untrained=false", env=env)
    # undeclared -P values reach the stage as --name value (MLflow appends them)
    mlflow_run("grpo", "preset=tiny", f"category={INDUSTRIAL}", "max_train_prompts=4", "prompts_per_step=2",
               "per_device_batch_size=32", "eval_limit=8", env=env)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(f"minirec-{INDUSTRIAL}")
    runs = {run.data.tags["stage"]: run for run in client.search_runs([experiment.experiment_id])}
    assert {"sft", "grpo"} <= set(runs)
    assert all(run.info.status == "FINISHED" for run in runs.values())
    assert runs["grpo"].data.params["model"] == runs["sft"].info.run_id  # found without being told
    outer = client.search_runs(["0"])  # what `mlflow run` opened in Default points to the stage runs
    assert sorted(run.data.tags["minirec.stage_run"] for run in outer) == sorted(
        runs[stage].info.run_id for stage in ("sft", "grpo"))
    assert all(run.info.status == "FINISHED" for run in outer)


@pytest.mark.slow
def test_uv_builds_the_environment_from_conda_yaml_and_runs_the_data_entry_point(tmp_path):
    """`--env-manager uv` turns conda.yaml into a virtualenv (no conda needed) and runs the stage in it."""
    if shutil.which("uv", path=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "uv"], check=True, timeout=600)
    env = user_env(tmp_path)
    # uv does not read pip's configuration: point it at the machine's wheel folder when pip has one, so torch's
    # CPU wheel is used instead of a CUDA build from the index (a user's machine downloads what it needs).
    if os.environ.get("PIP_FIND_LINKS"):
        env.setdefault("UV_FIND_LINKS", os.environ["PIP_FIND_LINKS"])
    env["MLFLOW_ENV_ROOT"] = str(tmp_path / "envs")
    done = mlflow_run("data", f"category={OFFICE}", env=env, env_manager="uv", timeout=3000)
    assert f"{OFFICE}: valid" in done.stdout + done.stderr
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name(f"minirec-{OFFICE}").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "data"
    device = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/environment/device.json")
    assert device["executable"].startswith(str(tmp_path / "envs")), device  # the stage ran in uv's environment
