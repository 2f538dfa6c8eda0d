"""Write a new data directory in the upstream layout for a new SID index (docs/upstream.md 1.1-1.4, 2.4).

    from minirec.sids.writer import write_data_dir
    new_files = write_data_dir(files, item_tokens, out_dir)    # -> out_dir/<Cat>/...

``index.json`` is the new index; ``item.json`` is copied; the info file and every CSV of train/valid/test
keep all their bytes except the SID fields (info column 0, ``history_item_sid``, ``item_sid``), which are
rebuilt from the item ids exactly as ``convert_dataset.py`` formats them. Everything is written into a
temporary folder beside the target and renamed into place only when complete, so a failure leaves either
the previous folder or nothing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Mapping

import pandas as pd

from minirec.atomic import atomic_directory
from minirec.data.catalogue import parse_list
from minirec.data.layout import SPLITS, CategoryFiles, locate
from minirec.sid import join_sid


class SidRewriteError(ValueError):
    """A data file refers to an item the new index does not cover, or has an unreadable id list."""


def _line_terminator(path: Path) -> str:
    with open(path, "rb") as handle:
        first_line = handle.readline()
    return "\r\n" if first_line.endswith(b"\r\n") else "\n"


def rewrite_split(source: Path, target: Path, item_sid: Mapping[int, str]) -> int:
    """Rewrite the SID columns of one split CSV from its item-id columns; return the row count."""
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)

    def sid_of(item: object, row: int, column: str) -> str:
        try:
            return item_sid[int(item)]
        except (KeyError, ValueError, TypeError):
            raise SidRewriteError(f"{source}: row {row + 2}, {column}: item {item!r} has no SID in the new index") from None

    histories = []
    for row, cell in enumerate(frame["history_item_id"]):
        ids = parse_list(cell)
        if ids is None:
            raise SidRewriteError(f"{source}: row {row + 2}, history_item_id: not a list literal: {cell[:80]!r}")
        histories.append(str([sid_of(item, row, "history_item_id") for item in ids]))
    frame["history_item_sid"] = histories
    frame["item_sid"] = [sid_of(item, row, "item_id") for row, item in enumerate(frame["item_id"])]
    frame.to_csv(target, index=False, lineterminator=_line_terminator(source))
    return len(frame)


def rewrite_info(source: Path, target: Path, item_sid: Mapping[int, str]) -> None:
    """Replace column 0 (the SID) of each ``sid<TAB>title<TAB>item_id`` line, keeping titles and order."""
    lines = []
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split("\t")
        try:
            parts[0] = item_sid[int(parts[-1])]
        except (KeyError, ValueError):
            raise SidRewriteError(f"{source}: line {number}: item id {parts[-1]!r} has no SID in the new index") from None
        lines.append("\t".join(parts))
    target.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _fill(folder: Path, files: CategoryFiles, item_tokens: Mapping[int, list[str]]) -> None:
    item_sid = {item: join_sid(tokens) for item, tokens in item_tokens.items()}
    category = files.category
    (folder / "index").mkdir(parents=True)
    index = {str(item): list(item_tokens[item]) for item in sorted(item_tokens)}
    (folder / "index" / files.index.name).write_text(json.dumps(index), encoding="utf-8")
    shutil.copy2(files.items, folder / "index" / files.items.name)
    (folder / "info").mkdir()
    rewrite_info(files.info, folder / "info" / files.info.name, item_sid)
    for split in SPLITS:
        (folder / split).mkdir()
        for source in sorted((files.root / split).glob(f"{category}*.csv")):
            rewrite_split(source, folder / split / source.name, item_sid)


def write_data_dir(files: CategoryFiles, item_tokens: Mapping[int, list[str]], out_dir: str | os.PathLike) -> CategoryFiles:
    """Write ``out_dir/<Cat>/`` for ``item_tokens`` and return its located files."""
    out_dir = Path(out_dir).resolve()
    target = out_dir / files.category
    if target.resolve() == files.root.resolve():
        raise ValueError(f"refusing to overwrite the input data {files.root}; choose another --out")
    with atomic_directory(target) as staging:
        _fill(staging, files, item_tokens)
    return locate(files.category, out_dir)
