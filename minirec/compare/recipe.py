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
from minirec.compare.report import Context, Stamp, render_report
from minirec.compare.settings import CompareSettings
from minirec.stage import Recipe
from minirec.tracking import COMPARISON_EXPERIMENT, git_commit


def write_bundle(runs: Sequence[ScoredRun], paper: pd.DataFrame, ranked: pd.DataFrame, out_dir: Path,
                 stamp: Stamp, context: Context | None = None) -> list[Path]:
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
        report = render_report(runs, ranked, paper, stamp, plots, context)
        (staging / "report.md").write_text(report, encoding="utf-8")
        names = sorted(path.name for path in staging.iterdir())
    return [out_dir / name for name in names]


def ui_base() -> str:
    """Where the MLflow UI of these runs is: the tracking server itself, else what ``make ui`` serves."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    return uri.rstrip("/") if uri.startswith("http") else os.environ.get("MINIREC_UI_URL", "http://127.0.0.1:5000")


def report_context(runs: Sequence[ScoredRun], frames: dict) -> Context:
    """Lineage and training health of every run, and GRPO minus SFT per category on their common rows."""
    from mlflow import MlflowClient

    from minirec.compare.lineage import lineage, stage_health
    from minirec.compare.rows import catalogue_of, paired_difference

    client = MlflowClient()
    context = Context(ui_base=ui_base())
    catalogues: dict = {}
    for run in runs:
        context.lineages[run.run_id] = found = lineage(client, run)
        context.health[run.run_id] = stage_health(client, found)
    for category, by_run in frames.items():
        stage_of = {run.run_id: run for run in runs if run.category == category}
        sft = [stage_of[run_id] for run_id in by_run if stage_of[run_id].stage == "sft"]
        grpo = [stage_of[run_id] for run_id in by_run if stage_of[run_id].stage == "grpo"]
        if sft and grpo:
            catalogue = catalogue_of(grpo[0], catalogues)
            context.differences[category] = {
                metric: paired_difference(by_run[sft[0].run_id], by_run[grpo[0].run_id], catalogue, metric)
                for metric in ("HR@10", "NDCG@10")}
    return context


class CompareRecipe(Recipe):
    stage = "compare"
    settings_class = CompareSettings
    module = "minirec.compare"
    experiment = COMPARISON_EXPERIMENT

    def complete(self) -> None:
        settings = self.settings
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
        from minirec.compare.rows import align

        self.runs, frames = align(self.runs)
        self.context = report_context(self.runs, frames)
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
        written = write_bundle(self.runs, self.paper, self.ranked, Path(settings.output_dir), stamp, self.context)
        mlflow.log_metrics(headline_metrics(self.ranked))
        for path in written:
            mlflow.log_artifact(str(path))
        for path in written:
            print(path)
