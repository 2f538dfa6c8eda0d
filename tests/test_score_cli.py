"""The score CLI end to end on the real test split, a real sqlite MLflow store, both file formats, bad input."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from conftest import run_stage, stage_exit
from minirec.score.recipe import ScoreRecipe
from minirec.beams import read_predictions, write_beams, write_upstream_json
from minirec.data import Catalogue, read_split
from minirec.score import log_scores, score_predictions
from minirec.tracking import stage_run

CATEGORY = "Industrial_and_Scientific"
# Row i puts its target at rank PLAN[i % 7] (None: nowhere in the 50 beams).
PLAN = (0, 2, 4, 9, 19, 49, None)
INVALID = "<a_255><b_0><c_0>"  # level-1 code 255 is unused in Industrial (48 codes), so not in the info file


@pytest.fixture(scope="module")
def designed(industrial_files):
    """Real test rows with predictions built so every metric can be derived from the plan alone."""
    catalogue = Catalogue.load(industrial_files)
    assert INVALID not in catalogue.valid_sids
    test = read_split(industrial_files.test, parse_histories=False)
    rng = np.random.default_rng(3)
    sids = np.array(sorted(catalogue.valid_sids))
    records, ranks = [], []
    for i, target in enumerate(test["item_sid"]):
        rank = PLAN[i % 7]
        others = [str(s) for s in rng.choice(sids, 60) if s != target][:50]
        if rank is not None:
            others[rank] = target
        if rank == 9:
            others[1] = INVALID  # before the hit: counted by calc.py's CC
        if rank is None:
            others[49] = INVALID  # no hit, so every beam was scanned: counted
        if rank == 0:
            others[5] = INVALID  # after the hit: only in invalid_all
        records.append({"input": f"history of {test['user_id'][i]}", "output": target + "\n", "predict": others})
        ranks.append(math.inf if rank is None else rank)
    return catalogue, test, records, np.array(ranks)


def expected_metrics(ranks: np.ndarray, targets: list[str], index_path: Path) -> dict:
    items_per_sid = Counter("".join(tokens) for tokens in json.loads(index_path.read_text()).values())
    sizes = np.array([items_per_sid[t] for t in targets])
    expected = {}
    for k in (1, 3, 5, 10, 20, 50):
        hit = ranks < k
        expected[f"HR_at_{k}"] = hit.mean()
        expected[f"NDCG_at_{k}"] = np.where(hit, 1 / np.log2(np.where(hit, ranks, 0) + 2), 0).mean()
        expected[f"HR_coll_at_{k}"] = (hit / sizes).mean()
    return expected


def the_run(uri: str):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(f"minirec-{CATEGORY}")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return client, runs


def test_cli_on_upstream_json_logs_a_scored_run(tmp_path, mlflow_uri, designed, industrial_files):
    catalogue, test, records, ranks = designed
    predictions = tmp_path / "results.json"
    predictions.write_text(json.dumps(records))
    out = tmp_path / "out"
    # Empty --data-dir is what MLproject passes when the parameter is left unset.
    run_id = run_stage(ScoreRecipe, "--predictions", predictions, "--category", CATEGORY, "--stage", "sft",
                       "--data-dir", "", "--out", out)

    client, runs = the_run(mlflow_uri)
    assert [r.info.run_id for r in runs] == [run_id]
    run = runs[0]
    tags, metrics = run.data.tags, run.data.metrics
    assert {k: tags[k] for k in ("category", "stage", "source", "entry_point", "scored")} == {
        "category": CATEGORY, "stage": "sft", "source": str(predictions.resolve()), "entry_point": "score",
        "scored": "true",
    }
    for name, value in expected_metrics(ranks, test["item_sid"].tolist(), industrial_files.index).items():
        assert metrics[name] == pytest.approx(value, abs=1e-12), name
        if not name.startswith("HR_coll"):
            assert metrics[f"{name}_ci_low"] <= metrics[name] <= metrics[f"{name}_ci_high"], name
    period = np.arange(len(records)) % 7
    assert metrics["invalid"] == np.sum((period == 3) | (period == 6))
    assert metrics["invalid_all"] == np.sum((period == 0) | (period == 3) | (period == 6))
    assert metrics["n"] == 4533 and metrics["num_beams"] == 50
    assert metrics["level_cumulative_L3_at_10"] == metrics["HR_at_10"]
    assert {"level_independent_L1_at_10", "level_dropoff_L2_at_50"} <= set(metrics)
    assert run.data.params["predictions_sha256"] and run.data.params["data.info.sha256"]

    assert {a.path for a in client.list_artifacts(run_id, "scores")} == {"scores/metrics.json", "scores/levels.json"}
    assert [a.path for a in client.list_artifacts(run_id, "predictions")] == ["predictions/results.json"]
    logged = json.loads(Path(client.download_artifacts(run_id, "scores/metrics.json", str(tmp_path))).read_text())
    assert logged == json.loads((out / "scores" / "metrics.json").read_text())
    assert logged["bootstrap_unit"] == "row" and logged["bootstrap_draws"] == 1000 and logged["ci_level"] == 0.95
    assert set(logged["ci"]) >= {"HR@10", "NDCG@10"} and logged["ks"] == [1, 3, 5, 10, 20, 50]
    levels = json.loads((out / "scores" / "levels.json").read_text())
    assert set(levels) == {"independent", "cumulative", "dropoff"} and levels["cumulative"]["10"][2] == logged["HR@10"]


def test_cli_on_harness_parquet_bootstraps_users(tmp_path, mlflow_uri, designed, data_dir):
    catalogue, test, records, _ = designed
    frame = pd.DataFrame({
        "row": np.arange(len(records), dtype=np.int64),
        "user_id": test["user_id"],
        "target": [r["output"].rstrip("\n") for r in records],
        "predict": [r["predict"] for r in records],
        "scores": None,
    })
    beams = write_beams(tmp_path / "beams.parquet", frame)
    run_stage(ScoreRecipe, "--predictions", beams, "--category", CATEGORY, "--data_dir", data_dir,
              "--out", tmp_path / "out", "--n_boot", "200")
    client, runs = the_run(mlflow_uri)
    assert runs[0].data.tags["stage"] == "score"
    content = json.loads((tmp_path / "out" / "scores" / "metrics.json").read_text())
    assert content["bootstrap_unit"] == "user" and content["bootstrap_draws"] == 200
    from_json = score_predictions(read_predictions(write_upstream_json(tmp_path / "r.json", frame)), catalogue)
    assert {k: content[k] for k in from_json.metrics} == from_json.metrics


def test_formats_round_trip(tmp_path):
    frame = pd.DataFrame({
        "row": np.array([4, 9], dtype=np.int64),
        "user_id": ["A1", None],
        "target": ["<a_1><b_2><c_3>", "<a_4><b_5><c_6>"],
        "predict": [["<a_1><b_2><c_3>", "<a_9><b_9><c_9>"], ["x", "<a_4><b_5><c_6>"]],
        "scores": [[-0.5, -2.25], None],
        "prompt": ["p1", "p2"],
    })
    back = read_predictions(write_beams(tmp_path / "b.parquet", frame))
    assert back.to_dict("list") == frame.to_dict("list")
    upstream = read_predictions(write_upstream_json(tmp_path / "u.json", frame))
    assert upstream["target"].tolist() == ["<a_1><b_2><c_3>\n", "<a_4><b_5><c_6>\n"]  # as evaluate.py writes it
    assert upstream["predict"].tolist() == frame["predict"].tolist()
    assert upstream["prompt"].tolist() == ["p1", "p2"] and upstream["user_id"].isna().all()
    assert upstream["row"].tolist() == [0, 1]


def test_log_scores_needs_an_active_run_and_accepts_baseline_frames(tmp_path, mlflow_uri, industrial_files):
    catalogue = Catalogue.load(industrial_files)
    sid = sorted(catalogue.valid_sids)[0]
    frame = pd.DataFrame({"row": [0], "user_id": ["A1"], "target": [sid], "predict": [[sid] * 3], "scores": [None]})
    scores = score_predictions(frame, catalogue, n_boot=50)
    with pytest.raises(RuntimeError, match="active MLflow run"):
        log_scores(scores, tmp_path)
    assert not (tmp_path / "metrics.json").exists()
    with stage_run(category=CATEGORY, stage="popularity", source="train", entry_point="baselines"):
        content = log_scores(scores, tmp_path / "s")
    assert content["HR@1"] == 1.0 and content["ks"] == [1, 3]
    assert the_run(mlflow_uri)[1][0].data.tags["scored"] == "true"


def _parquet_without_target(path: Path) -> None:
    pq.write_table(pa.table({"row": [0], "user_id": ["A1"], "predict": [["<a_1><b_1><c_1>"]]}), path)


BAD_INPUTS = {
    "not_a_list.json": ('{"predict": [], "output": "x"}', r"expected a JSON list"),
    "not_json.json": ("[{oops", r"neither Parquet nor valid JSON"),
    "no_predict.json": ('[{"output": "<a_1><b_1><c_1>\\n"}]', r"row 0, field 'predict': missing"),
    "no_output.json": ('[{"predict": ["<a_1>"], "output": "<a_1>"}, {"predict": ["<a_1>"]}]', r"row 1, field 'output'"),
    "scalar_predict.json": ('[{"output": "<a_1>", "predict": ["<a_1>"]}, {"output": "<a_1>", "predict": "<a_1>"}]',
                            r"row 1, field 'predict': predict must be a list"),
    "number_in_predict.json": ('[{"output": "<a_1>", "predict": ["<a_1>", 7]}]',
                               r"row 0, field 'predict': predict\[1\] must be a string"),
    "uneven.json": ('[{"output": "a", "predict": ["a", "b"]}, {"output": "a", "predict": ["a"]}]',
                    r"row 1, field 'predict'.*same beam count"),
    "no_target.parquet": (_parquet_without_target, r"field 'target': missing column"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_exits_nonzero_naming_file_row_and_field(name, tmp_path, mlflow_uri, capsys):
    content, message = BAD_INPUTS[name]
    path = tmp_path / name
    content(path) if callable(content) else path.write_text(content)
    assert stage_exit(ScoreRecipe, "--predictions", path, "--category", CATEGORY, "--out", tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert str(path) in error
    assert re.search(message, error), error
    assert not (tmp_path / "out").exists()
    assert not Path(mlflow_uri.removeprefix("sqlite:///")).exists()  # failed before touching MLflow: no run
    assert mlflow.active_run() is None
