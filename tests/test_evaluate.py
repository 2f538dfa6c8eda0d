"""The evaluate stage: output formats, resuming after an interruption, and the CLI's MLflow run."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from conftest import run_stage

from minirec.beams import read_predictions
from minirec.evaluate import DecodeSettings, ShardMismatchError, evaluate_model
from minirec.score import score_predictions

CATEGORY = "Industrial_and_Scientific"


def _evaluate(loaded, files, catalogue, out, on_shard=None, **options):
    model, tokenizer = loaded
    decode = DecodeSettings(**(dict(num_beams=10, batch_size=2, limit=12) | options))
    evaluation = evaluate_model(model, tokenizer, files, catalogue, decode, split="test", out_dir=out,
                                on_shard=on_shard, progress=False)
    return evaluation.beams, evaluation.scores


def test_parquet_and_upstream_json_hold_the_same_predictions_and_score_alike(
    tiny_loaded, industrial_files, industrial_catalogue, tmp_path,
):
    beams, scores = _evaluate(tiny_loaded, industrial_files, industrial_catalogue, tmp_path)
    test_rows = pd.read_csv(industrial_files.test, dtype=str, keep_default_na=False).head(12)
    assert beams["row"].tolist() == list(range(12))
    assert beams["user_id"].tolist() == test_rows["user_id"].tolist()
    assert beams["target"].tolist() == test_rows["item_sid"].tolist()
    assert all(len(set(p)) == 10 and set(p) <= industrial_catalogue.valid_sids for p in beams["predict"])
    assert scores.invalid_all == 0 and scores.n == 12

    parquet = read_predictions(tmp_path / "beams.parquet")
    upstream = read_predictions(tmp_path / "predictions.json")
    assert [list(p) for p in parquet["predict"]] == [list(p) for p in upstream["predict"]]
    assert parquet["target"].tolist() == upstream["target"].str.rstrip("\n").tolist()
    assert upstream["prompt"].tolist() == parquet["prompt"].tolist()
    from_json = score_predictions(upstream, industrial_catalogue)
    from_parquet = score_predictions(parquet, industrial_catalogue)
    assert from_json.metrics == from_parquet.metrics == scores.metrics
    assert (from_json.invalid, from_json.invalid_all) == (from_parquet.invalid, from_parquet.invalid_all)


@pytest.mark.parametrize("decoder", ["hf", "exact"])
def test_every_decoder_gives_the_sid_decoders_ranking_where_it_should(
    decoder, tiny_loaded, industrial_files, industrial_catalogue, tmp_path,
):
    """hf (generate) ranks as the default sid decoder; exact ranks every SID, so each of its k-th scores is at
    least the beam search's k-th score. The tiny model here is untrained: its near-uniform scores tie, and tied
    SIDs may swap places, so the comparison is on the ranked scores (tests/test_sid_decoder.py compares SIDs on a
    trained model)."""
    sid, _ = _evaluate(tiny_loaded, industrial_files, industrial_catalogue, tmp_path / "sid", limit=6)
    other, _ = _evaluate(tiny_loaded, industrial_files, industrial_catalogue, tmp_path / decoder, limit=6,
                         decoder=decoder)
    if decoder == "hf":
        assert [list(s) for s in other["scores"]] == [pytest.approx(list(s), abs=1e-4) for s in sid["scores"]]
    else:
        for exact, beam in zip(other["scores"], sid["scores"]):
            assert all(e >= b - 1e-5 for e, b in zip(exact, beam))


class Interrupted(Exception):
    pass


def test_an_interrupted_evaluation_resumes_to_the_same_result(
    tiny_loaded, industrial_files, industrial_catalogue, tmp_path,
):
    # batch 2 x 4 batches per shard = 8 rows per shard: 20 rows make 3 shards.
    reference, _ = _evaluate(tiny_loaded, industrial_files, industrial_catalogue, tmp_path / "whole", limit=20)

    def stop_after_two(index):
        if index == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        _evaluate(
            tiny_loaded, industrial_files, industrial_catalogue, tmp_path / "resumed", limit=20,
            on_shard=stop_after_two,
        )
    assert sorted(p.name for p in (tmp_path / "resumed" / "shards").glob("*.parquet")) == ["00000.parquet", "00001.parquet"]
    assert not (tmp_path / "resumed" / "beams.parquet").exists()

    decoded = []
    resumed, _ = _evaluate(
        tiny_loaded, industrial_files, industrial_catalogue, tmp_path / "resumed", limit=20,
        on_shard=decoded.append,
    )
    assert decoded == [2]  # only the missing shard is decoded again
    pd.testing.assert_frame_equal(resumed, reference)
    assert (tmp_path / "resumed" / "beams.parquet").read_bytes() == (tmp_path / "whole" / "beams.parquet").read_bytes()

    with pytest.raises(ShardMismatchError, match="num_beams"):
        _evaluate(tiny_loaded, industrial_files, industrial_catalogue, tmp_path / "resumed", limit=20, num_beams=5)


def test_cli_logs_beams_metrics_levels_and_the_model_stage(tiny_industrial, tiny_loaded, mlflow_uri, tmp_path,
                                                           industrial_files, capsys, monkeypatch):
    import mlflow

    from minirec.evaluate.recipe import EvaluateRecipe
    from minirec.models import log_hf_model
    from minirec.tracking import stage_run

    with stage_run(category=CATEGORY, stage="sft", source="test", files=industrial_files) as sft_run:
        log_hf_model(*tiny_loaded)
    run_stage(EvaluateRecipe, "--model", sft_run.info.run_id, "--category", CATEGORY, "--limit", "4",
              "--num_beams", "10", "--batch-size", "4", "--recall_rows", "2", "--out", tmp_path / "out")

    runs = mlflow.search_runs(experiment_names=[f"minirec-{CATEGORY}"], filter_string="tags.entry_point = 'evaluate'",
                              output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["stage"] == "sft" and run.data.tags["scored"] == "true"
    assert run.data.tags["source"] == sft_run.info.run_id
    assert run.data.metrics["invalid_all"] == 0 and run.data.metrics["n"] == 4 and run.data.metrics["num_beams"] == 10
    assert {"HR_at_10", "NDCG_at_10", "HR_at_10_ci_low"} <= run.data.metrics.keys()
    assert run.data.params["sid_tokens_added"] == "0" and run.data.params["decode.decoder"] == "sid"
    assert 0 < run.data.metrics["beam_recall_at_10"] <= 1 and run.data.metrics["beam_recall_rows"] == 2
    assert run.data.params["generation.do_sample"] == "False"
    # provenance: the train file of the run that trained the model, relative to the data directory
    assert run.data.params["train_file.path"] == industrial_files.relative(industrial_files.train)
    assert run.data.params["train_file.rows"] == "12243"
    assert [i.dataset.name for i in run.inputs.dataset_inputs] == [f"{CATEGORY}/test"]
    assert run.data.params["generation.length_penalty"] == "0.0"
    artifacts = {a.path for folder in ("", "beams", "scores")
                 for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, folder or None)}
    assert {"beams/beams.parquet", "beams/predictions.json", "scores/metrics.json", "scores/levels.json",
            "generation_config.json", "data_files.json"} <= artifacts

    # Alone it prints the metric table; as a step of main (which names its pipeline run) one line, so that main's
    # log stays short (the report has every number).
    alone = capsys.readouterr().out
    assert "n=4 beams=10 invalid=0 invalid_all=0" in alone and re.search(r"^ +HR@10 ", alone, re.M), alone
    from minirec.tracking import PIPELINE_ENV

    monkeypatch.setenv(PIPELINE_ENV, sft_run.info.run_id)
    run_stage(EvaluateRecipe, "--model", sft_run.info.run_id, "--category", CATEGORY, "--limit", "4",
              "--num_beams", "10", "--batch-size", "4", "--recall_rows", "2", "--out", tmp_path / "out2")
    in_main = capsys.readouterr().out
    assert "n=4 beams=10" not in in_main and not re.search(r"^ +HR@10 ", in_main, re.M), in_main
    assert re.search(rf"^\[evaluate\] {CATEGORY} sft: HR@10 [\d.]+ \[[\d.]+, [\d.]+\], NDCG@10 [\d.]+ \[[\d.]+, "
                     r"[\d.]+\] over 4 rows x 10 beams, invalid_all 0; beam recall over the first 2 rows: ", in_main, re.M), in_main


@pytest.mark.slow
def test_two_processes_give_the_single_process_result(tiny_industrial, mlflow_uri, tmp_path):
    import os
    import subprocess
    import sys

    import mlflow

    # One BLAS thread everywhere: the untrained model's near-tied beams reorder under other summation orders.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    evaluate = [sys.executable, "-m", "minirec.evaluate", "--model", str(tiny_industrial), "--category", CATEGORY,
                "--limit", "20", "--num_beams", "10", "--batch_size", "2", "--device", "cpu", "--output_dir"]
    subprocess.run([*evaluate, str(tmp_path / "one")], check=True, timeout=600, env=env)
    subprocess.run([*evaluate, str(tmp_path / "two"), "--num_gpus", "2"], check=True, timeout=600, env=env)
    one, two = (pd.read_parquet(tmp_path / name / "beams.parquet") for name in ("one", "two"))
    assert len(two) == 20
    pd.testing.assert_frame_equal(one, two)
    runs = mlflow.search_runs(experiment_names=[f"minirec-{CATEGORY}"], output_format="list")
    assert sorted(run.data.params["processes"] for run in runs) == ["1", "2"]  # the launch really split the work
    assert all(run.info.status == "FINISHED" for run in runs)
