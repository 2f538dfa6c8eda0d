"""The ``main`` pipeline end to end on a reduced tiny preset: run structure, reuse of finished stages, report.

Slow (a few minutes on 2 cores): ``pytest -m slow tests/test_pipeline.py``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from minirec.data.layout import PROJECT_ROOT
from minirec.pipeline.steps import Step, stage_key

OFFICE = "Office_Products"
MODEL_STAGES = ("data", "popularity", "transition", "sft", "evaluate_sft", "grpo", "evaluate_grpo")


def test_stage_key_changes_with_inputs_code_and_data():
    step = Step("sft", "sft", ("--preset", "tiny"))
    base = stage_key(step, OFFICE, {"train": "a"}, "v1")
    assert base == stage_key(Step("sft", "sft", ("--preset", "tiny")), OFFICE, {"train": "a"}, "v1")
    assert base != stage_key(Step("sft", "sft", ("--preset", "paper")), OFFICE, {"train": "a"}, "v1")
    assert base != stage_key(step, OFFICE, {"train": "b"}, "v1")
    assert base != stage_key(step, OFFICE, {"train": "a"}, "v2")
    assert base != stage_key(step, "Industrial_and_Scientific", {"train": "a"}, "v1")


def reduced_presets(folder):
    """The tiny presets cut further, so the whole chain runs in a few minutes."""
    sft = yaml.safe_load((PROJECT_ROOT / "configs/sft/tiny.yaml").read_text())
    sft.update(sample=256, valid_sample=32, final_eval_limit=16, final_eval_beams=10, evaluate_untrained=False)
    grpo = yaml.safe_load((PROJECT_ROOT / "configs/grpo/tiny.yaml").read_text())
    grpo.update(max_train_prompts=8, prompts_per_step=2, per_device_batch_size=32, eval_limit=8, eval_beams=10,
                eval_steps=1.0, save_steps=1.0)
    paths = {"sft": folder / "sft.yaml", "grpo": folder / "grpo.yaml", "main": folder / "main.yaml"}
    paths["sft"].write_text(yaml.safe_dump(sft))
    paths["grpo"].write_text(yaml.safe_dump(grpo))
    paths["main"].write_text(yaml.safe_dump({
        "sft_preset": str(paths["sft"]), "grpo_preset": str(paths["grpo"]),
        "evaluate_num_beams": 10, "evaluate_batch_size": 8, "evaluate_limit": 24,
        "baselines": "popularity,transition",  # the learned ones have tests of their own
    }))
    return paths["main"]


def run_main(preset, out, env, *extra):
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "minirec.pipeline", "--category", OFFICE, "--preset", str(preset), "--out", str(out),
         *extra],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=1500,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed.stdout, completed.stderr, time.monotonic() - started


@pytest.mark.slow
def test_main_chains_every_stage_reuses_them_and_reports(tmp_path, mlflow_uri, monkeypatch):
    import os

    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri}
    preset = reduced_presets(tmp_path)
    first_out, first_err, first_seconds = run_main(preset, tmp_path / "report", env)

    # Structure: driver run -> one pipeline run for the category -> one child per stage.
    client = mlflow.MlflowClient()
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    pipelines = [r for r in runs if r.data.tags.get("stage") == "pipeline"]
    assert len(pipelines) == 1 and pipelines[0].info.status == "FINISHED"
    pipeline = pipelines[0]
    driver_id = pipeline.data.tags["mlflow.parentRunId"]
    assert client.get_run(driver_id).data.tags["stage"] == "main"
    # stage runs name their pipeline run in a tag (not MLflow's parent: the UI would fold them away)
    children = {r.info.run_id: r for r in runs if r.data.tags.get("minirec.pipeline_run") == pipeline.info.run_id}
    assert not any(r.data.tags.get("mlflow.parentRunId") == pipeline.info.run_id for r in runs)
    used = {stage: pipeline.data.tags[f"run.{stage}"] for stage in MODEL_STAGES}
    assert set(used.values()) <= set(children), "every stage run names the pipeline run"
    assert children[used["evaluate_sft"]].data.tags["stage"] == "sft"
    assert children[used["evaluate_grpo"]].data.tags["stage"] == "grpo"
    assert children[used["evaluate_grpo"]].data.tags["source"] == used["grpo"]
    assert children[used["evaluate_grpo"]].data.metrics["invalid_all"] == 0

    # The report: SFT and GRPO rows against the paper, and it is what main printed.
    comparison = (tmp_path / "report" / "comparison.csv").read_text()
    assert f"{OFFICE},sft,HR@10" in comparison and f"{OFFICE},grpo,HR@10" in comparison
    report = (tmp_path / "report" / "report.md").read_text()
    assert report.strip()[:200] in first_out
    # What main printed before the report fits on a screen or two: one line per stage and its result, progress
    # every 30 s, no Trainer dictionaries and no MLflow system-metrics notices.
    log = first_out.split(report.strip()[:200])[0] + first_err
    assert "{'loss'" not in log and "system_metrics_monitor" not in log, log
    assert len(log.splitlines()) <= 80, log
    assert (tmp_path / "report" / "ours_vs_paper.png").stat().st_size > 10_000

    # Second run: every stage reused, nothing retrained.
    second_out, _, second_seconds = run_main(preset, tmp_path / "report2", env)
    for stage in MODEL_STAGES:
        assert f"stage {stage}: reusing finished run {used[stage]}" in second_out
    assert second_seconds < first_seconds
    pipelines = [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
                 if r.data.tags.get("stage") == "pipeline"]
    assert len(pipelines) == 2
    newest = max(pipelines, key=lambda r: r.info.start_time)
    assert all(newest.data.tags[f"run.{stage}"] == used[stage] for stage in MODEL_STAGES)

    # --force recomputes from the named stage on, and reuses everything before it.
    third_out, _, _ = run_main(preset, tmp_path / "report3", env, "--force", "evaluate_grpo")
    for stage in MODEL_STAGES[:-1]:
        assert f"stage {stage}: reusing finished run {used[stage]}" in third_out
    assert "stage evaluate_grpo: reusing" not in third_out


@pytest.mark.slow
def test_main_on_both_categories_with_new_sids_keeps_each_categorys_outputs_apart(tmp_path, mlflow_uri):
    """Every hand-over is a run id: each category's sids run has its own folder and is the data_dir of every
    later stage of that category; SFT and GRPO checkpoints live in per-run folders."""
    import os

    from test_sids_embed import build_encoder

    encoder = build_encoder(tmp_path / "encoder", seed=0)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri}
    completed = subprocess.run(
        [sys.executable, "-m", "minirec.pipeline", "--category", "all", "--preset", str(reduced_presets(tmp_path)),
         "--sids", "rqkmeans", "--sids_embedding_model", str(encoder), "--out", str(tmp_path / "report")],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=3000)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    by = {(r.data.tags.get("category"), r.data.tags.get("entry_point")): r for r in runs
          if r.data.tags.get("stage") not in ("pipeline", "main", "compare")}
    folders = set()
    for category in ("Industrial_and_Scientific", OFFICE):
        sids = by[(category, "sids")]
        out = sids.data.params["output_dir"]
        assert out.endswith(f"outputs/sids/{category}/{sids.info.run_id}")
        assert (PROJECT_ROOT / out / "sid_report.md").is_file() if not out.startswith("/") else Path(out, "sid_report.md").is_file()
        for stage in ("sft", "evaluate", "grpo"):
            run = by[(category, stage)]
            assert run.data.params["data_dir"] == sids.info.run_id, (category, stage)
            folders.add(run.data.params["output_dir"])
        assert f"{category},sft,HR@10" in (tmp_path / "report" / "comparison.csv").read_text()
    assert len(folders) == 6  # sft, grpo and one evaluate of each category: no folder shared
