"""How far are we from the paper? Find the scored runs and line them up against a paper table.

    python -m minirec.compare --paper table1                       # latest scored run per (category, stage)
    python -m minirec.compare --run-id RUN_A RUN_B --out reports/x  # exactly these runs
    mlflow run . -e compare --env-manager local -P category=Office_Products

A scored run is a FINISHED run tagged ``scored=true`` whose artifacts hold ``scores/metrics.json`` and
``scores/levels.json`` (written by ``minirec.score``; metrics as upstream calc.py computes them, docs/upstream.md
6.4, and the per-level analysis of docs/upstream.md 6.6). The paper's numbers are the MiniOneRec row of Table 1; the other
nine rows are the baselines a stage is ranked among. Table 1 reports HR and NDCG at 3, 5 and 10 only, and its
top-10 comes from upstream's 50-beam decoding (docs/upstream.md 8.5), so every run's ``num_beams`` is reported beside it.

This module finds runs and builds the comparison frame; :mod:`minirec.compare.report` writes the markdown,
:mod:`minirec.compare.plots` the figures and :mod:`minirec.compare.recipe` is the stage.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import pandas as pd

from minirec.data.layout import PROJECT_ROOT
from minirec.errors import UserError

PAPER_TABLES = {"table1": PROJECT_ROOT / "reports" / "paper_table1.csv"}
PAPER_METHOD = "MiniOneRec"
COMPARISON_COLUMNS = ("category", "stage", "metric", "paper", "ours", "gap", "relative_pct", "ci_low", "ci_high")
SCORED_FILTER = "tags.scored = 'true' and attributes.status = 'FINISHED'"
# Stages in pipeline order (baselines first); any other stage label sorts after these, alphabetically.
STAGE_ORDER = ("popularity", "transition", "sasrec", "gru4rec", "caser", "hstu", "tiger", "sft", "grpo",
               "released_checkpoint")
SCORE_COMMAND = (
    "python -m minirec.score --predictions FILE --category CATEGORY --stage STAGE "
    "(or `mlflow run . -e score --env-manager local -P predictions=FILE -P category=CATEGORY`)"
)


class CompareError(UserError):
    """The comparison cannot be made (unknown table, no scored runs, a run without scores); says how to fix it."""


@dataclass(frozen=True)
class Provenance:
    """Which train split stands behind a run's numbers, as the run recorded it (``train_file.*`` params: the
    file a training or baseline run read, or, for an evaluation, the file its model's training run read)."""

    train_path: str | None = None  # relative to the data directory, e.g. Office_Products/train/....csv
    train_rows: int | None = None
    train_sha256: str | None = None
    train_is_partial: bool | None = None
    data_dir: str | None = None  # "bundled" or the data directory
    note: str | None = None  # why nothing was recorded

    @property
    def recorded(self) -> bool:
        return self.train_path is not None

    @classmethod
    def from_params(cls, params: dict[str, str]) -> "Provenance":
        path = params.get("train_file.path")
        if path is not None and path.startswith("unknown"):
            return cls(note=path)
        rows = params.get("train_file.rows")
        partial = params.get("train_file.partial")
        return cls(
            train_path=path,
            train_rows=int(rows) if rows not in (None, "") else None,
            train_sha256=params.get("train_file.sha256"),
            train_is_partial=None if partial is None else partial == "true",
            data_dir=params.get("train_file.data_dir"),
        )


@dataclass(frozen=True)
class ScoredRun:
    """One scored run: who it is, its scores (paper notation, ``HR@10``) and its data provenance."""

    run_id: str
    category: str
    stage: str
    experiment: str
    status: str
    start_time: int
    metrics: dict
    levels: dict
    provenance: Provenance = field(default_factory=Provenance)
    experiment_id: str = ""
    tags: dict = field(default_factory=dict, compare=False)
    params: dict = field(default_factory=dict, compare=False)
    rows: str = ""  # which rows the numbers cover, in words (set by minirec.compare.rows.align)

    @property
    def num_beams(self) -> int | None:
        value = self.metrics.get("num_beams")
        return int(value) if value is not None else None

    @property
    def ks(self) -> list[int]:
        return sorted(int(k) for k in self.metrics.get("ks", []))

    def value(self, metric: str) -> float:
        value = self.metrics.get(metric)
        return float(value) if value is not None else math.nan

    def ci(self, metric: str) -> tuple[float, float]:
        bounds = self.metrics.get("ci", {}).get(metric)
        return (float(bounds[0]), float(bounds[1])) if bounds else (math.nan, math.nan)


def load_paper_table(name: str) -> pd.DataFrame:
    """The paper table registered as ``name``: columns category, method, metric, value."""
    if name not in PAPER_TABLES:
        raise CompareError(f"unknown paper table {name!r}; known tables: {', '.join(sorted(PAPER_TABLES))}")
    path = PAPER_TABLES[name]
    table = pd.read_csv(path, dtype={"category": str, "method": str, "metric": str, "value": float})
    missing = {"category", "method", "metric", "value"} - set(table.columns)
    if missing:
        raise CompareError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    if PAPER_METHOD not in set(table["method"]):
        raise CompareError(f"{path}: no {PAPER_METHOD} row to compare with")
    return table


def paper_metrics(paper: pd.DataFrame, category: str) -> list[str]:
    """The table's metrics for a category, HR before NDCG, by K."""
    names = paper.loc[paper["category"] == category, "metric"].unique()
    return sorted(names, key=lambda name: (name.split("@")[0] != "HR", int(name.split("@")[1])))


def paper_value(paper: pd.DataFrame, category: str, metric: str, method: str = PAPER_METHOD) -> float:
    rows = paper[(paper["category"] == category) & (paper["metric"] == metric) & (paper["method"] == method)]
    return float(rows["value"].iloc[0]) if len(rows) else math.nan


def best_baseline(paper: pd.DataFrame, category: str, metric: str) -> tuple[str, float]:
    """The strongest of the paper's other methods on one metric: (method, value)."""
    rows = paper[(paper["category"] == category) & (paper["metric"] == metric) & (paper["method"] != PAPER_METHOD)]
    best = rows.loc[rows["value"].idxmax()]
    return str(best["method"]), float(best["value"])


def paper_rank(paper: pd.DataFrame, category: str, metric: str, ours: float) -> tuple[int, int]:
    """Where ``ours`` would stand among the paper's methods on one metric: (position, field size).

    Position is 1 + the number of paper methods strictly better (a tie shares the better place); the field is
    the paper's methods plus ours, so with Table 1's ten methods the worst place is 11th of 11.
    """
    values = paper.loc[(paper["category"] == category) & (paper["metric"] == metric), "value"]
    return 1 + int((values > ours).sum()), len(values) + 1


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def stage_sort_key(stage: str) -> tuple[int, str]:
    base = stage.split("@")[0]
    return (STAGE_ORDER.index(base) if base in STAGE_ORDER else len(STAGE_ORDER), stage)


def parse_run_ids(values: Iterable[str] | None) -> list[str]:
    """Run ids given as separate arguments, or space-/comma-separated in one (the MLproject parameter)."""
    ids: list[str] = []
    for value in values or ():
        ids.extend(part for part in re.split(r"[\s,]+", value) if part)
    return list(dict.fromkeys(ids))


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def _load_scored_run(client, run) -> ScoredRun:
    import mlflow

    run_id = run.info.run_id
    loaded = {}
    for name in ("metrics", "levels"):
        uri = f"runs:/{run_id}/scores/{name}.json"
        try:
            loaded[name] = mlflow.artifacts.load_dict(uri)
        except Exception as error:  # a missing artifact surfaces as several MLflow/OS error types
            raise CompareError(
                f"run {run_id} is tagged scored=true but its artifact scores/{name}.json cannot be read "
                f"({type(error).__name__}: {error}); re-score it with {SCORE_COMMAND}"
            ) from error
    params = dict(run.data.params)
    tags = run.data.tags
    return ScoredRun(
        run_id=run_id,
        category=tags.get("category", "unknown"),
        # upstream's released checkpoints (tagged by evaluate) are their own row beside the paper's
        stage="released_checkpoint" if tags.get("model_kind") == "released_checkpoint" else tags.get("stage", "unknown"),
        experiment=client.get_experiment(run.info.experiment_id).name,
        status=run.info.status,
        start_time=int(run.info.start_time or 0),
        metrics=loaded["metrics"],
        levels=loaded["levels"],
        provenance=Provenance.from_params(params),
        experiment_id=run.info.experiment_id,
        tags=dict(tags),
        params=params,
    )


def _named_runs(client, run_ids: Sequence[str]) -> list:
    from mlflow.exceptions import MlflowException

    runs = []
    for run_id in run_ids:
        try:
            run = client.get_run(run_id)
        except MlflowException as error:
            raise CompareError(f"run {run_id} not found on the tracking server: {error.message}") from error
        if run.data.tags.get("scored") != "true":
            raise CompareError(
                f"run {run_id} holds no scores (tag scored=true is missing); score it with {SCORE_COMMAND}"
            )
        runs.append(run)
    return runs


def _latest_scored_runs(category: str) -> list:
    """The newest FINISHED scored run of each (category, stage), across all experiments."""
    import mlflow

    query = SCORED_FILTER if category == "all" else f"{SCORED_FILTER} and tags.category = '{category}'"
    newest_first = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=query,
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    latest = {}
    for run in newest_first:
        key = (run.data.tags.get("category"), run.data.tags.get("stage"))
        latest.setdefault(key, run)
    return list(latest.values())


def find_scored_runs(run_ids: Sequence[str] = (), category: str = "all") -> list[ScoredRun]:
    """The runs to compare, with their scores loaded, sorted by category then stage.

    With ``run_ids`` exactly those runs (of ``category`` unless it is ``all``); two named runs of the same
    (category, stage) both stay, their stage labelled ``stage@<run id prefix>``. Without, the latest scored run
    per (category, stage) from the tracking server.
    """
    client = _client()
    raw = _named_runs(client, run_ids) if run_ids else _latest_scored_runs(category)
    if run_ids and category != "all":
        raw = [run for run in raw if run.data.tags.get("category") == category]
    if not raw:
        where = f"for category {category}" if category != "all" else "in any experiment"
        named = f" among runs {', '.join(run_ids)}" if run_ids else ""
        raise CompareError(
            f"no FINISHED run tagged scored=true {where}{named} on {_tracking_uri()}; "
            f"scored runs are produced by {SCORE_COMMAND}"
        )
    runs = [_load_scored_run(client, run) for run in raw]
    runs = _label_duplicate_stages(runs)
    return sorted(runs, key=lambda run: (run.category, stage_sort_key(run.stage)))


def _label_duplicate_stages(runs: list[ScoredRun]) -> list[ScoredRun]:
    counts = Counter((run.category, run.stage) for run in runs)
    return [
        replace(run, stage=f"{run.stage}@{run.run_id[:8]}") if counts[(run.category, run.stage)] > 1 else run
        for run in runs
    ]


def _tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def comparison_frame(runs: Sequence[ScoredRun], paper: pd.DataFrame) -> pd.DataFrame:
    """One row per (category, stage, paper metric): paper, ours, gap = ours - paper, relative % and our CI.

    Categories the paper table does not cover produce no rows; a metric a run lacks (K above its beam width)
    has ``ours`` NaN.
    """
    rows = []
    for run in runs:
        for metric in paper_metrics(paper, run.category):
            reference = paper_value(paper, run.category, metric)
            ours = run.value(metric)
            low, high = run.ci(metric)
            gap = ours - reference
            rows.append(
                {
                    "category": run.category,
                    "stage": run.stage,
                    "metric": metric,
                    "paper": reference,
                    "ours": ours,
                    "gap": gap,
                    "relative_pct": 100.0 * gap / reference if reference else math.nan,
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def with_rank_and_ci(frame: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """The comparison frame plus ``paper_place`` among ``field_size`` methods (the paper's and ours) and
    ``paper_in_ci`` (the paper's number lies inside our CI)."""
    ranked = frame.copy()
    places = [
        paper_rank(paper, row.category, row.metric, row.ours) if not math.isnan(row.ours) else (math.nan, math.nan)
        for row in frame.itertuples()
    ]
    ranked["paper_place"] = [place for place, _ in places]
    ranked["field_size"] = [size for _, size in places]
    ranked["paper_in_ci"] = (frame["ci_low"] <= frame["paper"]) & (frame["paper"] <= frame["ci_high"])
    return ranked


def mlflow_key(*parts: str) -> str:
    """Join parts with ``__`` and replace what MLflow does not allow in a metric name with ``_``."""
    return re.sub(r"[^A-Za-z0-9_\-./: ]", "_", "__".join(parts).replace("@", "_at_"))


def headline_metrics(ranked: pd.DataFrame) -> dict[str, float]:
    """The numbers worth charting across comparison runs: gap, relative %, ours and rank per row."""
    values = {}
    for row in ranked.itertuples():
        named = (("ours", row.ours), ("gap", row.gap), ("relative_pct", row.relative_pct), ("rank", row.paper_place))
        for name, value in named:
            if not math.isnan(value):
                values[mlflow_key(f"{name}_{row.metric}", row.category, row.stage)] = float(value)
    return values

