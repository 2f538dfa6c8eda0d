"""The compare stage: scored runs against the paper's Table 1, as comparison.csv, report.md and figures.

    python -m minirec.compare --paper table1 [--run_ids ID,ID ...] [--category CAT|all] [--output_dir reports/latest]
    mlflow run . -e compare --env-manager local -P run_ids="RUN_A,RUN_B"

Writes the bundle to ``output_dir`` (swapped in whole) and logs it, with the headline numbers as metrics, to a
run of the ``minirec-comparison`` experiment (see :mod:`minirec.compare` for how runs are found).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import pandas as pd

from minirec.atomic import atomic_directory
from minirec.compare import (
    COMPARISON_COLUMNS,
    PAPER_TABLES,
    ScoredRun,
    comparison_frame,
    find_scored_runs,
    headline_metrics,
    load_paper_table,
    parse_run_ids,
    with_rank_and_ci,
)
from minirec.compare.plots import plot_level_dropoff, plot_ours_vs_paper
from minirec.compare.report import Stamp, render_report
from minirec.compare.settings import CompareSettings
from minirec.stage import Recipe
from minirec.tracking import COMPARISON_EXPERIMENT, git_commit


def write_bundle(runs: Sequence[ScoredRun], paper: pd.DataFrame, ranked: pd.DataFrame, out_dir: Path,
                 stamp: Stamp) -> list[Path]:
    """Write comparison.csv, report.md and the figures into ``out_dir``; return the files written.

    Everything is drawn into a staging folder beside ``out_dir`` that then replaces it whole
    (:func:`minirec.atomic.atomic_directory`): a kill part-way leaves the previous bundle, never a mix.
    """
    with atomic_directory(out_dir, mode=0o755) as staging:
        ranked[list(COMPARISON_COLUMNS)].to_csv(staging / "comparison.csv", index=False)
        plots: dict[str, str] = {}  # category (or "all" for the cross-dataset figure) -> file name
        for category in sorted({run.category for run in runs}):
            category_runs = [run for run in runs if run.category == category and run.levels.get("dropoff")]
            if category_runs:
                plots[category] = plot_level_dropoff(category_runs, staging / f"levels_{category}.png").name
        if not ranked.empty:
            plots["all"] = plot_ours_vs_paper(ranked, paper, staging / "ours_vs_paper.png").name
        report = render_report(runs, ranked, paper, stamp, plots)
        (staging / "report.md").write_text(report, encoding="utf-8")
        names = sorted(path.name for path in staging.iterdir())
    return [out_dir / name for name in names]


class CompareRecipe(Recipe):
    stage = "compare"
    settings_class = CompareSettings
    module = "minirec.compare"
    experiment = COMPARISON_EXPERIMENT

    def complete(self) -> None:
        settings = self.settings
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # two tiny JSONs per run
        self.paper = load_paper_table(settings.paper)
        self.runs = find_scored_runs(parse_run_ids(settings.run_ids), settings.category)
        self.compared = ",".join(run.run_id for run in self.runs)

    def files(self):
        return None

    def source(self) -> str:
        return self.compared

    def run_name(self) -> str:
        return f"compare-{self.settings.paper}-{self.settings.category}"

    def tags(self) -> dict[str, str]:
        return {"compared_run_ids": self.compared, "paper": self.settings.paper}

    def run(self) -> None:
        self.ranked = with_rank_and_ci(comparison_frame(self.runs, self.paper), self.paper)

    def log(self) -> None:
        import mlflow

        settings = self.settings
        stamp = Stamp(
            command=settings.command_line(self.module),
            commit=git_commit(),
            generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            paper_name=settings.paper,
            paper_path=PAPER_TABLES[settings.paper],
        )
        from minirec.tracking import log_params

        log_params({"compared_run_ids": self.compared})
        written = write_bundle(self.runs, self.paper, self.ranked, Path(settings.output_dir), stamp)
        mlflow.log_metrics(headline_metrics(self.ranked))
        for path in written:
            mlflow.log_artifact(str(path))
        for path in written:
            print(path)
