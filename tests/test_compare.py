"""The compare stage against a real sqlite store holding runs scored by the real scorer.

Every scored run ranks the real test split of its category with the target planted at chosen ranks (the rest
of each list is valid, distinct, wrong SIDs), so HR@K and NDCG@K are known in advance from the plan alone:
HR@K = share of rows planted at a rank < K, NDCG@K = mean of 1/log2(rank + 2) over those rows.

Scoring six runs with 1,000 bootstrap draws costs seconds, so one store (module scope) serves the tests that
only read it; the error cases use the per-test ``mlflow_uri`` store.
"""

from __future__ import annotations

import contextlib
import csv
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import INDUSTRIAL, OFFICE
from matplotlib.image import imread

from conftest import run_stage
from minirec.compare.recipe import CompareRecipe
from minirec.score.recipe import ScoreRecipe
from minirec.beams import write_beams
from minirec.compare import (
    COMPARISON_COLUMNS,
    PAPER_TABLES,
    comparison_frame,
    find_scored_runs,
    load_paper_table,
    paper_rank,
    with_rank_and_ci,
)
from minirec.data import locate
from minirec.data.catalogue import Catalogue, read_split
from minirec.score import log_scores, score_predictions
from minirec.errors import UserError
from minirec.tracking import git_commit, log_params, stage_run, train_file_params

TABLE1_METRICS = ("HR@3", "HR@5", "HR@10", "NDCG@3", "NDCG@5", "NDCG@10")

# Per 100 test rows: {rank the target is planted at: number of rows}; the other rows get no hit.
PLANS = {
    (INDUSTRIAL, "sft"): {0: 6, 2: 3, 7: 3, 30: 6},  # HR@10 ~ 0.12: between HSTU (.1163) and TIGER (.1321)
    (INDUSTRIAL, "grpo"): {0: 10, 1: 3, 4: 3},  # HR@10 ~ 0.16: around the paper's .1586
    (OFFICE, "sft"): {0: 2, 5: 2},  # HR@10 ~ 0.04: below every method of the paper
    (OFFICE, "grpo"): {0: 8, 3: 4},  # HR@10 ~ 0.12: between SASRec (.1120) and LCRec (.1237)
}
OLDER_PLAN = {0: 1}  # an earlier Industrial sft run
FAILED_PLAN = {0: 50}  # a later Industrial sft run that crashed


def planted_ranks(n: int, plan: dict[int, int]) -> np.ndarray:
    """Rank of the target for each row (-1: absent), assigned by ``row % 100``."""
    ranks = np.full(n, -1)
    residue = np.arange(n) % 100
    start = 0
    for rank, count in plan.items():
        ranks[(residue >= start) & (residue < start + count)] = rank
        start += count
    return ranks


def expected_metrics(ranks: np.ndarray) -> dict[str, float]:
    hit = ranks >= 0
    gain = np.where(hit, 1 / np.log2(np.where(hit, ranks, 0) + 2), 0.0)
    values = {}
    for k in (1, 3, 5, 10, 20, 50):
        values[f"HR@{k}"] = float(np.mean(hit & (ranks < k)))
        values[f"NDCG@{k}"] = float(np.mean(np.where(hit & (ranks < k), gain, 0.0)))
    return values


def planted_predictions(category: str, plan: dict[int, int]) -> tuple[pd.DataFrame, np.ndarray]:
    files = locate(category)
    test = read_split(files.test, parse_histories=False)
    decoys = sorted(Catalogue.load(files).valid_sids)[:51]
    ranks = planted_ranks(len(test), plan)
    predict = []
    for target, rank in zip(test["item_sid"], ranks):
        others = [sid for sid in decoys if sid != target]
        if rank >= 0:
            predict.append(others[:rank] + [target] + others[rank:49])
        else:
            predict.append(others[:50])
    frame = pd.DataFrame({"row": np.arange(len(test)), "user_id": test["user_id"], "target": test["item_sid"],
                          "predict": predict, "scores": None})
    return frame, ranks


class SimulatedCrash(Exception):
    """Raised inside a run so that MLflow ends it FAILED."""


def score_with_cli(category: str, stage: str, plan: dict[int, int], out_dir: Path) -> str:
    """A run made the way users make them: harness Parquet -> ``python -m minirec.score``."""
    frame, _ = planted_predictions(category, plan)
    beams = write_beams(out_dir / f"{category}-{stage}.parquet", frame)
    run_id = run_stage(ScoreRecipe, "--predictions", beams, "--category", category, "--stage", stage)
    time.sleep(0.01)
    return run_id


def log_scored_run(category: str, stage: str, plan: dict[int, int], out_dir: Path, fail: bool = False) -> str:
    """A run as an evaluation would log it: the train file it used, then the scorer's files and metrics."""
    files = locate(category)
    frame, _ = planted_predictions(category, plan)
    scores = score_predictions(frame, Catalogue.load(files))
    with pytest.raises(SimulatedCrash) if fail else contextlib.nullcontext():
        with stage_run(category=category, stage=stage, source="planted ranks", entry_point="score") as run:
            log_params(train_file_params(files))
            log_scores(scores, out_dir / run.info.run_id)
            if fail:
                raise SimulatedCrash
    time.sleep(0.01)  # distinct start times, so "latest" is unambiguous
    return run.info.run_id


@dataclass
class Store:
    uri: str
    current: dict[tuple[str, str], str]
    older: str
    failed: str


@pytest.fixture(scope="module")
def scored_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        mlflow.set_tracking_uri(uri)
        older = log_scored_run(INDUSTRIAL, "sft", OLDER_PLAN, root)
        current = {key: log_scored_run(*key, plan, root) for key, plan in PLANS.items() if key != (OFFICE, "sft")}
        current[(OFFICE, "sft")] = score_with_cli(OFFICE, "sft", PLANS[(OFFICE, "sft")], root)
        failed = log_scored_run(INDUSTRIAL, "sft", FAILED_PLAN, root, fail=True)
        yield Store(uri, current, older, failed)


@pytest.fixture
def store(scored_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", scored_store.uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(scored_store.uri)
    return scored_store


@pytest.fixture(scope="module")
def default_report(scored_store, tmp_path_factory):
    """One ``python -m minirec.compare --paper table1`` over the module store."""
    out = tmp_path_factory.mktemp("report") / "latest"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", scored_store.uri)
        run_id = run_stage(CompareRecipe, "--paper", "table1", "--out", out)
    return out, run_id


def read_paper_csv() -> dict[tuple[str, str, str], float]:
    """Table 1 read with the csv module, independently of the code under test."""
    with PAPER_TABLES["table1"].open(newline="") as handle:
        return {(r["category"], r["method"], r["metric"]): float(r["value"]) for r in csv.DictReader(handle)}


def test_paper_table_holds_table1():
    paper = read_paper_csv()
    assert len(paper) == 2 * 10 * 6
    # Spot checks: one number per category, and one baseline.
    assert paper[(INDUSTRIAL, "MiniOneRec", "HR@10")] == 0.1586
    assert paper[(OFFICE, "MiniOneRec", "NDCG@10")] == 0.1242
    assert paper[(INDUSTRIAL, "TIGER", "HR@3")] == 0.0852
    assert set(load_paper_table("table1")["method"]) == {method for _, method, _ in paper}


def test_latest_finished_scored_run_per_category_and_stage(store):
    runs = find_scored_runs()
    assert {(run.category, run.stage): run.run_id for run in runs} == store.current
    ids = {run.run_id for run in runs}
    assert store.older not in ids and store.failed not in ids
    assert mlflow.get_run(store.failed).info.status == "FAILED"
    industrial_sft = next(run for run in runs if (run.category, run.stage) == (INDUSTRIAL, "sft"))
    assert industrial_sft.provenance.train_is_partial is True
    assert industrial_sft.provenance.train_rows == len(pd.read_csv(locate(INDUSTRIAL).train, usecols=[0]))


def test_category_filter_keeps_one_category(store):
    runs = find_scored_runs(category=OFFICE)
    assert {run.run_id for run in runs} == {store.current[(OFFICE, "sft")], store.current[(OFFICE, "grpo")]}


def test_comparison_csv_columns_and_arithmetic(default_report):
    out, _ = default_report
    frame = pd.read_csv(out / "comparison.csv")
    assert tuple(frame.columns) == COMPARISON_COLUMNS
    assert len(frame) == len(PLANS) * len(TABLE1_METRICS)
    paper = read_paper_csv()
    for (category, stage), plan in PLANS.items():
        _, ranks = planted_predictions(category, plan)
        expected = expected_metrics(ranks)
        rows = frame[(frame["category"] == category) & (frame["stage"] == stage)].set_index("metric")
        assert set(rows.index) == set(TABLE1_METRICS)
        for metric, row in rows.iterrows():
            reference = paper[(category, "MiniOneRec", metric)]
            assert row["paper"] == pytest.approx(reference, abs=1e-12)
            assert row["ours"] == pytest.approx(expected[metric], abs=1e-12)
            assert row["gap"] == pytest.approx(expected[metric] - reference, abs=1e-12)
            assert row["relative_pct"] == pytest.approx(100 * (expected[metric] - reference) / reference, rel=1e-9)
            assert row["ci_low"] <= row["ours"] <= row["ci_high"]


def test_explicit_run_ids_override_the_latest(store, tmp_path):
    out = tmp_path / "explicit"
    run_stage(CompareRecipe, "--run_ids", f"{store.older}, {store.current[(OFFICE, 'grpo')]}", "--out", out)
    frame = pd.read_csv(out / "comparison.csv")
    assert set(zip(frame["category"], frame["stage"])) == {(INDUSTRIAL, "sft"), (OFFICE, "grpo")}
    _, older_ranks = planted_predictions(INDUSTRIAL, OLDER_PLAN)
    hr10 = frame[(frame["category"] == INDUSTRIAL) & (frame["metric"] == "HR@10")]["ours"].item()
    assert hr10 == pytest.approx(expected_metrics(older_ranks)["HR@10"], abs=1e-12)
    assert store.older in (out / "report.md").read_text()


def test_rank_among_the_papers_methods():
    paper = load_paper_table("table1")
    # Industrial HR@10 in Table 1, best first: MiniOneRec .1586, S-DPO .1524, D3 .1500, BIGRec .1370,
    # LCRec .1332, TIGER .1321, HSTU .1163, SASRec .1088, GRU4Rec .0999, Caser .0942.
    assert paper_rank(paper, INDUSTRIAL, "HR@10", 0.1218) == (7, 11)
    assert paper_rank(paper, INDUSTRIAL, "HR@10", 0.2) == (1, 11)
    assert paper_rank(paper, INDUSTRIAL, "HR@10", 0.05) == (11, 11)
    # Office HR@10: D3 and MiniOneRec tie at .1634; a tie shares the better place.
    assert paper_rank(paper, OFFICE, "HR@10", 0.1634) == (1, 11)
    assert paper_rank(paper, OFFICE, "HR@10", 0.15) == (4, 11)


def test_report_places_each_stage_among_the_papers_methods(default_report):
    report = (default_report[0] / "report.md").read_text()
    assert "7th of 11" in [cell.strip() for cell in _row_for(report, INDUSTRIAL, "sft", "HR@10")]
    assert "1st of 11" in [cell.strip() for cell in _row_for(report, INDUSTRIAL, "grpo", "HR@10")]
    assert "11th of 11" in [cell.strip() for cell in _row_for(report, OFFICE, "sft", "HR@10")]
    assert "8th of 11" in [cell.strip() for cell in _row_for(report, OFFICE, "grpo", "HR@10")]


def _row_for(report: str, category: str, stage: str, metric: str) -> list[str]:
    """The cells of the "Against Table 1" row of (stage, metric) in a category's section."""
    section = report.split(f"## {category}\n", 1)[1].split("\n## ", 1)[0]
    against = section.split("### Against Table 1", 1)[1].split("###", 1)[0]
    for line in against.splitlines():
        cells = line.split("|")
        if len(cells) > 3 and cells[1].strip() == stage and cells[2].strip() == metric:
            return cells
    raise AssertionError(f"no row for {stage} {metric} in {category}")


def test_ci_containment_flag(store):
    paper = load_paper_table("table1")
    ranked = with_rank_and_ci(comparison_frame(find_scored_runs(), paper), paper)
    for row in ranked.itertuples():
        metrics = mlflow.artifacts.load_dict(f"runs:/{store.current[(row.category, row.stage)]}/scores/metrics.json")
        low, high = metrics["ci"][row.metric]
        assert row.paper_in_ci == (low <= row.paper <= high)
    flags = ranked.set_index(["category", "stage", "metric"])["paper_in_ci"]
    assert flags[(INDUSTRIAL, "grpo", "HR@10")]  # ours ~ .162 with a CI about +-.011; the paper's .1586 is inside
    assert not flags[(INDUSTRIAL, "sft", "HR@10")]  # ours ~ .122; .1586 lies far above


def test_report_has_every_section_and_its_provenance(store, default_report):
    report = (default_report[0] / "report.md").read_text()
    for heading in ("## Runs and data provenance", f"## {INDUSTRIAL}", f"## {OFFICE}", "### How far from Table 1",
                    "### Results per stage", "### Against Table 1", "### Per-level analysis", "## Across datasets"):
        assert heading in report
    for run_id in store.current.values():
        assert run_id in report
    assert store.older not in report and store.failed not in report
    assert git_commit() in report
    assert time.strftime("%Y-%m-%d", time.gmtime()) in report
    assert f"trained on the PARTIAL train split `{locate(INDUSTRIAL).train.name}`" in report
    # The Office sft run came from the score CLI, which reads no train file: the report says so.
    assert f"run {store.current[(OFFICE, 'sft')]}): the train file behind these numbers is not recorded" in report
    for metric in ("HR@1", "NDCG@50", "HR@20"):
        assert f"| {metric} |" in report  # every K the scorer logged, not only Table 1's


def test_report_names_the_level_that_loses_most(store, default_report):
    report = (default_report[0] / "report.md").read_text()
    for category in (INDUSTRIAL, OFFICE):
        best_stage = max(("sft", "grpo"), key=lambda stage: expected_metrics(
            planted_predictions(category, PLANS[(category, stage)])[1])["HR@10"])
        levels = mlflow.artifacts.load_dict(f"runs:/{store.current[(category, best_stage)]}/scores/levels.json")
        retention = levels["dropoff"]["10"]  # [L1 share, L2 kept given L1, L3 kept given L1-2]
        weakest = int(np.argmin(retention)) + 1
        deeper = int(np.argmin(retention[1:])) + 2
        summary = report.split(f"## {category}\n", 1)[1].split("### Results per stage", 1)[0]
        assert f"The best stage, **{best_stage}**" in summary
        lost = 100 * (1 - min(retention))
        assert f"Level {weakest} loses the most ({lost:.1f}% of the rows still in play)" in summary
        assert f"past level 1, level {deeper} loses the most ({100 * (1 - min(retention[1:])):.1f}%)" in summary


def test_plots_are_real_images(default_report):
    out, _ = default_report
    report = (out / "report.md").read_text()
    for name in ("ours_vs_paper.png", f"levels_{INDUSTRIAL}.png", f"levels_{OFFICE}.png"):
        path = out / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 20_000
        height, width = imread(path).shape[:2]
        assert width >= 500 and height >= 400
        assert f"]({name})" in report
    assert not list(out.parent.glob(f".{out.name}.*"))  # the staging folder is gone


def test_comparison_run_logs_files_and_headline_metrics(store, default_report):
    out, run_id = default_report
    run = mlflow.get_run(run_id)
    assert mlflow.get_experiment(run.info.experiment_id).name == "minirec-comparison"
    assert run.data.tags["stage"] == "compare" and run.data.tags["category"] == "all"
    assert set(run.data.params["compared_run_ids"].split(",")) == set(store.current.values())
    artifacts = {info.path for info in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"comparison.csv", "report.md", "ours_vs_paper.png", f"levels_{INDUSTRIAL}.png"} <= artifacts
    frame = pd.read_csv(out / "comparison.csv")
    gap = frame[(frame["category"] == OFFICE) & (frame["stage"] == "grpo") & (frame["metric"] == "HR@10")]["gap"].item()
    assert run.data.metrics["gap_HR_at_10__Office_Products__grpo"] == pytest.approx(gap)
    assert run.data.metrics["rank_HR_at_10__Office_Products__grpo"] == 8


def test_unknown_paper_table_lists_the_known_ones(mlflow_uri, tmp_path):
    with pytest.raises(UserError) as raised:
        run_stage(CompareRecipe, "--paper", "table9", "--out", tmp_path)
    assert "table9" in str(raised.value) and "table1" in str(raised.value)


def test_no_scored_runs_says_which_command_makes_them(mlflow_uri, tmp_path):
    with stage_run(category=OFFICE, stage="sft", source="unscored"):
        pass
    with pytest.raises(UserError) as raised:
        run_stage(CompareRecipe, "--out", tmp_path / "out")
    message = str(raised.value)
    assert "scored=true" in message and "python -m minirec.score" in message
    assert not (tmp_path / "out").exists()


def test_two_named_runs_of_one_stage_are_told_apart(store):
    runs = find_scored_runs([store.older, store.current[(INDUSTRIAL, "sft")]])
    assert sorted(run.stage for run in runs) == sorted(f"sft@{run_id[:8]}" for run_id in
                                                        (store.older, store.current[(INDUSTRIAL, "sft")]))


def test_scored_run_without_its_files_is_refused_and_the_old_report_kept(mlflow_uri, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("previous report\n")
    with stage_run(category=OFFICE, stage="sft", source="broken", entry_point="score"):
        mlflow.set_tag("scored", "true")  # tagged, but scores/metrics.json was never logged
    with pytest.raises(UserError) as raised:
        run_stage(CompareRecipe, "--out", out)
    assert "scores/metrics.json" in str(raised.value) and "python -m minirec.score" in str(raised.value)
    assert (out / "report.md").read_text() == "previous report\n"
    assert sorted(path.name for path in out.iterdir()) == ["report.md"]


def test_a_released_checkpoint_is_its_own_row_beside_the_papers(mlflow_uri, tmp_path):
    """An evaluation of upstream's released checkpoint (tagged by evaluate) is reported as such, not as sft."""
    run_id = log_scored_run(INDUSTRIAL, "evaluate", PLANS[(INDUSTRIAL, "grpo")], tmp_path)
    mlflow.MlflowClient().set_tag(run_id, "model_kind", "released_checkpoint")
    (run,) = find_scored_runs([run_id])
    assert run.stage == "released_checkpoint"
    paper = load_paper_table("table1")
    frame = comparison_frame([run], paper)
    assert set(frame["stage"]) == {"released_checkpoint"} and set(frame["metric"]) == set(TABLE1_METRICS)
