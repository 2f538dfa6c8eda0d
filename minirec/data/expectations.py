"""What a valid category is: great-expectations suites over frames derived from its files.

    python -m minirec.data --category Office_Products

The rules are docs/upstream.md 1.1-1.4, each a stock GX Expectation run on a whole pandas frame. The frames
are the files reshaped so that every rule is a column check: one row per CSV row (``rows``); one row per
item a CSV row mentions, target and history entries alike (``entries``); one row per held-out row keyed for
the train-overlap check (``heldout``); one row per info line (``info``), per index.json key (``index``) and
per item.json key (``items``). Derived columns, computed here with pandas, hold what a value is compared
with (the index.json SID of the row's item id, the parsed history length).

A frame's locator columns (``line``: the 1-based file line, a CSV header being line 1; ``item``: a JSON
key; ``position``: 0 for the target, k for history entry k) say where an unexpected value sits. Each
expectation's ``meta`` names the file column it reports (``column``, ``history_column`` for history entries),
the frame column whose value to show (``value``) and a template of the evidence (``evidence``), so
:mod:`minirec.data.validate` can write "file, line, column, value" for any failure.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd

from minirec.data.catalogue import HISTORY_COLUMNS, SPLIT_COLUMNS, parse_list, read_split
from minirec.data.layout import CategoryFiles
from minirec.sid import SID_PATTERN

# The language of minirec.sid.SID_PATTERN, without its capture group (pandas warns about groups in a match).
SID_REGEX = r"^(?:<[a-z]_\d+>)+$"
# One token per level, in level order: <a_*>, then <b_*>, ... (a prefix reused at another level, as in
# <a_60><a_60><c_203>, is refused). Values that are not SID-shaped at all pass here: SID_REGEX reports them.
_LEVELS = "abcdefghijklmnopqrstuvwxyz"
LEVEL_ORDER_REGEX = (r"^(?:(?!(?:<[a-z]_\d+>)+$).*|" + "".join(f"<{c}_\\d+>(?:" for c in _LEVELS)
                     + ")?" * len(_LEVELS) + ")$")
USER_ID_PATTERN = r"^A\d+$"
ITEM_ID_PATTERN = r"^\d+$"
MAX_HISTORY = 10  # upstream's sliding window keeps at most 10 previous items (docs/upstream.md 2.3)
LEVEL_ORDER_RULE = "has one token per level, in level order (<a_*><b_*><c_*>...)"
INFO_FIELDS = 3  # sid, title, item id (docs/upstream.md 1.4)
# Pair checks skip rows where one side is missing: a missing counterpart is reported once, by its own rule.
PAIR = {"ignore_row_if": "either_value_is_missing"}


class UnreadableFileError(ValueError):
    """A file that cannot be parsed at all (not JSON, not CSV, not UTF-8); ``line`` when the parser knows it."""

    def __init__(self, path: Path, reason: str, line: int | None = None):
        super().__init__(f"{path}{f', line {line}' if line else ''}: {reason}")
        self.path, self.reason, self.line = Path(path), reason, line


def _read_text(path: Path) -> str:
    """A file's text, or :class:`UnreadableFileError` naming it (not UTF-8, a folder, no permission)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UnreadableFileError(path, f"not UTF-8: {error}") from error
    except OSError as error:
        raise UnreadableFileError(path, f"cannot be read: {error.strerror or error}") from error


def _read_json(path: Path):
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UnreadableFileError(path, f"not JSON: {error.msg} (column {error.colno})", error.lineno) from error


def _text(value) -> str:
    """A list element as the text the CSV would hold: strings as they are, anything else as its literal."""
    return value if isinstance(value, str) else repr(value)


def _id_text(value) -> str:
    """A history item id as text: ints in decimal; anything else (a string, a float) as its literal, which
    then fails the item-id pattern."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else repr(value)


@dataclass(frozen=True)
class SplitTable:
    """One split CSV as read (every column text) with its history columns parsed (``None`` if unparsable)."""

    path: Path
    raw: pd.DataFrame
    histories: dict[str, pd.Series]

    @classmethod
    def read(cls, path: Path) -> "SplitTable":
        try:
            raw = read_split(path, parse_histories=False).fillna("")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
            raise UnreadableFileError(path, f"not a CSV: {error}") from error
        except OSError as error:
            raise UnreadableFileError(path, f"cannot be read: {error.strerror or error}") from error
        histories = {column: raw[column].map(parse_list) for column in HISTORY_COLUMNS if column in raw.columns}
        return cls(Path(path), raw, histories)

    @property
    def lines(self) -> pd.Series:
        """File line of each data row (the header is line 1)."""
        return pd.Series(self.raw.index + 2, index=self.raw.index, dtype="int64")

    @property
    def has_split_columns(self) -> bool:
        return set(SPLIT_COLUMNS) <= set(self.raw.columns)

    def history_lengths(self, column: str) -> pd.Series:
        return self.histories[column].map(len, na_action="ignore").astype("Int64")

    def row_keys(self) -> pd.Series:
        """Row identity for the overlap check: user, history item ids and target id."""
        ids = self.histories["history_item_id"]
        history = ids.map(str, na_action="ignore").fillna(self.raw["history_item_id"])
        return self.raw["user_id"] + " " + history + " -> " + self.raw["item_id"]


@dataclass(frozen=True)
class CatalogueFiles:
    """index.json, item.json and the info file as read, item ids kept as text so bad ones can be reported."""

    index: dict
    items: dict
    info: list[list[str]]

    @classmethod
    def read(cls, files: CategoryFiles) -> "CatalogueFiles":
        """Raises :class:`UnreadableFileError` for a file that cannot be parsed."""
        index, items = _read_json(files.index), _read_json(files.items)
        for path, content in ((files.index, index), (files.items, items)):
            if not isinstance(content, dict):
                found = type(content).__name__
                raise UnreadableFileError(path, f"expected a JSON object keyed by item id, found {found}")
        text = _read_text(files.info)
        return cls(index, items, [line.split("\t") for line in text.splitlines()])

    @cached_property
    def index_sid(self) -> dict[str, str]:
        """Item id -> its index.json SID, tokens concatenated (a malformed entry as its JSON text)."""
        return {
            key: "".join(tokens) if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)
            else json.dumps(tokens)
            for key, tokens in self.index.items()
        }

    @cached_property
    def index_tokens(self) -> dict[str, list[str]]:
        """Item id -> its index.json tokens, for entries that are lists of strings."""
        return {key: tokens for key, tokens in self.index.items()
                if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)}

    @cached_property
    def usual_length(self) -> int | None:
        """The most common number of tokens of an index.json SID (the shorter on a tie)."""
        counts = Counter(len(tokens) for tokens in self.index_tokens.values())
        return min(counts, key=lambda n: (-counts[n], n)) if counts else None

    def odd_lengths(self) -> dict[str, str]:
        """Item id -> why its SID length does not fit the catalogue, for the fewer exceptions of two readings:

        - upstream's dedup (docs/upstream.md 3.4): every SID has the shortest length L, or L + 1 when its first L
          tokens are a path that several items share and no SID stops at (every item of it got a ``<d_r>``);
        - one length for all: every SID has the most common length.

        A catalogue that fits either reading has no exceptions; otherwise the reading that explains more SIDs
        names the rest."""
        tokens, usual = self.index_tokens, self.usual_length
        if usual is None:
            return {}
        shortest = min(len(t) for t in tokens.values())
        full = {"".join(t) for t in tokens.values() if len(t) == shortest}
        extended = Counter("".join(t[:shortest]) for t in tokens.values() if len(t) == shortest + 1)
        dedup = {key: f"{len(t)} tokens; the other SIDs have {shortest}, or {shortest + 1} only as upstream's "
                      "dedup token on a path several items share"
                 for key, t in tokens.items()
                 if not (len(t) == shortest or (len(t) == shortest + 1 and extended["".join(t[:shortest])] >= 2
                                                and "".join(t[:shortest]) not in full))}
        single = {key: f"{len(t)} tokens; most index.json SIDs have {usual}"
                  for key, t in tokens.items() if len(t) != usual}
        return dedup if len(dedup) <= len(single) else single

    @cached_property
    def title(self) -> dict[str, str]:
        """Item id -> its item.json title (entries without a text title are left out)."""
        return {
            key: item["title"]
            for key, item in self.items.items()
            if isinstance(item, dict) and isinstance(item.get("title"), str)
        }

    @cached_property
    def info_ids(self) -> set[str]:
        return {fields[2] for fields in self.info if len(fields) > 2}


# Frames ----------------------------------------------------------------------------------------------------


def rows_frame(table: SplitTable) -> pd.DataFrame:
    """One row per CSV row: user id, and per history column the raw text if unparsable and the list length."""
    frame = pd.DataFrame({"line": table.lines, "user_id": table.raw["user_id"]})
    for column in HISTORY_COLUMNS:
        parsed = table.histories[column]
        frame[column] = table.raw[column]
        frame[f"{column}_unparsable"] = table.raw[column].where(parsed.isna(), None)
        frame[f"{column}_length"] = table.history_lengths(column)
    return frame


def entries_frame(table: SplitTable, catalogue: CatalogueFiles) -> pd.DataFrame:
    """One row per item mention (position 0 = target, k = history entry k) with the catalogue's SID and title.

    History entries are taken only from rows whose three lists parse, are non-empty and have equal lengths:
    the rows suite reports the others, and zipping misaligned lists would misreport every later entry.
    """
    raw, lines = table.raw, table.lines
    targets = pd.DataFrame(
        {"line": lines, "position": 0, "item_id": raw["item_id"], "title": raw["item_title"], "sid": raw["item_sid"]}
    )
    lengths = [table.history_lengths(column) for column in HISTORY_COLUMNS]
    aligned = ((lengths[0] > 0) & (lengths[0] == lengths[1]) & (lengths[0] == lengths[2])).fillna(False).astype(bool)
    history = pd.DataFrame(
        {
            "line": lines[aligned],
            "position": lengths[0][aligned].map(lambda n: list(range(1, n + 1))),
            "item_id": table.histories["history_item_id"][aligned],
            "title": table.histories["history_item_title"][aligned],
            "sid": table.histories["history_item_sid"][aligned],
        }
    ).explode(["position", "item_id", "title", "sid"])
    history = history.assign(
        position=history["position"].astype("int64"),
        item_id=history["item_id"].map(_id_text),
        title=history["title"].map(_text),
        sid=history["sid"].map(_text),
    )
    entries = pd.concat([targets, history], ignore_index=True).sort_values(["line", "position"], kind="stable")
    entries["index_sid"] = entries["item_id"].map(catalogue.index_sid)
    entries["catalogue_title"] = entries["item_id"].map(catalogue.title)
    return entries.reset_index(drop=True)


def duplicates_frame(table: SplitTable) -> pd.DataFrame:
    """One row per valid/test row: its identity and, for a repeat, the line of its first occurrence."""
    keys, lines = table.row_keys(), table.lines
    first = pd.Series(lines.to_numpy(), index=keys.to_numpy())
    first = first[~first.index.duplicated()]
    repeated = keys.duplicated(keep="first")
    return pd.DataFrame({"line": lines, "row_key": keys,
                         "first_line": keys.map(first).where(repeated).astype("Int64")})


def heldout_frame(table: SplitTable, train_lines: dict[str, int]) -> pd.DataFrame:
    """One row per valid/test row: its identity and the train line holding the same row, if any."""
    keys = table.row_keys()
    return pd.DataFrame(
        {"line": table.lines, "row_key": keys, "train_line": keys.map(train_lines).astype("Int64")}
    )


def train_lines(table: SplitTable) -> dict[str, int]:
    """Row identity -> first train line with it."""
    lines = pd.Series(table.lines.to_numpy(), index=table.row_keys().to_numpy())
    return lines[~lines.index.duplicated()].to_dict()


def info_frame(catalogue: CatalogueFiles) -> pd.DataFrame:
    """One row per info line, with the index.json SID and item.json title of the item id it names."""
    fields = [line + [None] * (INFO_FIELDS - len(line)) for line in catalogue.info]
    frame = pd.DataFrame([f[:INFO_FIELDS] for f in fields], columns=["sid", "title", "item_id"], dtype=object)
    frame.insert(0, "line", range(1, len(frame) + 1))
    frame["fields"] = [len(line) for line in catalogue.info]
    # Line i describes item i - 1 (upstream writes one line per item in id order, docs/upstream.md 1.4).
    frame["expected_item_id"] = (frame["line"] - 1).astype(str)
    frame["index_sid"] = frame["item_id"].map(catalogue.index_sid)
    frame["catalogue_title"] = frame["item_id"].map(catalogue.title)
    return frame


def _present(keys: list[str], known) -> list[str | None]:
    """Each key where ``known`` has it, else None: membership as a column that a not-null rule can check."""
    return [key if key in known else None for key in keys]


def index_frame(catalogue: CatalogueFiles) -> pd.DataFrame:
    """One row per index.json key: its SID, and whether item.json and the info file know the id."""
    keys = list(catalogue.index)
    odd = catalogue.odd_lengths()
    return pd.DataFrame(
        {
            "item": keys,
            "sid": [catalogue.index_sid[key] for key in keys],
            "in_items": _present(keys, catalogue.items),
            "in_info": _present(keys, catalogue.info_ids),
            "odd_length": [odd.get(key) for key in keys],
        },
        dtype=object,
    )


def items_frame(catalogue: CatalogueFiles) -> pd.DataFrame:
    """One row per item.json key: its title, and whether index.json knows the id."""
    keys = list(catalogue.items)
    titles = [catalogue.title.get(key) for key in keys]
    return pd.DataFrame({"item": keys, "title": titles, "in_index": _present(keys, catalogue.index)}, dtype=object)


# Suites ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """A suite and the frame columns that locate an unexpected value in its file."""

    suite: gx.ExpectationSuite
    locators: tuple[str, ...]


def _suite(name: str, *expectations: gxe.Expectation) -> gx.ExpectationSuite:
    return gx.ExpectationSuite(name=name, expectations=list(expectations))


def _reported(column: str, history_column: str | None = None, **more: str) -> dict:
    """An expectation's ``meta``: the file column it reports (``history_column`` for history entries)."""
    return {"column": column, **({"history_column": history_column} if history_column else {}), **more}


def _agrees_with_catalogue(reported) -> list[gxe.Expectation]:
    """``sid`` and ``title`` equal index.json's SID and item.json's title for ``item_id``.

    Split entries and info lines check the same thing and differ only in the file column a failure names:
    ``reported(name, **more)`` builds that ``meta``.
    """
    return [
        gxe.ExpectColumnPairValuesToBeEqual(
            column_A="sid", column_B="index_sid", **PAIR, description="equals index.json's SID of the item id",
            meta=reported("sid", evidence="index.json has {index_sid!r} for item {item_id}"),
        ),
        gxe.ExpectColumnPairValuesToBeEqual(
            column_A="title", column_B="catalogue_title", **PAIR, description="equals item.json's title of the item id",
            meta=reported("title", evidence="item.json has {catalogue_title!r} for item {item_id}"),
        ),
    ]


def columns_check() -> Check:
    return Check(_suite(
        "columns",
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(SPLIT_COLUMNS), exact_match=True,
            description="has the seven upstream columns, no more, no fewer", meta=_reported("header"),
        ),
        gxe.ExpectTableRowCountToBeBetween(
            min_value=1, description="has data rows, not only a header", meta=_reported("(rows)", evidence="no rows"),
        ),
    ), ())


def rows_check() -> Check:
    rules = [gxe.ExpectColumnValuesToMatchRegex(
        column="user_id", regex=USER_ID_PATTERN, description=f"matches {USER_ID_PATTERN}", meta=_reported("user_id"),
    )]
    for column in HISTORY_COLUMNS:
        length = f"{column}_length"
        rules += [
            gxe.ExpectColumnValuesToBeNull(
                column=f"{column}_unparsable", description="is a Python-literal list", meta=_reported(column),
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column=length, min_value=1, max_value=MAX_HISTORY, description=f"holds 1..{MAX_HISTORY} entries",
                meta=_reported(column, value=column, evidence="{%s} entries" % length),
            ),
        ]
        if column != "history_item_id":
            rules.append(gxe.ExpectColumnPairValuesToBeEqual(
                column_A=length, column_B="history_item_id_length", **PAIR,
                description="has as many entries as history_item_id",
                meta=_reported(column, value=column, evidence="{%s} entries, history_item_id has "
                               "{history_item_id_length}" % length),
            ))
    return Check(_suite("rows", *rules), ("line", *HISTORY_COLUMNS))


def entries_check() -> Check:
    def field(name: str, **more: str) -> dict:
        return _reported(f"item_{name}", f"history_item_{name}", **more)

    return Check(_suite(
        "entries",
        gxe.ExpectColumnValuesToMatchRegex(
            column="item_id", regex=ITEM_ID_PATTERN, description="is an integer", meta=field("id"),
        ),
        gxe.ExpectColumnValuesToNotBeNull(
            column="index_sid", description="is an item id of index.json", meta=field("id", value="item_id"),
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="sid", regex=SID_REGEX, description=f"matches {SID_PATTERN}", meta=field("sid"),
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="sid", regex=LEVEL_ORDER_REGEX, description=LEVEL_ORDER_RULE, meta=field("sid"),
        ),
        *_agrees_with_catalogue(field),
    ), ("line", "position", "item_id"))


def unique_check() -> Check:
    return Check(_suite("unique", gxe.ExpectColumnValuesToBeNull(
        column="first_line", description="occurs once in the split (same user_id, history_item_id and item_id)",
        meta=_reported("user_id+history_item_id+item_id", value="row_key", evidence="same row as line {first_line}"),
    )), ("line", "row_key"))


def heldout_check() -> Check:
    return Check(_suite("heldout", gxe.ExpectColumnValuesToBeNull(
        column="train_line", description="does not occur in train (same user_id, history_item_id and item_id)",
        meta=_reported("user_id+history_item_id+item_id", value="row_key", evidence="train line {train_line}"),
    )), ("line", "row_key"))


def info_check() -> Check:
    return Check(_suite(
        "info",
        gxe.ExpectColumnValuesToBeInSet(
            column="fields", value_set=[INFO_FIELDS], description="has 3 tab-separated fields: sid, title, item id",
            meta=_reported("(field count)"),
        ),
        gxe.ExpectColumnPairValuesToBeEqual(
            column_A="item_id", column_B="expected_item_id", **PAIR,
            description="line i names item i - 1 (one line per item, in id order)",
            meta=_reported("item_id", evidence="line {line} should name item {expected_item_id}"),
        ),
        gxe.ExpectColumnValuesToNotBeNull(
            column="index_sid", description="is an item id of index.json", meta=_reported("item_id", value="item_id"),
        ),
        *_agrees_with_catalogue(_reported),
    ), ("line", "item_id"))


def index_check() -> Check:
    key = _reported("key", value="item")
    return Check(_suite(
        "index",
        gxe.ExpectColumnValuesToMatchRegex(column="item", regex=ITEM_ID_PATTERN, description="is an integer", meta=key),
        gxe.ExpectColumnValuesToNotBeNull(column="in_items", description="is an item id of item.json", meta=key),
        gxe.ExpectColumnValuesToNotBeNull(column="in_info", description="is an item id of the info file", meta=key),
        gxe.ExpectColumnValuesToMatchRegex(
            column="sid", regex=SID_REGEX, description=f"tokens join to {SID_PATTERN}", meta=_reported("tokens"),
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="sid", regex=LEVEL_ORDER_REGEX, description=LEVEL_ORDER_RULE, meta=_reported("tokens"),
        ),
        gxe.ExpectColumnValuesToBeNull(
            column="odd_length", description="has as many tokens as the catalogue's other SIDs",
            meta=_reported("tokens", value="sid", evidence="{odd_length}"),
        ),
    ), ("item", "sid"))


def items_check() -> Check:
    return Check(_suite(
        "items",
        gxe.ExpectColumnValuesToNotBeNull(
            column="in_index", description="is an item id of index.json", meta=_reported("key", value="item"),
        ),
        gxe.ExpectColumnValuesToNotBeNull(column="title", description="has a text title", meta=_reported("title")),
    ), ("item",))
