"""Atomic writes: write to a temporary name beside the target, then rename.

A reader (or a resumed run) therefore sees either the old file or folder or the complete new one, never half
of it. The result gets the permissions a plain ``open``/``mkdir`` would give (``0o666`` / ``0o777`` less the
umask), not the owner-only mode of :mod:`tempfile`'s staging names.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read-by-setting (restored at once)
    os.umask(mask)
    return mask


def default_mode(folder: bool = False) -> int:
    """The mode a plain ``open(path, "w")`` (``0o666``) or ``mkdir`` (``0o777``) gives under the umask."""
    return (0o777 if folder else 0o666) & ~current_umask()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``target``.

    Use it for writers that want a path rather than a file object (pandas, pyarrow, matplotlib).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.fchmod(fd, default_mode())  # mkstemp makes it 0600; the finished file reads like any other
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
    a mix of both. ``mode`` sets the folder's permissions; by default it gets ``0o777`` less the umask, as a
    plain ``mkdir`` would (``mkdtemp`` makes it owner-only).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    staging.chmod(default_mode(folder=True) if mode is None else mode)
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
