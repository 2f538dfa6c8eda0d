"""Beam outputs on disk: the harness Parquet format and upstream's result JSON.

``python -m minirec.score --predictions FILE --category CAT`` reads either format (docs/upstream.md 6.3-6.4).

Harness Parquet, one row per evaluated sample:

    row       int64         0-based row of the sample in the split CSV
    user_id   string        the CSV's user_id (null when unknown)
    target    string        the target SID, without the trailing newline
    predict   list<string>  ranked SIDs, best first
    scores    list<double>  beam scores, same length as predict; null for non-model baselines
    prompt    string        optional: the prompt the model saw

Upstream JSON (what ``evaluate.py`` writes and ``calc.py`` reads): a list of
``{"input": prompt, "output": "<sid>\\n", "predict": [ranked strings]}``.

Strings are kept exactly as stored: the upstream stripping rules are part of scoring (:mod:`minirec.metrics`),
so reading never changes a number.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from minirec.atomic import atomic_path, write_text
from minirec.errors import UserError

REQUIRED_COLUMNS = ("row", "user_id", "target", "predict")
SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("user_id", pa.string()),
        ("target", pa.string()),
        ("predict", pa.list_(pa.string())),
        ("scores", pa.list_(pa.float64())),
    ]
)
PROMPT_FIELD = pa.field("prompt", pa.string())
_PARQUET_MAGIC = b"PAR1"
_SEQUENCES = (list, tuple, np.ndarray)


class BeamFormatError(UserError, ValueError):
    """A predictions file (or frame) that does not follow one of the two formats; says file, row and field."""

    def __init__(self, source: str | os.PathLike, message: str, row: int | None = None, field: str | None = None):
        where = str(source)
        if row is not None:
            where += f", row {row}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")
        self.source, self.row, self.field = str(source), row, field


def write_beams(path: str | os.PathLike, frame: pd.DataFrame) -> Path:
    """Write ``frame`` as harness Parquet, atomically; ``scores`` may be absent or null (baselines)."""
    check_frame(frame, source="frame passed to write_beams")
    columns = {name: frame[name] for name in REQUIRED_COLUMNS}
    columns["scores"] = frame["scores"] if "scores" in frame.columns else [None] * len(frame)
    schema = SCHEMA
    if "prompt" in frame.columns:
        columns["prompt"] = frame["prompt"]
        schema = schema.append(PROMPT_FIELD)
    arrays = [pa.array(_cells(name, col), type=schema.field(name).type) for name, col in columns.items()]
    table = pa.Table.from_arrays(arrays, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def write_upstream_json(path: str | os.PathLike, frame: pd.DataFrame) -> Path:
    """Write ``frame`` in upstream's result format (``output`` gets the trailing newline evaluate.py writes)."""
    check_frame(frame, source="frame passed to write_upstream_json")
    prompts = frame["prompt"] if "prompt" in frame.columns else [""] * len(frame)
    records = [
        {"input": prompt or "", "output": f"{target}\n", "predict": _plain_list(predict)}
        for prompt, target, predict in zip(prompts, frame["target"], frame["predict"])
    ]
    return write_text(path, json.dumps(records, indent=2, ensure_ascii=False) + "\n")


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """Read harness Parquet or upstream JSON into the harness frame (columns as in the module docstring).

    Upstream JSON has no user ids: ``user_id`` is null and ``row`` is the position in the list.
    Raises :class:`BeamFormatError` naming the file, row and field of the first problem.
    """
    path = Path(path)
    if not path.is_file():
        raise BeamFormatError(path, "no such file")
    with open(path, "rb") as handle:
        is_parquet = handle.read(4) == _PARQUET_MAGIC
    frame = _read_parquet(path) if is_parquet else _read_upstream_json(path)
    check_frame(frame, source=path)
    return frame


def check_frame(frame: pd.DataFrame, source: str | os.PathLike) -> None:
    """Check columns and per-row types of a harness frame; the error names ``source``, the row and the field."""
    missing = [name for name in REQUIRED_COLUMNS if name not in frame.columns]
    if missing:
        have = ", ".join(map(str, frame.columns))
        raise BeamFormatError(source, f"missing column(s) {', '.join(missing)}; have {have}", field=missing[0])
    if not pd.api.types.is_integer_dtype(frame["row"]):
        raise BeamFormatError(source, f"row must hold integers, got dtype {frame['row'].dtype}", field="row")
    scores = frame["scores"] if "scores" in frame.columns else [None] * len(frame)
    cells = zip(frame["user_id"], frame["target"], frame["predict"], scores)
    for position, (user, target, predict, score) in enumerate(cells):
        problem = _row_problem(user, target, predict, score)
        if problem:
            field, message = problem
            raise BeamFormatError(source, message, row=position, field=field)


def _row_problem(user, target, predict, score) -> tuple[str, str] | None:
    """``(field, message)`` for the first malformed cell of one row, or ``None``."""
    if not _is_null(user) and not isinstance(user, str):
        return "user_id", f"user_id must be a string or null, got {type(user).__name__}"
    if not isinstance(target, str):
        return "target", f"target must be a string, got {type(target).__name__}"
    if not isinstance(predict, _SEQUENCES):
        return "predict", f"predict must be a list of strings, got {type(predict).__name__}"
    for rank, value in enumerate(predict):
        if not isinstance(value, str):
            return "predict", f"predict[{rank}] must be a string, got {type(value).__name__}"
    scores_fit = len(score) == len(predict) if isinstance(score, _SEQUENCES) else _is_null(score)
    if not scores_fit:
        return "scores", "scores must be null or a list as long as predict"
    return None


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise BeamFormatError(path, f"unreadable Parquet: {error}") from error
    missing = [name for name in REQUIRED_COLUMNS if name not in table.column_names]
    if missing:
        have = ", ".join(table.column_names)
        raise BeamFormatError(path, f"missing column(s) {', '.join(missing)}; have {have}", field=missing[0])
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    columns.setdefault("scores", [None] * table.num_rows)
    frame = pd.DataFrame(columns)
    frame["row"] = frame["row"].astype("int64")
    return frame


def _read_upstream_json(path: Path) -> pd.DataFrame:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BeamFormatError(path, f"neither Parquet nor valid JSON ({error})") from error
    if not isinstance(records, list):
        kind = type(records).__name__
        raise BeamFormatError(path, f"expected a JSON list of {{input, output, predict}} objects, got {kind}")
    targets, predicts, prompts = [], [], []
    for position, record in enumerate(records):
        if not isinstance(record, dict):
            raise BeamFormatError(path, f"expected an object, got {type(record).__name__}", row=position)
        for name in ("predict", "output"):
            if name not in record:
                raise BeamFormatError(path, "missing", row=position, field=name)
        if not isinstance(record["output"], str):
            message = f"output must be the target SID string, got {type(record['output']).__name__}"
            raise BeamFormatError(path, message, row=position, field="output")
        targets.append(record["output"])
        predicts.append(record["predict"])
        prompts.append(record.get("input"))
    return pd.DataFrame(
        {
            "row": pd.Series(range(len(records)), dtype="int64"),
            "user_id": pd.Series([None] * len(records), dtype=object),
            "target": pd.Series(targets, dtype=object),
            "predict": pd.Series(predicts, dtype=object),
            "scores": pd.Series([None] * len(records), dtype=object),
            "prompt": pd.Series(prompts, dtype=object),
        }
    )


def _cells(name: str, column) -> list:
    """A column's cells as plain Python values for pyarrow (lists for list columns, ``None`` for nulls)."""
    if name in ("predict", "scores"):
        return [_plain_list(value) for value in column]
    if name == "row":
        return [int(value) for value in column]
    return [None if _is_null(value) else value for value in column]


def _is_null(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _plain_list(value):
    """A list cell as a plain Python list (tuples and NumPy arrays included); nulls become ``None``."""
    if isinstance(value, list):
        return value
    if not isinstance(value, _SEQUENCES) and _is_null(value):
        return None
    return [v.item() if isinstance(v, np.generic) else v for v in value]
