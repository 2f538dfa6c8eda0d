"""Score ranked SID predictions: calc.py's HR@K / NDCG@K / CC, user-bootstrap CIs, collisions, SID levels.

    python -m minirec.score --predictions results/test.json --category Industrial_and_Scientific
    mlflow run . -e score -P predictions=beams.parquet -P category=Office_Products -P stage=sft --env-manager local

Reference: docs/upstream.md 6.4 (calc.py, reproduced exactly), 6.6 (per-level analysis, a harness extension),
1.6 (SID collisions). This module is the library; :mod:`minirec.score.recipe` is the stage. Library use::

    scores = score_predictions(read_predictions(path), Catalogue.load(locate(category)))
    log_scores(scores, out_dir)   # inside an active MLflow run
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from minirec.atomic import write_json
from minirec.bootstrap import bootstrap_intervals, resampling_units
from minirec.data.catalogue import Catalogue
from minirec.levels import level_metric_names, level_tables
from minirec.metrics import DEFAULT_KS, BeamMatrix, rank_metrics
from minirec.tracking import metric_name

ARTIFACT_DIR = "scores"


@dataclass(frozen=True)
class Scores:
    """Everything ``metrics.json`` and ``levels.json`` hold; ``metrics`` uses the paper's names (``HR@10``)."""

    n: int
    num_beams: int
    ks: tuple[int, ...]
    metrics: dict[str, float]
    invalid: int
    invalid_all: int
    ci: dict[str, tuple[float, float]]
    levels: dict[str, dict[str, list[float]]]
    ci_level: float = 0.95
    bootstrap_draws: int = 1000
    bootstrap_unit: str = "user"
    seed: int = 0
    # 0-based rank of each row's first hit (num_beams when none), for per-row analysis; not written to JSON.
    first_hit: Sequence[int] = field(default=(), repr=False, compare=False)

    def __getitem__(self, name: str) -> float:
        return self.metrics[name]

    def metrics_json(self) -> dict:
        """The content of ``metrics.json``."""
        return {
            "n": self.n,
            "num_beams": self.num_beams,
            "ks": list(self.ks),
            **self.metrics,
            "invalid": self.invalid,
            "invalid_all": self.invalid_all,
            "ci": {name: list(bounds) for name, bounds in self.ci.items()},
            "ci_level": self.ci_level,
            "bootstrap_draws": self.bootstrap_draws,
            "bootstrap_unit": self.bootstrap_unit,
            "seed": self.seed,
        }

    def mlflow_metrics(self) -> dict[str, float]:
        """Flat MLflow metric names: ``HR_at_10``, ``HR_at_10_ci_low``, ``level_cumulative_L3_at_10``, ..."""
        metrics = {metric_name(name): value for name, value in self.metrics.items()}
        for name, (low, high) in self.ci.items():
            metrics[f"{metric_name(name)}_ci_low"] = low
            metrics[f"{metric_name(name)}_ci_high"] = high
        metrics.update(invalid=self.invalid, invalid_all=self.invalid_all, n=self.n, num_beams=self.num_beams)
        metrics.update(level_metric_names(self.levels))
        return {name: float(value) for name, value in metrics.items()}

    def headline(self, k: int = 10) -> str:
        """One line: HR@k and NDCG@k with their intervals, rows and invalid beams (what ``main`` prints)."""
        k = k if k in self.ks else max(self.ks)
        cells = [f"{name} {self.metrics[name]:.4f} [{self.ci[name][0]:.4f}, {self.ci[name][1]:.4f}]"
                 for name in (f"HR@{k}", f"NDCG@{k}")]
        return f"{', '.join(cells)} over {self.n} rows x {self.num_beams} beams, invalid_all {self.invalid_all}"

    def summary(self) -> str:
        """A short table for the terminal."""
        lines = [f"n={self.n} beams={self.num_beams} invalid={self.invalid} invalid_all={self.invalid_all} "
                 f"(CI {self.ci_level:.0%}, {self.bootstrap_draws} draws over {self.bootstrap_unit}s)"]
        for k in self.ks:
            cells = []
            for name in (f"HR@{k}", f"NDCG@{k}"):
                low, high = self.ci[name]
                cells.append(f"{name:>8} {self.metrics[name]:.4f} [{low:.4f}, {high:.4f}]")
            cells.append(f"HR_coll@{k} {self.metrics[f'HR_coll@{k}']:.4f}")
            lines.append("  ".join(cells))
        return "\n".join(lines)


def score_predictions(
    frame: pd.DataFrame,
    catalogue: Catalogue,
    ks: Sequence[int] = DEFAULT_KS,
    n_boot: int = 1000,
    seed: int = 0,
    ci_level: float = 0.95,
    source: str = "predictions",
) -> Scores:
    """Score a harness-format frame (``target``, ``predict``; ``user_id`` for the user bootstrap)."""
    beams = BeamMatrix.from_frame(frame, source=source)
    ranked = rank_metrics(beams, catalogue.valid_sids, catalogue.sid_items, ks)
    user_ids = frame["user_id"].tolist() if "user_id" in frame.columns else None
    units, unit = resampling_units(user_ids, beams.n)
    boot = bootstrap_intervals(ranked.per_row, units, unit=unit, draws=n_boot, seed=seed, level=ci_level)
    return Scores(
        n=beams.n,
        num_beams=beams.num_beams,
        ks=ranked.ks,
        metrics=ranked.values,
        invalid=ranked.invalid,
        invalid_all=ranked.invalid_all,
        ci=boot.intervals,
        levels=level_tables(beams, ranked.ks),
        ci_level=ci_level,
        bootstrap_draws=n_boot,
        bootstrap_unit=unit,
        seed=seed,
        first_hit=ranked.first_hit,
    )


def log_scores(
    scores: Scores, out_dir: str | os.PathLike, step: int | None = None, artifact_path: str = ARTIFACT_DIR
) -> dict:
    """Write ``metrics.json`` and ``levels.json`` into ``out_dir`` and log them, the metrics and ``scored=true``
    into the active MLflow run; returns the ``metrics.json`` content.

    ``step`` and ``artifact_path`` let in-training validation log several evaluations into one run.
    """
    import mlflow

    if mlflow.active_run() is None:
        raise RuntimeError("log_scores needs an active MLflow run (use minirec.tracking.stage_run)")
    out_dir = Path(out_dir)
    content = scores.metrics_json()
    metrics_file = write_json(out_dir / "metrics.json", content)
    levels_file = write_json(out_dir / "levels.json", scores.levels)
    mlflow.log_metrics(scores.mlflow_metrics(), step=step)
    mlflow.log_artifact(str(metrics_file), artifact_path)
    mlflow.log_artifact(str(levels_file), artifact_path)
    mlflow.set_tag("scored", "true")
    return content

