"""HR@K and NDCG@K of ranked SID predictions, equal to upstream ``calc.py`` to the last bit (docs/upstream.md 6.4).

``python -m minirec.score --predictions FILE --category CAT`` prints and logs them.

calc.py, per sample: ``pred = p.strip("\\"\\n").strip()``, ``target = output.strip(" \\n\\"")``; scan the beams
in order, count a prediction missing from the info file's SID set (CC), stop at the first ``pred == target``
(minID). The invalid check comes before the hit check, so an invalid hit beam counts too. Then
``HR@K = mean[minID < K]`` and ``NDCG@K = sum(1 / ln(minID + 2)) / n / (1 / ln 2)`` for each K <= beams.

The scan is vectorised: predictions are factorised once into integer codes, so hit and validity flags are a
``[n, beams]`` array. NDCG is summed sequentially in row order with ``math.log`` gains, as calc.py does, so
the floats are identical, not merely close. Two harness additions: ``invalid_all`` (invalid predictions among
all beams) and ``HR_coll@K``, where a hit on a SID shared by m items counts 1/m.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from minirec.beams import BeamFormatError

DEFAULT_KS = (1, 3, 5, 10, 20, 50)


def strip_prediction(text: str) -> str:
    """calc.py's cleaning of one beam: quotes and newlines off both ends, then whitespace."""
    return text.strip("\"\n").strip()


def strip_target(text: str) -> str:
    """calc.py's cleaning of the target: spaces, newlines and quotes off both ends (not tabs)."""
    return text.strip(" \n\"")


@dataclass(frozen=True)
class BeamMatrix:
    """Cleaned predictions as integer codes: ``codes[i, b]`` indexes ``strings``; targets share the codes."""

    codes: np.ndarray  # [n, beams] int64
    target_codes: np.ndarray  # [n] int64
    strings: np.ndarray  # distinct cleaned strings (object array)

    @property
    def n(self) -> int:
        return self.codes.shape[0]

    @property
    def num_beams(self) -> int:
        return self.codes.shape[1]

    @property
    def hits(self) -> np.ndarray:
        """``[n, beams]`` bool: the cleaned prediction equals the cleaned target."""
        return self.codes == self.target_codes[:, None]

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, source: str = "predictions") -> "BeamMatrix":
        """Clean and encode a harness frame; every row must have as many predictions as the first one."""
        predicts = frame["predict"].tolist()
        if not predicts:
            raise BeamFormatError(source, "no rows to score")
        lengths = np.fromiter((len(p) for p in predicts), dtype=np.int64, count=len(predicts))
        num_beams = int(lengths[0])
        if num_beams == 0:
            raise BeamFormatError(source, "predict is empty", row=0, field="predict")
        uneven = np.flatnonzero(lengths != num_beams)
        if uneven.size:
            row = int(uneven[0])
            raise BeamFormatError(
                source, f"has {lengths[row]} predictions but row 0 has {num_beams}; all rows need the same beam count",
                row=row, field="predict",
            )
        raw = list(itertools.chain.from_iterable(predicts))
        raw_codes, raw_strings = pd.factorize(pd.Series(raw, dtype=object))
        raw_targets = frame["target"].tolist()
        # Clean each distinct raw string once, then give equal cleaned strings one code.
        cleaned = [strip_prediction(s) for s in raw_strings] + [strip_target(t) for t in raw_targets]
        codes, strings = pd.factorize(pd.Series(cleaned, dtype=object))
        prediction_codes = codes[: len(raw_strings)][raw_codes].reshape(len(predicts), num_beams)
        return cls(
            codes=prediction_codes.astype(np.int64),
            target_codes=codes[len(raw_strings):].astype(np.int64),
            strings=np.asarray(strings, dtype=object),
        )

    def membership(self, members: Iterable[str]) -> np.ndarray:
        """``[n, beams]`` bool: the cleaned prediction is in ``members``."""
        members = frozenset(members)
        known = np.fromiter((s in members for s in self.strings), dtype=bool, count=len(self.strings))
        return known[self.codes]


@dataclass(frozen=True)
class RankMetrics:
    """Point estimates plus the per-row values they average (the bootstrap resamples these)."""

    ks: tuple[int, ...]
    first_hit: np.ndarray  # [n] 0-based rank of the first hit; num_beams when none
    values: dict[str, float]  # "HR@K", "NDCG@K", "HR_coll@K"
    per_row: dict[str, np.ndarray]  # same keys, one value per row; their mean is the estimate
    invalid: int
    invalid_all: int


def usable_ks(ks: Sequence[int], num_beams: int) -> tuple[int, ...]:
    """The cut-offs calc.py reports: those not above the beam count, ascending."""
    return tuple(sorted({int(k) for k in ks if 0 < int(k) <= num_beams}))


def rank_metrics(
    beams: BeamMatrix,
    valid_sids: Iterable[str],
    sid_items: Mapping[str, Sequence[int]] | None = None,
    ks: Sequence[int] = DEFAULT_KS,
) -> RankMetrics:
    """calc.py's HR@K, NDCG@K and CC (``invalid``), plus ``invalid_all`` and ``HR_coll@K``."""
    n, num_beams = beams.n, beams.num_beams
    # calc.py strips the info file's first column before building its set.
    invalid_flags = ~beams.membership(s.strip() for s in valid_sids)
    hits = beams.hits
    has_hit = hits.any(axis=1)
    first_hit = np.where(has_hit, hits.argmax(axis=1), num_beams)
    scanned = np.arange(num_beams)[None, :] <= first_hit[:, None]  # the hit beam is scanned too

    # One gain per possible rank, computed with math.log exactly as calc.py does.
    gain = np.array([1 / math.log(rank + 2) for rank in range(num_beams)] + [0.0])
    group_size = _collision_sizes(beams, sid_items or {})
    selected = usable_ks(ks, num_beams)
    values: dict[str, float] = {}
    per_row: dict[str, np.ndarray] = {}
    for k in selected:
        hit_at_k = first_hit < k
        row_gain = np.where(hit_at_k, gain[first_hit], 0.0)
        # Sequential row-order sum: calc.py accumulates one sample at a time.
        values[f"HR@{k}"] = float(np.count_nonzero(hit_at_k)) / n
        values[f"NDCG@{k}"] = float(np.cumsum(row_gain)[-1]) / n / (1.0 / math.log(2))
        values[f"HR_coll@{k}"] = float(np.sum(hit_at_k / group_size)) / n
        per_row[f"HR@{k}"] = hit_at_k.astype(np.float64)
        per_row[f"NDCG@{k}"] = row_gain * math.log(2)
        per_row[f"HR_coll@{k}"] = hit_at_k / group_size
    return RankMetrics(
        ks=selected,
        first_hit=first_hit,
        values=values,
        per_row=per_row,
        invalid=int(np.count_nonzero(invalid_flags & scanned)),
        invalid_all=int(np.count_nonzero(invalid_flags)),
    )


def _collision_sizes(beams: BeamMatrix, sid_items: Mapping[str, Sequence[int]]) -> np.ndarray:
    """Items sharing each row's target SID (1 for a SID outside the catalogue)."""
    sizes = [max(len(sid_items.get(sid, ())), 1) for sid in beams.strings]
    return np.asarray(sizes, dtype=np.float64)[beams.target_codes]
