"""Rankings of catalogue SIDs from a trained baseline, in the harness beam format (:mod:`minirec.beams`).

    frame = rank_split(model, read_split(files.test), catalogue)      # row, user_id, target, predict, scores
    scores = score_predictions(frame, catalogue)

Item-id models score every item; the items are sorted by logit (ties: lower item id first) and mapped to their
SIDs, a SID taking the rank of its best item and appearing once (the rule of
the popularity and transition floors of :mod:`minirec.baselines`: colliding items share a SID,
docs/upstream.md 1.6). ``scores`` holds that
best item's logit. All of it is tensor work over the batch; only the final lists are built in Python.
TIGER ranks by constrained beam search with ``k`` beams (``scores``: the beam scores, summed log-probs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from minirec.data.catalogue import Catalogue
from minirec.recsys.sequences import Sequences

BATCH = 1024
TIGER_BATCH = 32


@dataclass(frozen=True)
class SidTable:
    """Item id -> SID index, the distinct SIDs, and how many items share a SID with an earlier one."""

    item_sid: torch.Tensor  # (num_items,) int64
    sids: np.ndarray  # (num_sids,) str
    extra: int  # num_items - num_sids

    @classmethod
    def of(cls, catalogue: Catalogue) -> "SidTable":
        items = sorted(catalogue.item_sid)
        if items != list(range(len(items))):
            raise ValueError("catalogue item ids are not 0..N-1")
        sids, inverse = np.unique(np.array([catalogue.item_sid[i] for i in items], dtype=object).astype(str),
                                  return_inverse=True)
        return cls(torch.from_numpy(inverse.astype(np.int64)), sids, len(items) - len(sids))


def rank_scores(scores: torch.Tensor, table: SidTable, k: int) -> tuple[list[list[str]], list[list[float]]]:
    """``k`` distinct SIDs per row of a (rows, num_items) score matrix, best first, and their scores."""
    rows, num_items = scores.shape
    if num_items != len(table.item_sid):
        raise ValueError(f"scores cover {num_items} items, the catalogue has {len(table.item_sid)}")
    if k > len(table.sids):
        raise ValueError(f"k={k} but the catalogue has only {len(table.sids)} distinct SIDs")
    # Among the best k + extra items at least k SIDs are distinct (only `extra` items can repeat a SID).
    width = min(num_items, k + table.extra)
    values, items = torch.sort(scores.float(), dim=1, descending=True, stable=True)
    values, items = values[:, :width], items[:, :width]
    sid = table.item_sid[items]
    ordered, order = torch.sort(sid, dim=1, stable=True)
    first_sorted = torch.ones_like(ordered, dtype=torch.bool)
    first_sorted[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    first = torch.empty_like(first_sorted).scatter_(1, order, first_sorted)
    keep = first & (first.cumsum(1) <= k)
    chosen = sid[keep].view(rows, k).numpy()
    return table.sids[chosen].tolist(), values[keep].view(rows, k).double().tolist()


def _frame(split: pd.DataFrame, predict: list, scores: list) -> pd.DataFrame:
    return pd.DataFrame({
        "row": range(len(split)),
        "user_id": split["user_id"].to_numpy() if "user_id" in split.columns else [None] * len(split),
        "target": split["item_sid"].to_numpy(),
        "predict": predict,
        "scores": scores,
    })


@torch.no_grad()
def rank_split(model: nn.Module, frame: pd.DataFrame, catalogue: Catalogue, k: int = 50,
               batch_size: int | None = None) -> pd.DataFrame:
    """``k`` distinct catalogue SIDs for every row of ``frame`` (a :func:`~minirec.data.read_split` frame)."""
    from minirec.recsys.tiger import Tiger

    model.eval()
    max_len = getattr(model, "max_len", 10)
    sequences = Sequences.from_histories(frame["history_item_id_list"].tolist(), [None] * len(frame),
                                         len(catalogue.item_sid), max_len)
    predict: list[list[str]] = []
    scores: list[list[float]] = []
    device = next(model.parameters()).device
    if isinstance(model, Tiger):
        step = batch_size or TIGER_BATCH
        for start in range(0, len(sequences), step):
            batch = sequences.subset(slice(start, start + step)).to(device)
            sids, beam_scores = model.beam_search(batch.history, batch.lengths, k)
            predict.extend(sids)
            scores.extend(beam_scores)
        return _frame(frame, predict, scores)
    table = SidTable.of(catalogue)
    step = batch_size or BATCH
    for start in range(0, len(sequences), step):
        batch = sequences.subset(slice(start, start + step))
        logits = model.scores(batch.history.to(device), batch.lengths.to(device)).cpu()
        sids, values = rank_scores(logits, table, k)
        predict.extend(sids)
        scores.extend(values)
    return _frame(frame, predict, scores)
