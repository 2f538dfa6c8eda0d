"""The SFT training and validation sets: upstream's five tasks, tokenised and masked as upstream does.

    python -m minirec.sft --preset tiny --category Industrial_and_Scientific

Reference: docs/upstream.md 4.2 (encoding and masking), 4.3 (the five tasks) and 1.6 (collisions).

- Task order is upstream's (SidSFT, SidItemFeat, FusionSeqRec, SFTData, TitleHistory2Sid); the concatenation
  is shuffled with the HF ``Dataset.shuffle`` seed, hard-coded to 42 upstream (``shuffle_seed``).
- The alignment task keeps upstream's dicts: keyed by SID and by title, the last item wins, but a key keeps
  the position of its first item (Python dict order). Industrial: 3,670 sid2title + 3,646 title2sid samples.
- Three upstream switches (:mod:`minirec.upstream`) change what is trained here: ``alignment_leak``, the
  alignment answer leak (docs/upstream.md 8.1 A); ``three_token_sids``, SIDs cut to their first three tokens in the
  alignment, fusion and title-history->SID tasks (docs/upstream.md 1.6, 8.1 I; only matters for 4-token SIDs); and
  ``sft_three_tasks``, upstream's three-task SFT since 2025-12-01 (:func:`trained_tasks`, docs/upstream.md 11.1).
  ``upstream_quirks`` (here and in :class:`TaskOptions`) turns on the first two, as the ``paper-release`` profile.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from minirec import prompts
from minirec.data.catalogue import Catalogue, read_split
from minirec.sid import join_sid

TASKS = ("sid_history", "item_alignment", "sid_history_to_title", "title_history_to_title", "title_history_to_sid")
# What upstream trains since 2025-12-01 (sft.py:193-198@8e03e35): the switch sft_three_tasks keeps only these.
THREE_TASKS = ("sid_history", "item_alignment", "sid_history_to_title")
IGNORE_INDEX = -100
# Upstream shuffles the concatenated tasks with this seed whatever --seed says (sft.py:222, docs/upstream.md 8.3).
UPSTREAM_SHUFFLE_SEED = 42
# SFTData seeds Python's random with 42 before drawing its instructions (data.py:37-171).
TITLE_INSTRUCTION_SEED = 42


@dataclass(frozen=True)
class TaskOptions:
    """What shapes the prompts: the category phrase and two upstream switches (``None``: as ``upstream_quirks``)."""

    category: str
    upstream_quirks: bool = False
    alignment_leak: bool | None = None
    three_token_sids: bool | None = None

    @classmethod
    def from_quirks(cls, category: str, quirks) -> "TaskOptions":
        """The options of a set of upstream switches (:mod:`minirec.upstream`)."""
        quirks = set(quirks)
        return cls(category, alignment_leak="alignment_leak" in quirks, three_token_sids="three_token_sids" in quirks)

    @property
    def leak(self) -> bool:
        return self.upstream_quirks if self.alignment_leak is None else self.alignment_leak

    @property
    def sid_depth(self) -> int | None:
        """Upstream keeps 3 SID tokens in the item-level tasks; the fixed version keeps them all."""
        cut = self.upstream_quirks if self.three_token_sids is None else self.three_token_sids
        return 3 if cut else None


def trained_tasks(tasks: Sequence[str], quirks=()) -> list[str]:
    """The tasks SFT trains, in upstream's order: ``tasks``, restricted to :data:`THREE_TASKS` under the switch
    ``sft_three_tasks`` (upstream at 8e03e35, docs/upstream.md 11.1)."""
    three = "sft_three_tasks" in set(quirks)
    return [task for task in TASKS if task in tasks and (not three or task in THREE_TASKS)]


class SFTDataError(ValueError):
    """A split row that cannot become a training sample; the message names file, row and field."""


def _sid_of(tokens: Sequence[str], depth: int | None) -> str:
    return join_sid(tokens[:depth] if depth else tokens)


def alignment_maps(catalogue: Catalogue, sid_depth: int | None, first_items: dict | None = None
                   ) -> tuple[dict[str, str], dict[str, str]]:
    """Upstream's ``sid2title`` and ``title2sid`` (data.py:748-751): last item wins, first position kept.

    ``first_items``, when given, receives ``("sid", key)`` / ``("title", key)`` -> the position (in index order)
    of the item that put the key where it stands, so a slice of items can be shown in upstream's order.
    """
    sid2title: dict[str, str] = {}
    title2sid: dict[str, str] = {}
    for position, (item, tokens) in enumerate(catalogue.item_tokens.items()):
        if item not in catalogue.items or len(tokens) < 3:
            continue
        sid = _sid_of(tokens, sid_depth)
        title = catalogue.title(item)
        if first_items is not None:
            first_items.setdefault(("sid", sid), position)
            first_items.setdefault(("title", title), position)
        sid2title[sid] = title
        title2sid[title] = sid
    return sid2title, title2sid


def _history(frame: pd.DataFrame, row: int, column: str, path: Path | str) -> list:
    value = frame.at[row, f"{column}_list"]
    if value is None:
        raise SFTDataError(
            f"{path}: data row {row}, field {column!r} is not a Python-literal list: {frame.at[row, column]!r}"
        )
    return value


def _rows(frame: pd.DataFrame, build: Callable[[int], prompts.Prompt]) -> list[prompts.Prompt]:
    return [build(row) for row in frame.index]


def sid_history_prompts(frame: pd.DataFrame, path) -> list[prompts.Prompt]:
    """Task 1 (SidSFTDataset): history SIDs -> next SID."""
    return _rows(frame, lambda r: prompts.sft_sid_history(
        _history(frame, r, "history_item_sid", path), frame.at[r, "item_sid"]))


def alignment_prompts(catalogue: Catalogue, options: TaskOptions, items: int | None = None) -> list[prompts.Prompt]:
    """Task 2 (SidItemFeatDataset): every sid2title sample, then every title2sid sample.

    ``items``: only the samples whose key the first ``items`` items of the index put in place (the prompt dump's
    ``--items``), in upstream's order; the strings are those of the whole catalogue's dataset.
    """
    first: dict = {}
    sid2title, title2sid = alignment_maps(catalogue, options.sid_depth, first)
    shown = (lambda kind, key: True) if items is None else (lambda kind, key: first[(kind, key)] < items)
    leak = options.leak
    return [prompts.sft_sid_to_title(sid, title, leak_answer=leak) for sid, title in sid2title.items()
            if shown("sid", sid)] + [
        prompts.sft_title_to_sid(title, sid, leak_answer=leak) for title, sid in title2sid.items()
        if shown("title", title)
    ]


def sid_history_to_title_prompts(frame: pd.DataFrame, path, catalogue: Catalogue, options: TaskOptions):
    """Task 3 (FusionSeqRecDataset): history SIDs -> next title, looked up in sid2title (SID if absent)."""
    sid2title, _ = alignment_maps(catalogue, options.sid_depth)
    return _rows(frame, lambda r: prompts.sft_sid_history_to_title(
        _history(frame, r, "history_item_sid", path),
        sid2title.get(frame.at[r, "item_sid"], frame.at[r, "item_sid"])))


def title_history_to_title_prompts(frame: pd.DataFrame, path, options: TaskOptions) -> list[prompts.Prompt]:
    """Task 4 (SFTData): title history -> next title, instructions drawn in row order from Random(42)."""
    rng = random.Random(TITLE_INSTRUCTION_SEED)
    return _rows(frame, lambda r: prompts.sft_title_history_to_title(
        _history(frame, r, "history_item_title", path), frame.at[r, "item_title"], options.category, rng))


def title_history_to_sid_prompts(frame: pd.DataFrame, path, catalogue: Catalogue, options: TaskOptions):
    """Task 5 (TitleHistory2SidSFTDataset): title history -> the SID of ``item_id`` in the index."""

    def target(row: int) -> str:
        item = frame.at[row, "item_id"]
        try:
            return _sid_of(catalogue.item_tokens[int(item)], options.sid_depth)
        except (KeyError, ValueError):
            raise SFTDataError(f"{path}: data row {row}, field 'item_id' = {item!r} is not in the index") from None

    return _rows(frame, lambda r: prompts.sft_title_history_to_sid(
        _history(frame, r, "history_item_title", path), target(r), options.category))


def sample_rows(frame: pd.DataFrame, sample: int, seed: int) -> pd.DataFrame:
    """Upstream's ``sample`` argument: a seeded random subset of the rows (all rows when ``sample <= 0``)."""
    if sample <= 0 or sample >= len(frame):
        return frame
    return frame.sample(sample, random_state=seed)


def task_prompts(
    task: str, train: pd.DataFrame, train_path, catalogue: Catalogue, options: TaskOptions
) -> list[prompts.Prompt]:
    """The prompts of one task; ``train`` is the (possibly sampled) train split."""
    if task == "sid_history":
        return sid_history_prompts(train, train_path)
    if task == "item_alignment":
        return alignment_prompts(catalogue, options)
    if task == "sid_history_to_title":
        return sid_history_to_title_prompts(train, train_path, catalogue, options)
    if task == "title_history_to_title":
        return title_history_to_title_prompts(train, train_path, options)
    if task == "title_history_to_sid":
        return title_history_to_sid_prompts(train, train_path, catalogue, options)
    raise ValueError(f"unknown SFT task {task!r}; known: {', '.join(TASKS)}")


# --- Encoding (docs/upstream.md 4.2) ------------------------------------------------------------------------------------


def _encode_unique(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens; repeated texts (preambles) are encoded once."""
    unique = list(dict.fromkeys(texts))
    ids = dict(zip(unique, tokenizer(unique, add_special_tokens=False)["input_ids"]))
    return [ids[text] for text in texts]


def encode_prompts(tokenizer, samples: Sequence[prompts.Prompt], cutoff_len: int) -> dict[str, list[list[int]]]:
    """``[BOS] + enc(preamble) + enc(body)`` masked with -100, then ``enc(target) + EOS``; keep the last
    ``cutoff_len`` tokens of ids, mask and labels (upstream's left truncation).

    Each piece is tokenised on its own as upstream does, so ids can differ from tokenising the joined text.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; SFT targets end with EOS")
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    preambles = _encode_unique(tokenizer, [s.preamble for s in samples])
    bodies = _encode_unique(tokenizer, [s.body for s in samples])
    targets = _encode_unique(tokenizer, [s.target for s in samples])
    columns: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
    for pre, body, target in zip(preambles, bodies, targets):
        prompt = bos + pre + body
        answer = target + [tokenizer.eos_token_id]
        ids = (prompt + answer)[-cutoff_len:]
        columns["input_ids"].append(ids)
        columns["attention_mask"].append([1] * len(ids))
        columns["labels"].append(([IGNORE_INDEX] * len(prompt) + answer)[-cutoff_len:])
    return columns


@dataclass
class SFTDatasets:
    """The shuffled training set, the validation set (task 1 on the valid split) and per-task counts."""

    train: "datasets.Dataset"  # noqa: F821
    valid: "datasets.Dataset"  # noqa: F821
    task_counts: dict[str, int]


def build_datasets(
    tokenizer,
    files,
    catalogue: Catalogue,
    *,
    tasks: Sequence[str] = TASKS,
    upstream_quirks: bool = False,
    quirks=None,
    cutoff_len: int = 512,
    sample: int = -1,
    valid_sample: int = -1,
    seed: int = 42,
    shuffle_seed: int = UPSTREAM_SHUFFLE_SEED,
) -> SFTDatasets:
    """Build, tokenise, concatenate (upstream task order) and shuffle the SFT sets of one category.

    ``quirks``: the run's upstream switches (:mod:`minirec.upstream`), which then decide the prompts and the task
    list (:func:`trained_tasks`); without them ``upstream_quirks`` turns on the alignment leak and the 3-token cut.
    """
    from datasets import Dataset

    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown SFT tasks {unknown or '(none given)'}; known: {', '.join(TASKS)}")
    if quirks is None:
        options = TaskOptions(category=files.category, upstream_quirks=upstream_quirks)
    else:
        options = TaskOptions.from_quirks(files.category, quirks)
        tasks = trained_tasks(tasks, quirks)
        if not tasks:
            raise ValueError(f"no SFT task left: sft_three_tasks trains only {', '.join(THREE_TASKS)}")
    train = sample_rows(read_split(files.train), sample, seed)
    samples: list[prompts.Prompt] = []
    counts: dict[str, int] = {}
    for task in TASKS:
        if task in tasks:
            task_samples = task_prompts(task, train, files.train, catalogue, options)
            counts[task] = len(task_samples)
            samples.extend(task_samples)
    valid = sample_rows(read_split(files.valid), valid_sample, seed)
    train_set = Dataset.from_dict(encode_prompts(tokenizer, samples, cutoff_len)).shuffle(seed=shuffle_seed)
    valid_set = Dataset.from_dict(encode_prompts(tokenizer, sid_history_prompts(valid, files.valid), cutoff_len))
    return SFTDatasets(train=train_set.flatten_indices(), valid=valid_set, task_counts=counts)
