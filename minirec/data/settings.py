"""Settings of the data stage: which category (or all) and which data directory to validate.

    python -m minirec.data --category all --print_config
"""

from __future__ import annotations

from dataclasses import dataclass

from minirec.data.layout import CATEGORIES
from minirec.settings import StageSettings, setting


@dataclass
class DataSettings(StageSettings):
    STAGE = "data"

    category: str = setting("all", "category to validate, or all (one run each)", choices=(*CATEGORIES, "all"))
