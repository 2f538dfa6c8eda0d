"""Comparing stages on the same rows: which rows each scored run covers, rescoring on the common ones, and paired
differences between two stages.

    python -m minirec.compare --paper table1          # aligns every category's runs before writing the report

An evaluation with ``limit`` scores the first rows of the split, a baseline every row; numbers over different
rows are not comparable, and the first N rows are not a random sample of the split. :func:`align` loads each
run's beams (``beams/beams.parquet``, or the predictions file a score run logged), keeps the rows every run of the
category has, and rescores each run on exactly those (calc.py metrics and user-bootstrap intervals, as
:mod:`minirec.score`). :func:`paired_difference` gives the mean difference of two runs on those rows with a
paired user bootstrap: the interval of "GRPO minus SFT" that the report shows.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from minirec.compare import ScoredRun

BEAM_FILES = ("beams/beams.parquet",)


def load_beams(client, run_id: str, into: Path) -> pd.DataFrame | None:
    """The run's ranked predictions in the harness frame, or ``None`` when it logged none."""
    from minirec.beams import read_predictions

    names = [a.path for a in client.list_artifacts(run_id, "beams")] + \
            [a.path for a in client.list_artifacts(run_id, "predictions")]
    for name in [*BEAM_FILES, *sorted(n for n in names if n.startswith("predictions/"))]:
        if name in names:
            local = client.download_artifacts(run_id, name, str(into))
            return read_predictions(local)
    return None


def describe_rows(rows: np.ndarray, split_rows: int | None) -> str:
    """In words: all rows, the first N, or N rows of the split."""
    n = len(rows)
    if split_rows is not None and n == split_rows:
        return f"all {n:,} test rows"
    if n and rows.min() == 0 and rows.max() == n - 1:
        return f"the first {n:,} test rows (not a random sample of the split)"
    return f"{n:,} test rows"


def _rescored(run: ScoredRun, frame: pd.DataFrame, catalogue) -> ScoredRun:
    from minirec.score import score_predictions

    scores = score_predictions(frame.reset_index(drop=True), catalogue, seed=int(run.metrics.get("seed", 0)))
    metrics = {**scores.metrics_json(), "num_beams": run.metrics.get("num_beams", scores.num_beams)}
    return dataclasses.replace(run, metrics=metrics, levels=scores.levels)


def catalogue_of(run: ScoredRun, cache: dict):
    """The catalogue of the data directory the run read (its ``data_dir`` param; the bundled data by default)."""
    from minirec.data import Catalogue, locate

    key = (run.category, run.params.get("data_dir", ""))
    if key not in cache:
        try:
            cache[key] = Catalogue.load(locate(*key))
        except Exception:  # a data directory of another machine: the run keeps its logged numbers
            cache[key] = None
    return cache[key]


def split_rows_of(category: str) -> int | None:
    from minirec.data import locate
    from minirec.data.layout import count_csv_rows

    try:
        return count_csv_rows(locate(category).test)
    except Exception:
        return None


def align(runs: Sequence[ScoredRun]) -> tuple[list[ScoredRun], dict]:
    """Every run rescored on the rows all runs of its category cover; returns the runs and, per category, the
    aligned beam frames by run id (for paired differences). Runs without beams keep their logged numbers."""
    catalogues: dict = {}
    from mlflow import MlflowClient

    client = MlflowClient()
    aligned: list[ScoredRun] = []
    frames: dict[str, dict[str, pd.DataFrame]] = {}
    with tempfile.TemporaryDirectory(prefix="minirec-compare-") as folder:
        for category in sorted({run.category for run in runs}):
            members = [run for run in runs if run.category == category]
            loaded = {run.run_id: load_beams(client, run.run_id, Path(folder) / run.run_id) for run in members}
            with_beams = {run_id: frame for run_id, frame in loaded.items() if frame is not None}
            common = None
            for frame in with_beams.values():
                rows = set(frame["row"].tolist())
                common = rows if common is None else common & rows
            common_rows = np.array(sorted(common or ()), dtype=np.int64)
            split_rows = split_rows_of(category)
            frames[category] = {}
            for run in members:
                frame = with_beams.get(run.run_id)
                catalogue = catalogue_of(run, catalogues)
                if frame is None or catalogue is None:
                    aligned.append(dataclasses.replace(
                        run, rows=f"{int(run.metrics.get('n', 0)):,} rows (not aligned: the run logged no beams)"))
                    continue
                subset = frame[frame["row"].isin(common)].sort_values("row")
                frames[category][run.run_id] = subset
                same = len(subset) == len(frame)
                rescored = run if same else _rescored(run, subset, catalogue)
                aligned.append(dataclasses.replace(rescored, rows=describe_rows(common_rows, split_rows)))
    return aligned, frames


def per_row_hits(frame: pd.DataFrame, catalogue, metric: str) -> np.ndarray:
    from minirec.metrics import BeamMatrix, rank_metrics

    ranked = rank_metrics(BeamMatrix.from_frame(frame.reset_index(drop=True)), catalogue.valid_sids,
                          catalogue.sid_items, (int(metric.split("@")[1]),))
    return ranked.per_row[metric]


def paired_difference(first: pd.DataFrame, second: pd.DataFrame, catalogue, metric: str = "HR@10",
                      draws: int = 1000, seed: int = 0) -> tuple[float, float, float, int]:
    """``(mean, ci_low, ci_high, rows)`` of ``second - first`` on ``metric`` over their common rows, with a paired
    user bootstrap (both runs' values of a user are drawn together)."""
    from minirec.bootstrap import bootstrap_intervals, resampling_units

    rows = sorted(set(first["row"]) & set(second["row"]))
    a = first.set_index("row").loc[rows].reset_index()
    b = second.set_index("row").loc[rows].reset_index()
    difference = per_row_hits(b, catalogue, metric) - per_row_hits(a, catalogue, metric)
    if not len(difference):
        return math.nan, math.nan, math.nan, 0
    units, unit = resampling_units(a["user_id"].tolist() if "user_id" in a else None, len(difference))
    low, high = bootstrap_intervals({"d": difference}, units, unit=unit, draws=draws, seed=seed).intervals["d"]
    return float(difference.mean()), low, high, len(difference)
