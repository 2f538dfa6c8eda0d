"""Settings of the compare stage: which paper table, which runs, which category, where the report goes.

    python -m minirec.compare --paper table1 --print_config
"""

from __future__ import annotations

from dataclasses import dataclass

from minirec.compare import PAPER_TABLES
from minirec.data.layout import CATEGORIES
from minirec.settings import StageSettings, setting


@dataclass
class CompareSettings(StageSettings):
    STAGE = "compare"

    category: str = setting("all", "compare only this category's runs, or all", choices=(*CATEGORIES, "all"))
    paper: str = setting("table1", "paper table to compare with", choices=tuple(sorted(PAPER_TABLES)))
    run_ids: list = setting([], "scored runs to compare, comma- or space-separated (default: the latest FINISHED "
                            "run tagged scored=true per category and stage, across all experiments)",
                            aliases=("run_id", "run-ids"))
    output_dir: str = setting("reports/latest", "folder for comparison.csv, report.md and the figures, replaced "
                              "whole", aliases=("out",))
