"""A split as the tensors every learned baseline reads: right-padded item-id histories, lengths and targets.

Upstream's ``sasrec.py`` (docs/upstream.md 7) parses ``history_item_id`` and right-pads it to 10 with the pad id
``item_num`` (the item count, one past the last real id); its GRU and Caser use the same tensors. Here:

    history  (n, max_len) int64   the last ``max_len`` history item ids, then ``num_items`` up to ``max_len``
    lengths  (n,) int64           real (unpadded) history length, 1..max_len
    targets  (n,) int64           the row's ``item_id``

Every split row has between 1 and 10 history items (docs/upstream.md 1.1), so nothing is cut with ``max_len=10``; a longer
history keeps its last ``max_len`` items, as upstream's ``pad_history`` does. A row whose history is empty or
names an item outside ``0..num_items-1`` raises :class:`SequenceError` naming the row.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

MAX_LEN = 10


class SequenceError(ValueError):
    """A split row that cannot become a history tensor; the message names the row and the field."""


@dataclass(frozen=True)
class Sequences:
    """Right-padded histories, their lengths and the targets of one split (see the module docstring)."""

    history: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor
    num_items: int

    @property
    def pad_id(self) -> int:
        return self.num_items

    @property
    def max_len(self) -> int:
        return self.history.shape[1]

    def __len__(self) -> int:
        return self.history.shape[0]

    def subset(self, index: torch.Tensor | slice) -> "Sequences":
        return Sequences(self.history[index], self.lengths[index], self.targets[index], self.num_items)

    def to(self, device: torch.device | str) -> "Sequences":
        return Sequences(self.history.to(device), self.lengths.to(device), self.targets.to(device), self.num_items)

    @classmethod
    def from_histories(cls, histories, targets, num_items: int, max_len: int = MAX_LEN) -> "Sequences":
        """From lists of item ids (ints or int-like strings) and one target per history (``None``: -1)."""
        padded, lengths = [], []
        for row, history in enumerate(histories):
            ids = [int(item) for item in history][-max_len:]
            if not ids:
                raise SequenceError(f"row {row}, field history_item_id: empty history")
            padded.append(ids + [num_items] * (max_len - len(ids)))
            lengths.append(len(ids))
        history = torch.tensor(padded, dtype=torch.long).reshape(len(padded), max_len)
        target = torch.tensor([-1 if t is None else int(t) for t in targets], dtype=torch.long)
        bad = ((history < 0) | (history > num_items)).any(1) | (history == num_items).logical_and(
            torch.arange(max_len) < torch.tensor(lengths).unsqueeze(1)).any(1)
        bad |= target >= num_items
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise SequenceError(f"row {row}: an item id outside 0..{num_items - 1} "
                                f"(history {history[row].tolist()}, target {int(target[row])})")
        return cls(history, torch.tensor(lengths, dtype=torch.long), target, num_items)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, num_items: int, max_len: int = MAX_LEN) -> "Sequences":
        """From a :func:`minirec.data.read_split` frame (``history_item_id_list`` and ``item_id``)."""
        histories = frame["history_item_id_list"].tolist()
        for row, history in enumerate(histories):
            if not isinstance(history, list):
                raise SequenceError(f"row {row}, field history_item_id: not a parsed list ({history!r})")
        return cls.from_histories(histories, frame["item_id"].tolist(), num_items, max_len)
