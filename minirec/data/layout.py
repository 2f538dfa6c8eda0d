"""Where a category's files live in the upstream MiniOneRec layout, and which train file a run uses.

The layout (docs/upstream.md 1.1-1.4), under ``DATA_DIR/<Cat>/``::

    train/<Cat>_5_2016-10-2018-11.csv          the full official train split (users who have it)
    train/<Cat>_5_2016-10-2018-11.partial.csv  the partial split bundled with minirec (data/README.md)
    valid/<Cat>_5_2016-10-2018-11.csv
    test/<Cat>_5_2016-10-2018-11.csv
    index/<Cat>.index.json                     item id -> SID tokens
    index/<Cat>.item.json                      item id -> title, description, brand, categories
    info/<Cat>_5_2016-10-2018-11.txt           sid<TAB>title<TAB>item_id per item

The bundled copy is ``data/amazon18`` in the project; ``--data-dir`` or ``MINIREC_DATA_DIR`` points elsewhere.
``--data-dir`` may also name a ``sids`` run (its id or ``runs:/<id>``): the run's ``data/`` artifacts, a data
directory in this layout, are downloaded once into ``.cache/sids/<run id>`` (:func:`resolve_data_dir`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from minirec.errors import NotFoundError, UserError
from minirec.refs import run_id_in

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_DATA_DIR = PROJECT_ROOT / "data" / "amazon18"
CATEGORIES = ("Industrial_and_Scientific", "Office_Products")
# Upstream hard-codes this suffix whatever window was used (docs/upstream.md 1.1, 2.5).
FILE_SUFFIX = "_5_2016-10-2018-11"
SPLITS = ("train", "valid", "test")
DATA_ARTIFACT = "data"  # where a sids run logs its new data directory
SIDS_CACHE = PROJECT_ROOT / ".cache" / "sids"


class DataLayoutError(UserError, FileNotFoundError):
    """A category's folder or one of its required files is missing."""


def default_data_dir() -> Path:
    """``$MINIREC_DATA_DIR`` if set, else the bundled ``data/amazon18``."""
    return Path(os.environ.get("MINIREC_DATA_DIR") or BUNDLED_DATA_DIR)


@dataclass(frozen=True)
class CategoryFiles:
    """The files of one category, resolved and checked to exist."""

    category: str
    root: Path
    train: Path
    valid: Path
    test: Path
    index: Path
    items: Path
    info: Path

    @property
    def train_is_partial(self) -> bool:
        return self.train.name.endswith(".partial.csv")

    @property
    def data_dir_label(self) -> str:
        """``bundled`` for the project's own data, else the data directory's path."""
        return "bundled" if self.root.parent.resolve() == BUNDLED_DATA_DIR.resolve() else str(self.root.parent)

    def relative(self, path: str | os.PathLike) -> str:
        """``path`` relative to the data directory (``<Cat>/train/...``), as reports show it."""
        path = Path(path)
        try:
            return str(path.resolve().relative_to(self.root.parent.resolve()))
        except ValueError:
            return path.name

    def split(self, name: str) -> Path:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def all_files(self) -> dict[str, Path]:
        """Every file a run may read, keyed by role (train, valid, test, index, items, info)."""
        return {role: getattr(self, role) for role in ("train", "valid", "test", "index", "items", "info")}


def locate(category: str, data_dir: str | os.PathLike | None = None) -> CategoryFiles:
    """Resolve a category's files under ``data_dir`` (default :func:`default_data_dir`).

    The full official train CSV is preferred; the partial one is used only when the full one is absent.
    ``data_dir`` may be a sids run id or ``runs:/`` URI (:func:`resolve_data_dir`).
    """
    base = resolve_data_dir(data_dir) or default_data_dir()  # "" (an unset -P) means the default
    root = base / category
    if not root.is_dir():
        known = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        raise DataLayoutError(
            f"no folder for category {category!r} under {base} (found: {', '.join(known) or 'nothing'}); "
            "point --data-dir at a directory in the upstream MiniOneRec layout"
        )
    stem = f"{category}{FILE_SUFFIX}"
    full_train = root / "train" / f"{stem}.csv"
    partial_train = root / "train" / f"{stem}.partial.csv"
    files = CategoryFiles(
        category=category,
        root=root,
        train=full_train if full_train.exists() else partial_train,
        valid=root / "valid" / f"{stem}.csv",
        test=root / "test" / f"{stem}.csv",
        index=root / "index" / f"{category}.index.json",
        items=root / "index" / f"{category}.item.json",
        info=root / "info" / f"{stem}.txt",
    )
    missing = [f"{role}: {path}" for role, path in files.all_files().items() if not path.exists()]
    if missing:
        raise DataLayoutError(f"missing files for {category} under {root}:\n  " + "\n  ".join(missing))
    return files


_DIGESTS: dict[tuple, str] = {}  # (path, device, inode, size, mtime in ns) -> sha256, for this process


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (remembered for this process while the file's size and mtime stay the
    same, so validation and the run's data records hash each file once)."""
    path = Path(path).resolve()
    info = path.stat()
    key = (str(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    if key in _DIGESTS:
        return _DIGESTS[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def count_csv_rows(path: str | os.PathLike) -> int:
    """Data rows of a CSV (pandas-parsed, so quoted newlines count once)."""
    import pandas as pd

    return len(pd.read_csv(path, usecols=[0]))


def file_record(path: str | os.PathLike) -> dict:
    """What a run records about a file it read: path, sha256, and rows for CSVs."""
    path = Path(path)
    record = {"path": str(path.resolve()), "sha256": sha256_of(path)}
    if path.suffix == ".csv":
        record["rows"] = count_csv_rows(path)
    return record


def resolve_data_dir(ref: str | os.PathLike | None, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """A local data directory for ``ref``: ``None``/``""`` stay ``None`` (the default), a folder is itself, and
    a sids run (id or ``runs:/<id>``) has its ``data/`` artifacts downloaded once into ``cache_dir/<run id>``
    (default ``.cache/sids``), swapped in whole so a half download is never used."""
    if ref is None or str(ref) == "":
        return None
    if Path(ref).is_dir():
        return Path(ref)
    run_id = run_id_in(ref)
    if run_id is None:
        raise DataLayoutError(f"data_dir {str(ref)!r} is neither an existing folder nor a sids run id / runs:/ URI")
    target = Path(cache_dir or SIDS_CACHE) / run_id
    if (target / DATA_ARTIFACT).is_dir():
        return target / DATA_ARTIFACT
    import mlflow

    from minirec.atomic import atomic_directory
    from minirec.refs import get_run

    run = get_run(run_id)
    if run.data.tags.get("stage") != "sids":
        raise NotFoundError(f"data_dir {run_id}: that run is a {run.data.tags.get('stage')!r} run, not a sids run; "
                            "it holds no data directory")
    with atomic_directory(target) as staging:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=DATA_ARTIFACT, dst_path=str(staging))
        if not Path(local).is_dir():
            raise NotFoundError(f"data_dir {run_id}: the sids run has no '{DATA_ARTIFACT}/' artifact folder")
    return target / DATA_ARTIFACT
