"""Two non-learned baselines that every learned model must beat: most-popular items and item-to-item transitions.

    python -m minirec.baselines --category Industrial_and_Scientific --method popularity

Both count on the train split only and rank SIDs (the unit MiniOneRec predicts), so their outputs go through the
same scorer as a model's beams. They are sanity floors, not methods of the paper.

- ``popularity``: items ranked by how often they occur in train (history items and targets), the same list for
  every user; ties broken by item id.
- ``transition``: items ranked by how often they followed the user's last history item in train (consecutive
  history pairs and last-history -> target), then filled with the popularity ranking.

An item's SID may be shared with other items (docs/upstream.md 1.6); a ranking keeps each SID once, at the rank
of its first item.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable

import pandas as pd

from minirec.data.catalogue import Catalogue

METHODS = ("popularity", "transition")


def _item_sequences(train: pd.DataFrame) -> Iterable[list[int]]:
    """Each train row as history ids followed by the target id."""
    for history, target in zip(train["history_item_id_list"], train["item_id"]):
        yield [int(item) for item in history] + [int(target)]


def popularity_counts(train: pd.DataFrame) -> Counter:
    """Occurrences of each item in train histories and targets."""
    counts: Counter = Counter()
    for sequence in _item_sequences(train):
        counts.update(sequence)
    return counts


def transition_counts(train: pd.DataFrame) -> dict[int, Counter]:
    """For each item, how often each other item came right after it in train."""
    followers: dict[int, Counter] = defaultdict(Counter)
    seen: set[tuple[int, ...]] = set()
    for sequence in _item_sequences(train):
        # A user's consecutive rows repeat the same pairs (sliding window, docs/upstream.md 2.3); count each sequence once.
        key = tuple(sequence)
        if key in seen:
            continue
        seen.add(key)
        for previous, current in zip(sequence, sequence[1:]):
            followers[previous][current] += 1
    return followers


def rank_sids(items: Iterable[int], catalogue: Catalogue, k: int) -> list[str]:
    """Map ranked items to their SIDs, keeping each SID once, until ``k`` SIDs are collected."""
    ranked: list[str] = []
    seen: set[str] = set()
    for item in items:
        sid = catalogue.item_sid[item]
        if sid not in seen:
            seen.add(sid)
            ranked.append(sid)
            if len(ranked) == k:
                break
    return ranked


def _ordered(counts: Counter) -> list[int]:
    return [item for item, _ in sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))]


def rank(method: str, train: pd.DataFrame, split: pd.DataFrame, catalogue: Catalogue, k: int = 50) -> pd.DataFrame:
    """Rankings of ``k`` SIDs for every row of ``split`` in the harness beam-output format (``scores`` null)."""
    if method not in METHODS:
        raise ValueError(f"unknown baseline {method!r}; expected one of {', '.join(METHODS)}")
    popular = _ordered(popularity_counts(train))
    # Items never seen in train still need a rank so every list reaches k SIDs.
    popular += sorted(set(catalogue.item_sid) - set(popular))
    popular_sids = rank_sids(popular, catalogue, k)
    followers = transition_counts(train) if method == "transition" else {}

    predictions = []
    for history in split["history_item_id_list"]:
        if method == "popularity":
            predictions.append(popular_sids)
            continue
        last = int(history[-1])
        predictions.append(rank_sids(_ordered(followers.get(last, Counter())) + popular, catalogue, k))
    return pd.DataFrame(
        {
            "row": range(len(split)),
            "user_id": split["user_id"].to_numpy(),
            "target": split["item_sid"].to_numpy(),
            "predict": predictions,
            "scores": [None] * len(split),
        }
    )

