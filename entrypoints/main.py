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
from minirec.tracking import configure_environment, start_run


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m entrypoints.main", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--category", default="all", help="a category, or 'all' (default)")
    parser.add_argument("--preset", default="tiny", choices=("tiny", "paper"), help="stage presets (default tiny)")
    parser.add_argument("--data-dir", "--data_dir", default="", help="upstream-layout data directory (default: bundled)")
    parser.add_argument("--out", default="reports/latest", help="where the comparison report goes")
    return parser.parse_args(argv)


def main(argv=None) -> Path:
    args = parse_args(argv)
    configure_environment()
    categories = list(CATEGORIES) if args.category == "all" else [args.category]
    if any(category not in CATEGORIES for category in categories):
        raise SystemExit(f"unknown category {args.category!r}; expected one of {', '.join(CATEGORIES)} or 'all'")
    driver_run_id = os.environ.pop("MLFLOW_RUN_ID", None)

    for category in categories:
        with start_run(category=category, stage="pipeline", source=args.preset, entry_point="main",
                       run_name=f"pipeline-{args.preset}", parent_run_id=driver_run_id) as parent:
            for step in plan(category, args.preset, args.data_dir or None):
                seconds = run_step(step, parent.info.run_id)
                import mlflow

                mlflow.log_metric(f"seconds_{step.name}", seconds)

    out = Path(args.out)
    compare = Step("compare", "compare", ("--paper", "table1", "--category", args.category, "--out", str(out)))
    run_step(compare, driver_run_id or "")
    report = out / "report.md"
    print("\n" + report.read_text(encoding="utf-8"))
    print(f"Report: {report.resolve()}")
    print(f"Runs:   mlflow ui --backend-store-uri {os.environ['MLFLOW_TRACKING_URI']}")
    return report


if __name__ == "__main__":
    main()
