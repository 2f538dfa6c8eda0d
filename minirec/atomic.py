"""Atomic writes: write to a temporary name beside the target, then rename.

A reader (or a resumed run) therefore sees either the old file or folder or the complete new one, never half
of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``target``.

    Use it for writers that want a path rather than a file object (pandas, pyarrow, matplotlib).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, mode: int | None = None) -> Iterator[Path]:
    """Yield an empty staging folder beside ``target``; on success it replaces ``target`` whole.

    The old folder is moved aside before the new one is renamed in and deleted after, so ``target`` never holds
    a mix of both. ``mode`` sets the folder's permissions (``mkdtemp`` makes it owner-only).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    if mode is not None:
        staging.chmod(mode)
    try:
        yield staging
        if target.exists():
            previous = target.with_name(f".{target.name}.previous")
            shutil.rmtree(previous, ignore_errors=True)
            os.replace(target, previous)
            os.replace(staging, target)
            shutil.rmtree(previous)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_text(target: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_json(target: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``target`` atomically (UTF-8, keys kept in insertion order)."""
    return write_text(target, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")
