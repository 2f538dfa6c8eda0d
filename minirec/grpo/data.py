"""GRPO prompts: SID-history, title->SID, description->SID and title-history->SID (docs/upstream.md 5.3).

    python -m minirec.grpo --preset tiny --category Industrial_and_Scientific

Every row is ``{"prompt", "target", "task", "history_item_ids"}``; ``target`` is the row's own answer (``SID\\n``),
which trl hands to the reward functions, so no global history->target dict is needed (docs/upstream.md 8.1 C);
``history_item_ids`` are the row's history item ids (empty for title/description -> SID), which the CF reward
scores from (8.1 H fixed: title-history prompts need no title -> id lookup).

Upstream's mixture, in upstream's order before the seeded shuffle (rl.py):

1. ``sid_history``: every train row, the SFT task-1 body without the preamble;
2. ``title_to_sid`` / ``description_to_sid``: one prompt per distinct title / description, the last item in
   index order winning (upstream builds ``title -> SID`` dicts; Industrial: 3,646 + 2,870 rows). A list-string
   description contributes its first element;
3. ``title_history_to_sid``: 10,000 train rows drawn with ``DataFrame.sample(random_state=0)``.

Upstream switches (:mod:`minirec.upstream`) restore what upstream does beyond that: ``rl_answer_leak``, the
answer after ``### Response:`` in the title/description prompts (docs/upstream.md 8.1 B); ``three_token_sids``,
SIDs cut to their first three tokens in those tasks (8.1 I); ``rl_empty_description``, a prompt for the empty
description (``An item can be described as follows: "".``) whose target is simply the last item without one;
and ``rl_sample_raises``: with fewer train rows than ``title_history_sample`` upstream's
``DataFrame.sample(10000)`` raises, so the run stops with a :class:`SmallTrainError` naming the numbers; without
the switch every row is drawn (the seeded order of ``sample(len, random_state=0)``), and the shortfall is printed
and recorded (``PromptSet.title_history_drawn``), never silent. ``upstream_quirks`` turns on the first three.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from datasets import Dataset

from minirec import prompts
from minirec.data.catalogue import Catalogue, read_split
from minirec.data.layout import CategoryFiles
from minirec.errors import UserError
from minirec.sid import join_sid

TITLE_HISTORY_SAMPLE = 10_000
TASKS = ("sid_history", "title_to_sid", "description_to_sid", "title_history_to_sid")


class GrpoDataError(ValueError):
    """A split row cannot be turned into a prompt; the message names the file, row and field."""


class SmallTrainError(UserError, ValueError):
    """Upstream's title-history draw cannot run on this train split (switch ``rl_sample_raises``)."""


@dataclass(frozen=True)
class RlPromptOptions:
    """The upstream switches that shape the RL prompts (:mod:`minirec.upstream`)."""

    answer_leak: bool = False
    three_token_sids: bool = False
    empty_description: bool = False
    sample_raises: bool = False

    @classmethod
    def from_quirks(cls, quirks) -> "RlPromptOptions":
        quirks = set(quirks)
        return cls("rl_answer_leak" in quirks, "three_token_sids" in quirks, "rl_empty_description" in quirks,
                   "rl_sample_raises" in quirks)

    @classmethod
    def legacy(cls, upstream_quirks: bool) -> "RlPromptOptions":
        """What ``upstream_quirks`` switched here before the profiles: leak, 3-token SIDs, empty description."""
        return cls(upstream_quirks, upstream_quirks, upstream_quirks, False)


@dataclass
class PromptSet:
    """The training and evaluation prompts of a run, and how many rows each task contributed.

    ``title_history_drawn``: ``(asked, drawn)`` for the title-history task (they differ when train is smaller).
    """

    train: Dataset
    eval: Dataset
    task_rows: dict[str, int] = field(default_factory=dict)
    title_history_drawn: tuple[int, int] | None = None


def _row(prompt: prompts.Prompt, task: str, history=()) -> dict:
    # history_item_ids: the row's history item ids, what the CF reward scores from (empty: no history)
    return {"prompt": prompt.text, "target": prompt.target, "task": task,
            "history_item_ids": [int(item) for item in history]}


def _history(frame: pd.DataFrame, column: str, path: Path) -> list[list[str]]:
    """The parsed ``*_list`` history column, with a clear error on the first row that did not parse."""
    values = frame[f"{column}_list"]
    bad = values[values.map(lambda v: not isinstance(v, list) or not v)]
    if len(bad):
        row = bad.index[0]  # read_split keeps the CSV's 0-based row numbers as the index
        raise GrpoDataError(
            f"{path}: row {row} (line {row + 2}), field {column}: expected a non-empty Python list, "
            f"got {frame.at[row, column]!r}"
        )
    return values.tolist()


def sid_history_rows(frame: pd.DataFrame, path: Path) -> list[dict]:
    """``SidDataset``: one prompt per row, history SIDs -> next SID."""
    histories = _history(frame, "history_item_sid", path)
    return [
        _row(prompts.rl_sid_history(history, target), "sid_history", ids)
        for history, target, ids in zip(histories, frame["item_sid"], frame["history_item_id_list"])
    ]


def title_history_shortfall(rows: int, sample: int, path, raises: bool) -> str | None:
    """The message for a train split with fewer than ``sample`` rows (``None`` when it has enough): raised as a
    :class:`SmallTrainError` under ``rl_sample_raises`` (upstream's behaviour), else returned to be printed."""
    if rows >= sample:
        return None
    if raises:
        raise SmallTrainError(
            f"{path}: {rows:,} train rows, but upstream's RLSeqTitle2SidDataset draws sample={sample:,} rows "
            f"without replacement and raises ValueError on fewer (docs/upstream.md 5.3, 11.6; switch "
            f"rl_sample_raises, on in the upstream profiles); pass --quirks no_rl_sample_raises to draw all {rows:,} "
            f"rows instead, or title_history_sample <= {rows:,}")
    return (f"title_history_to_sid: {path} has {rows:,} rows, fewer than title_history_sample {sample:,}; "
            f"drawing all {rows:,} in the seeded order of sample({rows}, random_state=0) (upstream would raise "
            "ValueError here: switch rl_sample_raises)")


def title_history_rows(frame: pd.DataFrame, path: Path, sample: int = TITLE_HISTORY_SAMPLE,
                       sample_raises: bool = False) -> list[dict]:
    """``RLSeqTitle2SidDataset``: ``sample`` rows drawn with ``random_state=0``; with fewer rows, all of them
    (and a printed notice) or, under ``sample_raises``, a :class:`SmallTrainError`."""
    notice = title_history_shortfall(len(frame), sample, path, sample_raises)
    if notice:
        from minirec.devices import is_main_process

        if is_main_process():
            print(f"[grpo] {notice}", flush=True)
    drawn = frame.sample(min(sample, len(frame)), random_state=0)
    histories = _history(drawn, "history_item_title", path)
    return [
        _row(prompts.rl_title_history_to_sid(history, target), "title_history_to_sid", ids)
        for history, target, ids in zip(histories, drawn["item_sid"], drawn["history_item_id_list"])
    ]


def first_description(description: str) -> str:
    """The text upstream uses for an item: the first element of a list-string, else the string itself."""
    if description.startswith("['") and description.endswith("']"):
        try:
            parsed = ast.literal_eval(description)
        except (ValueError, SyntaxError):
            return description
        if isinstance(parsed, list) and parsed:
            return str(parsed[0])
    return description


def alignment_rows(catalogue: Catalogue, upstream_quirks: bool = False, options: RlPromptOptions | None = None,
                   items: int | None = None) -> list[dict]:
    """``RLTitle2SidDataset``: title->SID then description->SID, deduplicated by text, last item winning.

    ``options`` (default: :meth:`RlPromptOptions.legacy` of ``upstream_quirks``) holds the upstream switches;
    ``items`` keeps only the rows whose key one of the first ``items`` index items put in place (the prompt
    dump's ``--items``), in upstream's order and with the whole catalogue's strings.
    """
    options = options or RlPromptOptions.legacy(upstream_quirks)
    title_sid: dict[str, str] = {}
    description_sid: dict[str, str] = {}
    first: dict = {}
    for position, (item, tokens) in enumerate(catalogue.item_tokens.items()):
        if item not in catalogue.items:
            continue
        sid = join_sid(tokens[:3] if options.three_token_sids else tokens)
        features = catalogue.items[item]
        title_sid[features["title"]] = sid
        first.setdefault(("title", features["title"]), position)
        description = first_description(str(features.get("description", "")))
        if description or options.empty_description:
            description_sid[description] = sid
            first.setdefault(("description", description), position)
    shown = (lambda kind, key: True) if items is None else (lambda kind, key: first[(kind, key)] < items)
    leak = options.answer_leak
    rows = [
        _row(prompts.rl_title_to_sid(title, sid, leak_answer=leak), "title_to_sid")
        for title, sid in title_sid.items() if shown("title", title)
    ]
    rows += [
        _row(prompts.rl_description_to_sid(text, sid, leak_answer=leak), "description_to_sid")
        for text, sid in description_sid.items() if shown("description", text)
    ]
    return rows


def count_tasks(rows: list[dict]) -> dict[str, int]:
    return {task: sum(row["task"] == task for row in rows) for task in TASKS}


def build_prompt_set(
    files: CategoryFiles,
    catalogue: Catalogue | None = None,
    *,
    tasks: tuple[str, ...] = TASKS,
    upstream_quirks: bool = False,
    quirks=None,
    title_history_sample: int = TITLE_HISTORY_SAMPLE,
    seed: int = 42,
    max_train_prompts: int | None = None,
    max_eval_prompts: int | None = None,
) -> PromptSet:
    """The shuffled training mixture and the valid-split prompts (both shuffled with ``seed``, as rl.py).

    ``tasks`` selects parts of the mixture (all four by default, as upstream); ``max_*_prompts`` keep the
    first prompts after the shuffle (a seeded subset, for small runs). ``quirks``: the run's upstream switches
    (:mod:`minirec.upstream`); without them ``upstream_quirks`` switches as before the profiles.
    """
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        raise ValueError(f"unknown or no GRPO prompt tasks {unknown or list(tasks)}; known: {', '.join(TASKS)}")
    options = RlPromptOptions.legacy(upstream_quirks) if quirks is None else RlPromptOptions.from_quirks(quirks)
    catalogue = catalogue or Catalogue.load(files)
    train_frame = read_split(files.train)
    rows = sid_history_rows(train_frame, files.train) if "sid_history" in tasks else []
    if {"title_to_sid", "description_to_sid"} & set(tasks):
        rows += [row for row in alignment_rows(catalogue, options=options) if row["task"] in tasks]
    drawn = None
    if "title_history_to_sid" in tasks:
        rows += title_history_rows(train_frame, files.train, title_history_sample, options.sample_raises)
        drawn = (title_history_sample, min(title_history_sample, len(train_frame)))
    train = Dataset.from_list(rows).shuffle(seed=seed)
    evaluation = Dataset.from_list(sid_history_rows(read_split(files.valid), files.valid)).shuffle(seed=seed)
    if max_train_prompts is not None:
        train = train.select(range(min(max_train_prompts, len(train))))
    if max_eval_prompts is not None:
        evaluation = evaluation.select(range(min(max_eval_prompts, len(evaluation))))
    return PromptSet(train=train, eval=evaluation, task_rows=count_tasks(rows), title_history_drawn=drawn)
