"""Reading a category: the sequence splits (parsed) and the item catalogue (SIDs, titles, info lines).

The CSV history columns are Python-literal lists stored as strings (docs/upstream.md 1.1); they are parsed
with ``ast.literal_eval`` (never ``eval``) into the ``*_list`` columns added by :func:`read_split`.
"""

from __future__ import annotations

import ast
import json
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from minirec.data.layout import CategoryFiles
from minirec.sid import join_sid

SPLIT_COLUMNS = (
    "user_id",
    "history_item_title",
    "item_title",
    "history_item_id",
    "item_id",
    "history_item_sid",
    "item_sid",
)
HISTORY_COLUMNS = ("history_item_title", "history_item_id", "history_item_sid")


def parse_list(text: str):
    """Parse a history cell; returns ``None`` when it is not a Python-literal list."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, list) else None


def read_split(path: str | Path, parse_histories: bool = True) -> pd.DataFrame:
    """Read one split CSV with every column as text (``keep_default_na=False`` keeps titles like "NA").

    With ``parse_histories`` it adds ``history_item_title_list``, ``history_item_id_list`` and
    ``history_item_sid_list``; a cell that does not parse becomes ``None`` (validation reports it).
    """
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if parse_histories:
        for column in HISTORY_COLUMNS:
            if column in frame.columns:
                frame[f"{column}_list"] = frame[column].map(parse_list)
    return frame


@dataclass
class Catalogue:
    """A category's items: id -> SID tokens, id -> features, and the info file's lines."""

    item_tokens: dict[int, list[str]]
    items: dict[int, dict]
    info_lines: list[tuple[str, str, str]] = field(default_factory=list)

    @classmethod
    def load(cls, files: CategoryFiles) -> "Catalogue":
        index = json.loads(Path(files.index).read_text(encoding="utf-8"))
        items = json.loads(Path(files.items).read_text(encoding="utf-8"))
        info_lines = []
        for line in Path(files.info).read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            info_lines.append(tuple(parts) if len(parts) == 3 else tuple(parts + [""] * (3 - len(parts))))
        return cls(
            item_tokens={int(k): v for k, v in index.items()},
            items={int(k): v for k, v in items.items()},
            info_lines=info_lines,
        )

    @cached_property
    def item_sid(self) -> dict[int, str]:
        """Item id -> concatenated SID string."""
        return {item: join_sid(tokens) for item, tokens in self.item_tokens.items()}

    @cached_property
    def sid_items(self) -> dict[str, list[int]]:
        """SID string -> the item ids that carry it (more than one for a collision group)."""
        groups: dict[str, list[int]] = defaultdict(list)
        for item, sid in sorted(self.item_sid.items()):
            groups[sid].append(item)
        return dict(groups)

    @cached_property
    def valid_sids(self) -> frozenset[str]:
        """The SID set upstream's ``calc.py`` treats as valid: column 0 of the info file (docs/upstream.md 6.4)."""
        return frozenset(line[0] for line in self.info_lines)

    @property
    def collision_groups(self) -> dict[str, list[int]]:
        """SIDs shared by several items."""
        return {sid: ids for sid, ids in self.sid_items.items() if len(ids) > 1}

    def codes_per_level(self) -> list[int]:
        """Distinct codes used at each SID level (level 1 first)."""
        depth = max(len(tokens) for tokens in self.item_tokens.values())
        return [len({tokens[level] for tokens in self.item_tokens.values() if len(tokens) > level}) for level in range(depth)]

    def title(self, item: int) -> str:
        return self.items[item]["title"]
