"""The ``data`` stage: validate a category's files with great-expectations and log the result to MLflow.

    python -m minirec.data validate --category Industrial_and_Scientific
    python -m minirec.data validate --category all --data-dir /path/to/amazon18
    mlflow run . -e data -P category=all --env-manager local

Checks (reference-spec 1.1-1.4, see minirec.data.expectations): the splits' columns, ids, parsed histories,
SIDs and titles against index.json / item.json; info.txt, index.json and item.json against each other; no
train row in valid or test. Each category gets one run (tags category, stage=data, source=<data dir>,
entry_point=data) holding the summary as metrics, the data files' paths/rows/sha256, each split as a dataset
input with its digest, and ``validation/results.json``. A category that fails exits non-zero, prints each
failure as file, line, column and value, and its run ends FAILED.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from minirec.data.catalogue import read_split
from minirec.data.layout import CATEGORIES, SPLITS, CategoryFiles, DataLayoutError, default_data_dir, locate
from minirec.data.validate import ValidationReport, validate_category
from minirec.tracking import configure_environment, log_data_files, start_run

ENTRY_POINT = "data"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m minirec.data",
        description="Validate MiniOneRec category data (upstream layout) and log the result to MLflow.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser(
        "validate",
        help="run the great-expectations suites on one category or all",
        description="Exit status 0 when every check holds, 1 when any fails (each failure printed as "
        "file, line, column, value; CSV lines count the header as line 1).",
    )
    validate.add_argument(
        "--category", required=True,
        help=f"category folder under the data directory, or 'all' for {' and '.join(CATEGORIES)} (one run each)",
    )
    validate.add_argument(
        "--data-dir", "--data_dir", default=None,
        help="directory holding <Category>/{train,valid,test,index,info}; default $MINIREC_DATA_DIR or the "
        "bundled data/amazon18 (an empty value means the default)",
    )
    return parser.parse_args(argv)


def summary_metrics(report: ValidationReport) -> dict[str, float]:
    summary = report.summary
    metrics = {key: summary[key] for key in ("items", "distinct_sids", "collision_groups", "collision_items", "users")
               if key in summary}
    for level, codes in enumerate(summary.get("codes_per_level", []), start=1):
        metrics[f"codes_level_{level}"] = codes
    for split, numbers in summary.get("splits", {}).items():
        metrics[f"rows_{split}"] = numbers["rows"]
        metrics[f"users_{split}"] = numbers["users"]
    metrics["failed_expectations"] = len(report.failed)
    metrics["unexpected_values"] = sum(failed.unexpected_count for failed in report.failed)
    metrics["validation_seconds"] = summary.get("seconds", 0.0)
    return metrics


def log_split_datasets(files: CategoryFiles) -> None:
    """Each split as an MLflow dataset input (name <Category>/<split>, source its path, digest of its rows)."""
    import mlflow

    for split in SPLITS:
        path = files.split(split)
        dataset = mlflow.data.from_pandas(
            read_split(path, parse_histories=False), source=str(path.resolve()), name=f"{files.category}/{split}"
        )
        mlflow.log_input(dataset, context=split)


def validate_and_log(category: str, data_dir: Path, nested: bool = False) -> ValidationReport:
    """Validate one category, record it in its own MLflow run (ended FAILED when a check fails), print it."""
    import mlflow

    files = locate(category, data_dir)
    report = validate_category(files)
    with start_run(
        category=category, stage="data", source=str(data_dir), entry_point=ENTRY_POINT,
        run_name=f"data-{category}", nested=nested, tags={"validation": "passed" if report.ok else "failed"},
    ) as run:
        if report.ok:
            log_data_files(files)
            log_split_datasets(files)
        mlflow.log_metrics(summary_metrics(report))
        mlflow.log_dict(report.to_json(), "validation/results.json")
        mlflow.log_text(report.message() + "\n", "validation/summary.txt")
    if not report.ok:
        mlflow.MlflowClient().set_terminated(run.info.run_id, status="FAILED")
    print(report.message(), file=sys.stdout if report.ok else sys.stderr, flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_environment()
    data_dir = Path(args.data_dir or default_data_dir()).resolve()
    categories = CATEGORIES if args.category == "all" else (args.category,)
    try:
        if len(categories) > 1 and os.environ.get("MLFLOW_RUN_ID"):
            # Under `mlflow run` the entry point's run is the parent of one run per category.
            with start_run(category="all", stage="data", source=str(data_dir), entry_point=ENTRY_POINT):
                reports = [validate_and_log(category, data_dir, nested=True) for category in categories]
        else:
            reports = [validate_and_log(category, data_dir) for category in categories]
    except DataLayoutError as error:
        raise SystemExit(f"error: {error}") from error
    if not all(report.ok for report in reports):
        raise SystemExit(1)
    return 0


if __name__ == "__main__":
    main()
