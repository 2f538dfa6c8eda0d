"""Item text for embedding, built as upstream ``rq/text2emb/amazon_text2emb.py`` does (docs/upstream.md 3.1).

    from minirec.sids.text import item_texts
    texts = item_texts(catalogue.items)          # row i is item i

Each of ``title`` and ``description`` goes through :func:`clean_text` (upstream ``utils.clean_text``); the
non-empty results are joined with one space; an item with none becomes ``"unknown item"``. The description
is the string form of a Python list (docs/upstream.md 1.3), so its ``[`` and ``'`` characters stay, as upstream.

Upstream empties any field of 2,000 or more characters after cleaning (docs/upstream.md 8.1 N), which silently drops
about 100 descriptions per category. That is kept only with ``upstream_quirks=True``; by default long fields
are kept and the encoder's own truncation applies.
"""

from __future__ import annotations

import html
import re
from typing import Mapping

TEXT_FIELDS = ("title", "description")
UNKNOWN_ITEM = "unknown item"
# Upstream's length cut-off for one cleaned field (``utils.py:229-230``).
UPSTREAM_FIELD_LIMIT = 2000
# Bumped whenever the text recipe changes, so cached embeddings of an older recipe are never reused.
TEXT_RECIPE_VERSION = "title+description/clean_text/v1"

_TAG_RE = re.compile(r"</?\w+[^>]*>")
_DROPPED_CHARS_RE = re.compile(r'["\n\r]')


def clean_text(raw: str, upstream_quirks: bool = False) -> str:
    """Upstream ``clean_text`` for a string field.

    Strip, HTML-unescape, remove tags and the characters ``"`` ``\\n`` ``\\r``, then end the text with exactly
    one ``.`` (trailing dots collapse to one; one is appended if there is none). As upstream, an empty field
    therefore becomes ``"."``.
    """
    text = html.unescape(raw.strip())
    text = _TAG_RE.sub("", text)
    text = _DROPPED_CHARS_RE.sub("", text)
    # Upstream walks back over trailing dots but never past the first character.
    end = len(text)
    while end > 1 and text[end - 1] == ".":
        end -= 1
    text = text[:end] + "." if end < len(text) else text + "."
    if upstream_quirks and len(text) >= UPSTREAM_FIELD_LIMIT:
        return ""
    return text


def item_text(features: Mapping[str, str], upstream_quirks: bool = False) -> str:
    """The text embedded for one item: cleaned title and description joined by one space."""
    parts = []
    for name in TEXT_FIELDS:
        if name in features:
            cleaned = clean_text(str(features[name]), upstream_quirks).strip()
            if cleaned:
                parts.append(cleaned)
    return " ".join(parts) if parts else UNKNOWN_ITEM


def item_texts(items: Mapping[int, Mapping[str, str]], upstream_quirks: bool = False) -> list[str]:
    """Texts for items ``0..N-1`` in id order (row i = item i, as upstream sorts by integer id)."""
    ids = sorted(items)
    if ids != list(range(len(ids))):
        missing = sorted(set(range(len(ids))) - set(ids))[:5]
        raise ValueError(f"item ids must be 0..{len(ids) - 1} without gaps; missing e.g. {missing}")
    return [item_text(items[i], upstream_quirks) for i in ids]
