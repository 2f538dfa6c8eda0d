"""CLI of the ``compare`` stage: scored runs against the paper's Table 1.

    python -m minirec.compare --paper table1 [--run-id ID ...] [--category CAT|all] [--out reports/latest]
    mlflow run . -e compare --env-manager local -P run_ids="RUN_A,RUN_B"

Writes comparison.csv, report.md and the figures to ``--out`` and logs them, with the headline numbers as
metrics, to a run of the ``minirec-comparison`` experiment (see :mod:`minirec.compare`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import pandas as pd

from minirec.compare import (
    COMPARISON_COLUMNS,
    PAPER_TABLES,
    CompareError,
    ScoredRun,
    comparison_frame,
    find_scored_runs,
    headline_metrics,
    load_paper_table,
    parse_run_ids,
    with_rank_and_ci,
)
from minirec.plots import plot_level_dropoff, plot_ours_vs_paper
from minirec.report import Stamp, render_report
from minirec.tracking import configure_environment, git_commit, log_params, start_run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minirec.compare",
        description="Compare the latest scored run per (category, stage), or the runs named, with a paper table; "
        "write comparison.csv, report.md and plots, and log them to the minirec-comparison experiment.",
    )
    parser.add_argument("--paper", default="table1",
                        help=f"paper table to compare with (known: {', '.join(sorted(PAPER_TABLES))}; default table1)")
    parser.add_argument("--run-id", "--run_id", "--run-ids", "--run_ids", dest="run_ids", action="extend", nargs="*",
                        default=[], metavar="ID",
                        help="scored runs to compare, space- or comma-separated (default: the latest FINISHED run "
                        "tagged scored=true per category and stage, across all experiments)")
    parser.add_argument("--category", default="all",
                        help="compare only this category's runs (default all)")
    parser.add_argument("--out", default="reports/latest", type=Path,
                        help="folder for comparison.csv, report.md and the PNGs (default reports/latest)")
    return parser


def write_bundle(runs: Sequence[ScoredRun], paper: pd.DataFrame, ranked: pd.DataFrame, out_dir: Path,
                 stamp: Stamp) -> list[Path]:
    """Write comparison.csv, report.md and the figures into ``out_dir``; return the files written.

    Everything is first drawn into a hidden staging folder inside ``out_dir`` and only then renamed into place
    file by file, so a failure part-way leaves the previous report untouched.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".compare-", dir=out_dir) as staging_name:
        staging = Path(staging_name)
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
        written = []
        for staged in sorted(staging.iterdir()):
            os.replace(staged, out_dir / staged.name)
            written.append(out_dir / staged.name)
    return written


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison; returns the comparison run id and the files written."""
    args = build_parser().parse_args(argv)
    run_ids = parse_run_ids(args.run_ids)
    configure_environment()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # two tiny JSONs per run
    try:
        paper = load_paper_table(args.paper)
        runs = find_scored_runs(run_ids, args.category)
    except CompareError as error:
        sys.exit(f"minirec.compare: error: {error}")
    ranked = with_rank_and_ci(comparison_frame(runs, paper), paper)
    compared = ",".join(run.run_id for run in runs)
    # Every comparison lives in the comparison experiment; the category tag says which one it covers.
    with start_run(category="all", stage="compare", source=compared, entry_point="compare",
                   tags={"category": args.category, "compared_run_ids": compared, "paper": args.paper}) as run:
        import mlflow

        log_params({"paper": args.paper, "category": args.category, "compared_run_ids": compared,
                           "out": str(args.out)})
        stamp = Stamp(
            command="python -m minirec.compare " + shlex.join(argv if argv is not None else sys.argv[1:]),
            commit=git_commit(),
            generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            paper_name=args.paper,
            paper_path=PAPER_TABLES[args.paper],
        )
        written = write_bundle(runs, paper, ranked, args.out, stamp)
        mlflow.log_metrics(headline_metrics(ranked))
        for path in written:
            mlflow.log_artifact(str(path))
    for path in written:
        print(path)
    return {"run_id": run.info.run_id, "files": written}


if __name__ == "__main__":
    main()
