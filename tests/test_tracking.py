"""Tracking conventions against a real sqlite store: experiments, tags, params beside `mlflow run`'s."""

from __future__ import annotations

import os

import mlflow

from minirec.tracking import adopt_outer_run_as_parent, experiment_name, log_params, metric_name, stage_run


def test_runs_land_in_the_category_experiment_with_the_standard_tags(mlflow_uri, tmp_path):
    with stage_run(category="Office_Products", stage="sft", source="tiny") as run:
        pass
    stored = mlflow.get_run(run.info.run_id)
    assert mlflow.get_experiment(stored.info.experiment_id).name == experiment_name("Office_Products")
    assert {k: stored.data.tags[k] for k in ("category", "stage", "source", "entry_point")} == {
        "category": "Office_Products", "stage": "sft", "source": "tiny", "entry_point": "sft"}
    assert stored.info.status == "FINISHED"
    # Artifacts stay beside the sqlite store, not in the working directory.
    assert stored.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())
    assert "environment/pip_freeze.txt" in [a.path for a in mlflow.MlflowClient().list_artifacts(
        run.info.run_id, "environment")]


def test_params_never_clash_with_those_mlflow_run_logged(mlflow_uri):
    with stage_run(category="Office_Products", stage="evaluate", source="m") as run:
        mlflow.log_params({"strict": "true", "dtype": "auto", "limit": "50"})  # what `mlflow run -P` logs
        log_params({"strict": True, "dtype": "torch.float32", "limit": 50, "num_beams": 50})
    params = mlflow.get_run(run.info.run_id).data.params
    assert params["strict"] == "true" and params["resolved.strict"] == "True"
    assert params["dtype"] == "auto" and params["resolved.dtype"] == "torch.float32"
    assert params["limit"] == "50" and "resolved.limit" not in params
    assert params["num_beams"] == "50"


def test_a_command_making_several_runs_turns_the_outer_run_into_their_parent(mlflow_uri, monkeypatch):
    outer = mlflow.MlflowClient().create_run(mlflow.set_experiment("outer").experiment_id).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", outer)
    monkeypatch.setenv("MINIREC_PARENT_RUN_ID", "")  # recorded, so the parent id set below is undone after
    assert adopt_outer_run_as_parent() == outer
    assert "MLFLOW_RUN_ID" not in os.environ
    with stage_run(category="Office_Products", stage="popularity", source="x", entry_point="baselines") as child:
        pass
    assert mlflow.get_run(child.info.run_id).data.tags["mlflow.parentRunId"] == outer
    assert child.info.run_id != outer


def test_metric_names_drop_the_at_sign():
    assert metric_name("HR@10") == "HR_at_10" and metric_name("NDCG@3") == "NDCG_at_3"


def test_a_run_mlflow_run_opened_elsewhere_points_to_the_stage_run(mlflow_uri, monkeypatch):
    """`mlflow run` without --experiment-name opens its run in "Default": the stage's run still lands in its
    category's experiment, and the outer run says where."""
    outer = mlflow.MlflowClient().create_run("0").info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", outer)
    with stage_run(category="Office_Products", stage="sft", source="tiny") as run:
        pass
    assert run.info.run_id != outer
    stored = mlflow.get_run(run.info.run_id)
    assert mlflow.get_experiment(stored.info.experiment_id).name == "minirec-Office_Products"
    pointer = mlflow.get_run(outer).data.tags
    assert pointer["minirec.stage_run"] == run.info.run_id and "minirec-Office_Products" in pointer["mlflow.note.content"]


def test_a_run_mlflow_run_opened_in_the_right_experiment_is_joined(mlflow_uri, monkeypatch):
    from minirec.tracking import ensure_experiment

    experiment = ensure_experiment("minirec-Office_Products")
    outer = mlflow.MlflowClient().create_run(experiment).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", outer)
    with stage_run(category="Office_Products", stage="sft", source="tiny") as run:
        pass
    assert run.info.run_id == outer and mlflow.get_run(outer).data.tags["stage"] == "sft"


def test_an_interrupted_run_ends_killed(mlflow_uri):
    import pytest

    with pytest.raises(KeyboardInterrupt):
        with stage_run(category="Office_Products", stage="sft", source="tiny") as run:
            raise KeyboardInterrupt
    assert mlflow.get_run(run.info.run_id).info.status == "KILLED"
