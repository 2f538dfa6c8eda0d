"""Integer codes -> SID tokens, in the two upstream conventions (docs/upstream.md 1.2, 3.2-3.4).

- RQ-VAE and faiss RQ-Kmeans: 0-based codes, one token per level, collisions left as they are.
- Constrained RQ-Kmeans (and RQ-Kmeans+): codes + 1, and items whose full code path is shared get a 4th
  token ``<d_r>``, r = 1..k their ordinal rank inside the group in item (row) order.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from minirec.sid import join_sid


def level_token(level: int, code: int) -> str:
    """``level_token(0, 5) == "<a_5>"``; levels are 0-based here, ``chr(97 + level)`` as upstream."""
    return f"<{chr(97 + level)}_{int(code)}>"


def tokens_from_codes(codes: np.ndarray, offset: int = 0) -> list[list[str]]:
    """One token list per row of an ``(n_items, n_levels)`` code matrix."""
    return [[level_token(level, code + offset) for level, code in enumerate(row)] for row in codes.tolist()]


def append_dedup_token(tokens: list[list[str]]) -> list[list[str]]:
    """Upstream's 4th-token dedup: every member of a shared path gets ``<x_r>``, r its 1-based rank in row order."""
    paths = [join_sid(row) for row in tokens]
    group_size = Counter(paths)
    seen: dict[str, int] = defaultdict(int)
    result = []
    for row, path in zip(tokens, paths):
        if group_size[path] > 1:
            seen[path] += 1
            row = row + [level_token(len(row), seen[path])]
        result.append(list(row))
    return result


def collision_groups(codes: np.ndarray) -> list[list[int]]:
    """Row indices sharing a full code path, groups in order of first appearance."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for row, path in enumerate(map(tuple, codes.tolist())):
        groups[path].append(row)
    return [rows for rows in groups.values() if len(rows) > 1]
