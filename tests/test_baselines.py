"""The non-learned baselines on the bundled data: well-formed rankings, counted the way their docstrings say."""

from __future__ import annotations

from collections import Counter

import pytest

from minirec import baselines
from minirec.data import Catalogue, read_split


@pytest.fixture(scope="module")
def industrial(industrial_files):
    return (
        Catalogue.load(industrial_files),
        read_split(industrial_files.train),
        read_split(industrial_files.test),
    )


@pytest.mark.parametrize("method", baselines.METHODS)
def test_every_row_gets_fifty_distinct_catalogue_sids(industrial, method):
    catalogue, train, test = industrial
    ranked = baselines.rank(method, train, test, catalogue, k=50)
    assert len(ranked) == len(test) == 4533
    assert list(ranked["target"]) == list(test["item_sid"])
    for predictions in ranked["predict"]:
        assert len(predictions) == 50
        assert len(set(predictions)) == 50
        assert set(predictions) <= catalogue.valid_sids


def test_popularity_puts_the_most_frequent_train_item_first(industrial):
    catalogue, train, test = industrial
    counts = Counter()
    for history, target in zip(train["history_item_id"], train["item_id"]):
        counts.update(int(x) for x in history.strip("[]").split(", "))
        counts[int(target)] += 1
    top_item, _ = max(counts.items(), key=lambda pair: (pair[1], -pair[0]))
    ranked = baselines.rank("popularity", train, test.head(3), catalogue)
    assert all(p[0] == catalogue.item_sid[top_item] for p in ranked["predict"])


def test_transition_ranks_the_most_frequent_successor_of_the_last_item_first(industrial):
    catalogue, train, test = industrial
    row = test.iloc[0]
    last = int(row["history_item_id_list"][-1])
    successors = Counter()
    seen = set()
    for history, target in zip(train["history_item_id_list"], train["item_id"]):
        sequence = tuple(int(x) for x in history) + (int(target),)
        if sequence in seen:
            continue
        seen.add(sequence)
        successors.update(b for a, b in zip(sequence, sequence[1:]) if a == last)
    ranked = baselines.rank("transition", train, test.head(1), catalogue)
    if successors:
        best = min(successors.items(), key=lambda pair: (-pair[1], pair[0]))[0]
        assert ranked["predict"][0][0] == catalogue.item_sid[best]
    else:
        assert ranked["predict"][0] == baselines.rank("popularity", train, test.head(1), catalogue)["predict"][0]


def test_transitions_beat_popularity_on_both_categories(industrial_files, office_files):
    for files in (industrial_files, office_files):
        catalogue, train, test = Catalogue.load(files), read_split(files.train), read_split(files.test)
        hr = {}
        for method in baselines.METHODS:
            ranked = baselines.rank(method, train, test, catalogue, k=10)
            hr[method] = sum(t in p for t, p in zip(ranked["target"], ranked["predict"])) / len(ranked)
        assert hr["transition"] > hr["popularity"] > 0


def test_unknown_method_is_refused(industrial):
    catalogue, train, test = industrial
    with pytest.raises(ValueError, match="popularity, transition"):
        baselines.rank("random", train, test, catalogue)
