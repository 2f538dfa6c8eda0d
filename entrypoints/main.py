"""The whole harness in one command: every stage per category, then the comparison with the paper.

    mlflow run . -e main -P category=all -P preset=tiny --env-manager local
    python -m entrypoints.main --category Industrial_and_Scientific

For each category a ``pipeline`` run is opened in that category's experiment and every stage runs as its
child; the comparison run goes to ``minirec-comparison``. The report is printed last, with its path and the
command that opens the MLflow UI.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from minirec.data import CATEGORIES
from minirec.pipeline import Step, plan, run_step
from minirec.tracking import configure_environment, ensure_experiment, experiment_name, git_commit, log_params, start_run


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m entrypoints.main", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--category", default="all", help="a category, or 'all' (default)")
    parser.add_argument("--preset", default="tiny", choices=("tiny", "paper"), help="stage presets (default tiny)")
    parser.add_argument("--data-dir", "--data_dir", default="", help="upstream-layout data directory (default: bundled)")
    parser.add_argument("--out", default="reports/latest", help="where the comparison report goes")
    return parser.parse_args(argv)


def run_category(category: str, args: argparse.Namespace, driver_run_id: str) -> None:
    """Run every stage of one category as children of a ``pipeline`` run in the category's experiment."""
    import mlflow

    client = mlflow.MlflowClient()
    parent = client.create_run(
        ensure_experiment(experiment_name(category)),
        run_name=f"pipeline-{args.preset}",
        tags={"category": category, "stage": "pipeline", "source": args.preset, "entry_point": "main",
              "git_commit": git_commit(), "mlflow.parentRunId": driver_run_id},
    )
    status = "FAILED"
    try:
        for step in plan(category, args.preset, args.data_dir or None):
            client.log_metric(parent.info.run_id, f"seconds_{step.name}", run_step(step, parent.info.run_id))
        status = "FINISHED"
    finally:
        client.set_terminated(parent.info.run_id, status)


def main(argv=None) -> Path:
    args = parse_args(argv)
    configure_environment()
    categories = list(CATEGORIES) if args.category == "all" else [args.category]
    if any(category not in CATEGORIES for category in categories):
        raise SystemExit(f"unknown category {args.category!r}; expected one of {', '.join(CATEGORIES)} or 'all'")

    # Under `mlflow run` this joins the run it opened for `main`; stage processes never see its id.
    with start_run(category="all", stage="main", source=args.preset, entry_point="main",
                   run_name=f"main-{args.preset}") as driver:
        import mlflow

        log_params({"category": args.category, "preset": args.preset, "data_dir": args.data_dir or "bundled"})
        for category in categories:
            run_category(category, args, driver.info.run_id)
        out = Path(args.out)
        run_step(Step("compare", "compare", ("--paper", "table1", "--category", args.category, "--out", str(out))),
                 driver.info.run_id)
        report = out / "report.md"
        mlflow.log_artifacts(str(out), "report")

    print("\n" + report.read_text(encoding="utf-8"))
    print(f"Report: {report.resolve()}")
    print(f"Runs:   mlflow ui --backend-store-uri {os.environ['MLFLOW_TRACKING_URI']}")
    return report


if __name__ == "__main__":
    main()
