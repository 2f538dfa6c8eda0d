"""Settings of the baselines stage: which method(s), which category(ies), which split, how many SIDs.

    python -m minirec.baselines --category all --method all --print_config
"""

from __future__ import annotations

from dataclasses import dataclass

from minirec.baselines.floors import METHODS
from minirec.data.layout import CATEGORIES
from minirec.settings import StageSettings, setting


@dataclass
class BaselineSettings(StageSettings):
    STAGE = "baselines"

    category: str = setting("all", "category to rank, or all (one run per category and method)",
                            choices=(*CATEGORIES, "all"))
    method: str = setting("all", "baseline to run, or all", choices=(*METHODS, "all"))
    split: str = setting("test", "rows to rank", choices=("valid", "test"))
    num_beams: int = setting(50, "ranking length (SIDs per row)", minimum=1, maximum=1000)

    def methods(self) -> tuple[str, ...]:
        return METHODS if self.method == "all" else (self.method,)
