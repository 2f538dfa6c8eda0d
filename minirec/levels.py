"""Per-SID-level analysis of ranked predictions: a harness extension, not an upstream metric (docs/upstream.md 6.6).

``python -m minirec.score --predictions FILE --category CAT`` writes it as ``levels.json`` and logs
``level_independent_L1_at_10``, ``level_cumulative_L2_at_10``, ``level_dropoff_L3_at_10``, ...

Levels are SID token positions (level 1 is ``<a_*>``); predictions and targets are cleaned as in calc.py
(:mod:`minirec.metrics`), and a prediction that is not made only of SID tokens matches no level. For each
cut-off K, over rows (each row one user's test case):

- ``independent[K][l-1]``: share of rows where some top-K prediction has the target's level-l token at
  position l (each level on its own);
- ``cumulative[K][l-1]``: share of rows where one single top-K prediction matches levels 1..l of the target
  (a prefix match); at the full depth this is HR@K whenever predictions are as long as targets;
- ``dropoff[K]``: ``[cumulative L1, cumulative L2 / L1, cumulative L3 / L2, ...]``, the share of rows that
  keep matching when one more level is required; 0/0 is defined as 0 (nothing left to keep).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from minirec.metrics import BeamMatrix
from minirec.sid import is_sid, split_sid

LEVEL_KINDS = ("independent", "cumulative", "dropoff")
_NO_TOKEN = -1


def level_tables(beams: BeamMatrix, ks: Sequence[int]) -> dict[str, dict[str, list[float]]]:
    """``{"independent": {"10": [l1, l2, l3]}, "cumulative": {...}, "dropoff": {...}}`` for each K in ``ks``."""
    tokens = _token_codes(beams.strings)
    depth = max(int((tokens[beams.target_codes] != _NO_TOKEN).sum(axis=1).max()), 1)
    predicted = tokens[beams.codes]  # [n, beams, depth]
    wanted = tokens[beams.target_codes][:, None, :]  # [n, 1, depth]
    level_match = (predicted == wanted) & (predicted != _NO_TOKEN)
    prefix_match = np.logical_and.accumulate(level_match, axis=2)

    independent_rank = _first_true(level_match)  # [n, depth]
    cumulative_rank = _first_true(prefix_match)
    tables: dict[str, dict[str, list[float]]] = {kind: {} for kind in LEVEL_KINDS}
    for k in ks:
        independent = (independent_rank[:, :depth] < k).mean(axis=0)
        cumulative = (cumulative_rank[:, :depth] < k).mean(axis=0)
        tables["independent"][str(k)] = [float(v) for v in independent]
        tables["cumulative"][str(k)] = [float(v) for v in cumulative]
        tables["dropoff"][str(k)] = dropoff(cumulative)
    return tables


def dropoff(cumulative: Sequence[float]) -> list[float]:
    """``[c1, c2 / c1, c3 / c2, ...]`` with 0/0 taken as 0."""
    rates = [float(cumulative[0])]
    for previous, current in zip(cumulative[:-1], cumulative[1:]):
        rates.append(float(current) / float(previous) if previous > 0 else 0.0)
    return rates


def level_metric_names(tables: dict[str, dict[str, list[float]]]) -> dict[str, float]:
    """Flat MLflow metrics: ``level_<kind>_L<l>_at_<K>``."""
    return {
        f"level_{kind}_L{level}_at_{k}": value
        for kind, by_k in tables.items()
        for k, values in by_k.items()
        for level, value in enumerate(values, start=1)
    }


def _token_codes(strings: np.ndarray) -> np.ndarray:
    """``[distinct strings, max depth]`` integer token ids; ``_NO_TOKEN`` past a SID's end or for non-SIDs."""
    split = [split_sid(s) if is_sid(s) else [] for s in strings]
    depth = max((len(tokens) for tokens in split), default=0) or 1
    vocabulary: dict[str, int] = {}
    codes = np.full((len(split), depth), _NO_TOKEN, dtype=np.int64)
    for row, tokens in enumerate(split):
        for level, token in enumerate(tokens):
            codes[row, level] = vocabulary.setdefault(token, len(vocabulary))
    return codes


def _first_true(flags: np.ndarray) -> np.ndarray:
    """``[n, depth]`` index along axis 1 of the first True of ``flags[n, beams, depth]``; ``beams`` when none."""
    any_true = flags.any(axis=1)
    return np.where(any_true, flags.argmax(axis=1), flags.shape[1])
