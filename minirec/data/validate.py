"""Validate a category's files with the great-expectations suites and report failures by file, line, column, value.

    python -m minirec.data --category Industrial_and_Scientific [--data_dir DIR]

    from minirec.data import locate
    from minirec.data.validate import validate_category
    report = validate_category(locate("Office_Products"))
    if not report.ok:
        raise SystemExit(report.message())

The checks are those of docs/upstream.md 1.1-1.4 (see :mod:`minirec.data.expectations`). Where a failure sits:
``line N`` is the file's line, a CSV's header being line 1 (so data row r, counted from 1, is line r + 1);
index.json and item.json entries are named by their item id; a file that cannot be read at all, or a rule on a
whole file (a split with no rows), is named by its path alone. Each failed expectation reports its first
``SHOWN_PER_EXPECTATION`` unexpected values in file order and counts the rest.

Every stage that reads a data directory calls :func:`require_valid` before its run starts (through
:meth:`minirec.stage.Recipe.files`): the category's files are validated unless a passing result for the same
file digests and the same rules is cached in ``.cache/validation/<key>.json`` (written by every passing
validation, the data stage's included), so the second time costs six sha256 digests. A failure is one line
(the first unexpected value with its file, line and column, and how many more there are).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from minirec.data.catalogue import Catalogue
from minirec.data.layout import PROJECT_ROOT, SPLITS, CategoryFiles, sha256_of
from minirec.errors import UserError

if TYPE_CHECKING:  # great-expectations takes seconds to import: only a validation that really runs pays for it
    from minirec.data import expectations as ex

SHOWN_PER_EXPECTATION = 5
VALUE_WIDTH = 160
VALIDATION_CACHE_ENV = "MINIREC_VALIDATION_CACHE"
RULE_FILES = ("expectations.py", "validate.py", "catalogue.py")  # the rules: a change to them re-validates


class InvalidDataError(UserError):
    """A stage's input data failed validation: the first failure (file, line, column, value) and a count."""


@dataclass(frozen=True)
class Failure:
    """One unexpected value: where it is, what it is, and the rule it breaks."""

    file: str
    row: int | None  # the file line (a CSV header is line 1); None in index.json / item.json
    column: str
    value: Any
    expectation: str  # the great-expectations type, e.g. expect_column_values_to_match_regex
    rule: str
    item: str | None = None  # the item id the value belongs to (the JSON key in index.json / item.json)
    entry: int | None = None  # 1-based position in a history list
    evidence: str = ""

    def __str__(self) -> str:
        where = f"line {self.row}, " if self.row is not None else f"item {self.item!r}, " if self.item is not None \
            else ""
        if self.column == "(file)":  # the file itself cannot be read: its path (and line) and the reason
            return f"{self.file}, {where}column (file): cannot be parsed ({self.evidence}) [{self.expectation}]"
        column = f"{self.column} entry {self.entry}" if self.entry else self.column
        text = f"{self.file}, {where}column {column}: {_shown(self.value)} breaks '{self.rule}'"
        return text + (f" ({self.evidence})" if self.evidence else "") + f" [{self.expectation}]"


@dataclass(frozen=True)
class FailedExpectation:
    """An expectation that failed on one file: its first unexpected values and how many there are in all."""

    file: str
    suite: str
    expectation: str
    rule: str
    unexpected_count: int
    failures: tuple[Failure, ...]

    @property
    def not_shown(self) -> int:
        return max(self.unexpected_count - len(self.failures), 0)


@dataclass
class ValidationReport:
    """What :func:`validate_category` found; ``ok`` when every expectation held."""

    category: str
    failed: list[FailedExpectation]
    summary: dict
    results: dict[str, dict] = field(default_factory=dict)  # "<file role>/<suite>" -> GX result, as JSON

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def failures(self) -> list[Failure]:
        return [failure for failed in self.failed for failure in failed.failures]

    def message(self) -> str:
        if self.ok:
            return format_summary(self.summary)
        total = sum(failed.unexpected_count for failed in self.failed)
        lines = [f"{self.category}: {len(self.failed)} expectation(s) failed, {total} unexpected value(s)"]
        for failed in self.failed:
            count = failed.unexpected_count
            lines.append(f"- '{failed.rule}' [{failed.expectation}]: {count} unexpected in {failed.file}")
            lines += [f"    {failure}" for failure in failed.failures]
            if failed.not_shown:
                lines.append(f"    ... and {failed.not_shown} more")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "category": self.category,
            "ok": self.ok,
            "summary": self.summary,
            "failed": [asdict(failed) | {"not_shown": failed.not_shown} for failed in self.failed],
            "results": self.results,
        }


class SuiteRunner:
    """An ephemeral GX context (no files, no analytics, no progress bars) with a pandas asset per suite name."""

    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        )
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        self.source = self.context.data_sources.add_pandas("minirec")
        self._batches: dict[str, Any] = {}

    def run(self, check: ex.Check, frame: pd.DataFrame):
        """Validate ``frame`` against the check's suite; the first unexpected values come with their locators."""
        name = check.suite.name
        if name not in self._batches:
            self._batches[name] = self.source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        result_format = {"result_format": "SUMMARY", "partial_unexpected_count": SHOWN_PER_EXPECTATION}
        if check.locators:
            result_format["unexpected_index_column_names"] = list(check.locators)
        batch = self._batches[name].get_batch(batch_parameters={"dataframe": frame})
        return batch.validate(check.suite, result_format=result_format)


def validate_category(files: CategoryFiles, cache_dir: str | os.PathLike | None = None) -> ValidationReport:
    """Run every suite on a category's files (docs/upstream.md 1.1-1.4) and collect failures and a summary.

    A passing result is recorded in the validation cache (``cache_dir``, default :func:`validation_cache_dir`)
    under the files' digests, so :func:`require_valid` need not validate the same bytes again."""
    from minirec.data import expectations as ex

    started = time.perf_counter()
    key = validation_key(files)
    runner = SuiteRunner()
    report = ValidationReport(files.category, failed=[], summary={})

    def run(role: str, check: ex.Check, frame: pd.DataFrame) -> None:
        result = runner.run(check, frame)
        report.results[f"{role}/{check.suite.name}"] = result.to_json_dict()
        report.failed.extend(_failed_expectations(result, str(files.all_files()[role]), check))

    try:
        catalogue = ex.CatalogueFiles.read(files)
    except ex.UnreadableFileError as error:
        report.failed.append(_unreadable(error))
        report.summary = {"category": files.category, "seconds": round(time.perf_counter() - started, 2)}
        return report
    run("info", ex.info_check(), ex.info_frame(catalogue))
    run("index", ex.index_check(), ex.index_frame(catalogue))
    run("items", ex.items_check(), ex.items_frame(catalogue))

    columns, rows, entries, unique = ex.columns_check(), ex.rows_check(), ex.entries_check(), ex.unique_check()
    tables: dict[str, ex.SplitTable] = {}
    for split in SPLITS:
        try:
            table = ex.SplitTable.read(files.split(split))
        except ex.UnreadableFileError as error:
            report.failed.append(_unreadable(error))
            continue
        run(split, columns, table.raw)
        if table.has_split_columns:
            tables[split] = table
            run(split, rows, ex.rows_frame(table))
            run(split, entries, ex.entries_frame(table, catalogue))
            if split != "train":  # a held-out row counted twice weighs twice in every metric
                run(split, unique, ex.duplicates_frame(table))
    if "train" in tables:
        heldout, seen_in_train = ex.heldout_check(), ex.train_lines(tables["train"])
        for split in ("valid", "test"):
            if split in tables:
                run(split, heldout, ex.heldout_frame(tables[split], seen_in_train))

    report.summary = summarize(files, tables, ok=report.ok)
    report.summary["seconds"] = round(time.perf_counter() - started, 2)
    if report.ok:
        _remember_valid(files, key, report.summary, cache_dir)
    return report


# --- the validation cache: what standalone stages check before their run starts --------------------------------


def validation_cache_dir() -> Path:
    """``$MINIREC_VALIDATION_CACHE`` or the project's ``.cache/validation``."""
    return Path(os.environ.get(VALIDATION_CACHE_ENV) or PROJECT_ROOT / ".cache" / "validation")


def _rules_digest() -> str:
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in RULE_FILES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


def _digest_or_reason(path: Path) -> str:
    try:
        return sha256_of(path)
    except OSError as error:  # validation reports the file; its key is never cached as valid
        return f"unreadable: {error.strerror or error}"


def validation_key(files: CategoryFiles) -> str:
    """sha256 over the category, the digest of each of its files (by role) and of the validation rules."""
    digests = {role: _digest_or_reason(path) for role, path in files.all_files().items()}
    text = json.dumps({"category": files.category, "files": digests, "rules": _rules_digest()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _remember_valid(files: CategoryFiles, key: str, summary: dict, cache_dir) -> None:
    from minirec.atomic import write_json

    record = {"key": key, "category": files.category, "data_dir": str(files.root.parent.resolve()),
              "files": {role: str(path.resolve()) for role, path in files.all_files().items()},
              "validated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "summary": summary}
    try:
        write_json(Path(cache_dir or validation_cache_dir()) / f"{key}.json", record)
    except OSError:
        pass  # a read-only cache only costs a validation next time


def is_known_valid(files: CategoryFiles, cache_dir: str | os.PathLike | None = None) -> bool:
    """Whether a passing validation of exactly these bytes (and these rules) is cached."""
    return (Path(cache_dir or validation_cache_dir()) / f"{validation_key(files)}.json").is_file()


def require_valid(files: CategoryFiles, cache_dir: str | os.PathLike | None = None) -> None:
    """Validate ``files`` unless a passing result for the same digests is cached; a failure raises
    :class:`InvalidDataError` (one line: the first unexpected value, where it is, and how many more)."""
    if is_known_valid(files, cache_dir):
        return
    report = validate_category(files, cache_dir)
    if report.ok:
        return
    total = sum(failed.unexpected_count for failed in report.failed)
    first = report.failed[0].failures[0] if report.failed[0].failures else report.failed[0].file
    more = f"; {total - 1} more unexpected value(s)" if total > 1 else ""
    raise InvalidDataError(
        f"{files.category} data in {files.root.parent} failed validation ({len(report.failed)} check(s)): "
        f"{first}{more}; python -m minirec.data --category {files.category} --data_dir {files.root.parent} "
        "lists every failure")


def summarize(files: CategoryFiles, tables: dict[str, ex.SplitTable], ok: bool = True) -> dict:
    """Items, SIDs, collisions, codes per level (when the catalogue is valid), rows and users per split."""
    summary: dict[str, Any] = {"category": files.category, "data_dir": str(files.root.parent)}
    if ok:
        catalogue = Catalogue.load(files)
        groups = catalogue.collision_groups
        summary |= {
            "items": len(catalogue.item_tokens),
            "distinct_sids": len(catalogue.sid_items),
            "collision_groups": len(groups),
            "collision_items": sum(len(ids) for ids in groups.values()),
            "codes_per_level": catalogue.codes_per_level(),
            "sid_lengths": {str(n): count for n, count in
                            sorted(pd.Series([len(t) for t in catalogue.item_tokens.values()]).value_counts().items())},
        }
    summary["splits"] = {
        split: {"file": str(table.path), "rows": len(table.raw), "users": int(table.raw["user_id"].nunique())}
        for split, table in tables.items()
    }
    if tables:
        summary["users"] = int(pd.concat([t.raw["user_id"] for t in tables.values()]).nunique())
    summary["train_file"] = str(files.train)
    summary["train_is_partial"] = files.train_is_partial
    return summary


def format_summary(summary: dict) -> str:
    """A few human lines: the catalogue, then rows and users per split."""
    lines = [f"{summary['category']}: valid ({summary['data_dir']}, {summary.get('seconds', 0):.1f} s)"]
    if "items" in summary:
        codes = ", ".join(f"{n:,}" for n in summary["codes_per_level"])
        lines.append(
            f"  items {summary['items']:,} | distinct SIDs {summary['distinct_sids']:,} | SID collisions "
            f"{summary['collision_groups']} groups / {summary['collision_items']} items | codes per level {codes}"
        )
        lengths = summary.get("sid_lengths", {})
        if len(lengths) > 1:  # e.g. upstream's 4th dedup token on shared paths (docs/upstream.md 3.4)
            lines.append("  SID lengths: " + ", ".join(f"{count:,} of {n} tokens" for n, count in lengths.items()))
    for split, numbers in summary["splits"].items():
        note = ""
        if split == "train":
            note = f"  ({'partial' if summary['train_is_partial'] else 'full'}: {Path(numbers['file']).name})"
        lines.append(f"  {split:<5} {numbers['rows']:>6,} rows  {numbers['users']:>6,} users{note}")
    if "users" in summary:
        lines.append(f"  users in all splits: {summary['users']:,}")
    return "\n".join(lines)


def _failed_expectations(result, path: str, check: ex.Check) -> list[FailedExpectation]:
    failed = []
    for outcome in result.results:
        if outcome.success:
            continue
        config = outcome.expectation_config
        errors = _exception_messages(outcome.exception_info)
        if errors:
            failures = (Failure(path, None, (config.meta or {}).get("column", ""), None, config.type,
                                config.description or config.type, evidence="; ".join(errors)),)
            count = 1
        elif "partial_unexpected_index_list" in outcome.result:
            located = outcome.result["partial_unexpected_index_list"][:SHOWN_PER_EXPECTATION]
            failures = tuple(_failure(path, config, {k: _plain(v) for k, v in at.items()}) for at in located)
            count = int(outcome.result.get("unexpected_count", len(failures)))
        else:
            failures, count = (_table_failure(path, config, outcome.result),), 1
        failed.append(FailedExpectation(path, check.suite.name, config.type, config.description or config.type,
                                        count, failures))
    return failed


def _failure(path: str, config, located: dict) -> Failure:
    meta = config.meta or {}
    checked = config.kwargs.get("column") or config.kwargs.get("column_A")
    entry = int(located.get("position") or 0) or None
    item = located.get("item", located.get("item_id"))
    line = located.get("line")
    return Failure(
        file=path,
        row=None if line is None else int(line),
        column=meta["history_column"] if entry else meta.get("column", checked),
        value=located.get(meta.get("value", checked)),
        expectation=config.type,
        rule=config.description or config.type,
        item=None if item is None else str(item),
        entry=entry,
        evidence=meta.get("evidence", "").format(**located),
    )


def _table_failure(path: str, config, result: dict) -> Failure:
    """A rule on a whole table: the header (line 1) or the file as a whole (its row count)."""
    column = (config.meta or {}).get("column", "header")
    if column != "header":
        return Failure(path, None, column, result.get("observed_value"), config.type,
                       config.description or config.type, evidence=(config.meta or {}).get("evidence", ""))
    mismatched = result.get("details", {}).get("mismatched", {})
    parts = [f"{kind}: {', '.join(sorted(names))}" for kind, names in mismatched.items() if names]
    return Failure(path, 1, "header", result.get("observed_value"), config.type, config.description or config.type,
                   evidence="; ".join(parts))


def _unreadable(error: ex.UnreadableFileError) -> FailedExpectation:
    failure = Failure(str(error.path), error.line, "(file)", None, "readable", "parses", evidence=error.reason)
    return FailedExpectation(str(error.path), "read", "readable", "parses", 1, (failure,))


def _exception_messages(info: dict) -> list[str]:
    """GX reports a metric that raised either directly or keyed by metric id."""
    infos = [info] if "raised_exception" in info else list(info.values())
    return [i.get("exception_message") or "raised" for i in infos if isinstance(i, dict) and i.get("raised_exception")]


def _plain(value):
    """numpy scalars as Python values and integral floats as ints, so messages read '7', not 'np.int64(7)'."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= VALUE_WIDTH else text[:VALUE_WIDTH] + "..."
