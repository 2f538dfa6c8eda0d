"""Semantic IDs (SIDs): the token strings ``<a_x><b_y><c_z>[<d_r>]`` that name items.

Upstream stores an item's SID as a list of tokens in ``<Cat>.index.json`` and as the concatenated string in
the CSVs and the info file (docs/upstream.md 1.1-1.2). Levels are the token positions: level 1 is ``<a_*>``.
"""

from __future__ import annotations

import re
from typing import Iterable

SID_PATTERN = r"^(<[a-z]_\d+>)+$"
_SID_RE = re.compile(SID_PATTERN)
_TOKEN_RE = re.compile(r"<[a-z]_\d+>")


def is_sid(text: str) -> bool:
    """True when ``text`` is one or more SID tokens and nothing else."""
    return bool(_SID_RE.match(text))


def split_sid(sid: str) -> list[str]:
    """``"<a_1><b_2><c_3>"`` -> ``["<a_1>", "<b_2>", "<c_3>"]``; tokens only, anything else dropped."""
    return _TOKEN_RE.findall(sid)


def join_sid(tokens: Iterable[str]) -> str:
    """Inverse of :func:`split_sid`."""
    return "".join(tokens)


def level_of(token: str) -> int:
    """1-based level of a SID token: ``<a_*>`` is 1, ``<b_*>`` is 2, ..."""
    return ord(token[1]) - ord("a") + 1


def sorted_sid_tokens(sids: Iterable[Iterable[str]]) -> list[str]:
    """Every distinct token of the given SIDs, sorted lexicographically as upstream adds them (docs/upstream.md 1.5)."""
    return sorted({tok for sid in sids for tok in sid})
