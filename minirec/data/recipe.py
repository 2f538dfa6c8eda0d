"""The data stage: validate a category's files with great-expectations and log the result to MLflow.

    python -m minirec.data --category Industrial_and_Scientific
    python -m minirec.data --category all --data_dir /path/to/amazon18
    mlflow run . -e data -P category=all --env-manager local

Checks (docs/upstream.md 1.1-1.4, see :mod:`minirec.data.expectations`): the splits' columns, ids, parsed
histories, SIDs and titles against index.json / item.json; info.txt, index.json and item.json against each
other; no train row in valid or test. Each category gets one run (tags category, stage=data, source=<data
dir>) holding the summary as metrics, ``validation/results.json``, and, when valid, the data files'
paths/rows/sha256 and each split as a dataset input with its digest. A category that fails prints each failure
as file, line, column and value, ends its run FAILED and exits with status 1.
"""

from __future__ import annotations

import sys

from minirec.data.layout import SPLITS
from minirec.data.settings import DataSettings
from minirec.errors import DataInvalid
from minirec.stage import Recipe


def summary_metrics(report) -> dict[str, float]:
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


class DataRecipe(Recipe):
    stage = "data"
    settings_class = DataSettings
    module = "minirec.data"

    def complete(self) -> None:
        from minirec.data import locate

        self.located = locate(self.settings.category, self.settings.data_dir or None)

    def files(self):
        return None  # logged after validation: files that fail it may not even parse

    def source(self) -> str:
        return str(self.located.root.parent.resolve())

    def run_name(self) -> str:
        return f"data-{self.settings.category}"

    def run(self) -> None:
        from minirec.data.validate import validate_category

        self.report = validate_category(self.located)

    def log(self) -> None:
        import mlflow

        from minirec.tracking import log_data

        report = self.report
        mlflow.set_tag("validation", "passed" if report.ok else "failed")
        mlflow.log_metrics(summary_metrics(report))
        mlflow.log_dict(report.to_json(), "validation/results.json")
        mlflow.log_text(report.message() + "\n", "validation/summary.txt")
        print(report.message(), file=sys.stdout if report.ok else sys.stderr, flush=True)
        if not report.ok:
            raise DataInvalid(f"{self.settings.category} failed validation ({len(report.failed)} checks)")
        log_data(self.located, splits=SPLITS)
