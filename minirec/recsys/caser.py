"""Caser in the lineage of upstream's ``sasrec.py --model Caser`` (MiniOneRec 81b4ba9, class ``Caser``).

Sources: the ``Caser`` class of upstream MiniOneRec's ``sasrec.py`` and MIMIGenRec's
``scripts/rec_zoo/caser.py`` + ``runner.py`` (github.com/cocoshe/MIMIGenRec), with the same hyper-parameters,
used here: hidden 32, 16 horizontal filters of each height 2, 3 and 4 (full embedding width, ReLU, max-pool
over time), one vertical filter over the 10 positions (ReLU), dropout 0.3 on the concatenation, then
``Linear(hidden + 48, item_num)``. Item embeddings ``N(0, 0.01)`` over ``item_num + 1`` rows (pad = item_num)
with pad positions zeroed; convolution weights Xavier-normal, biases 0.1. Trained like SASRec (BCE on the
target and one uniform negative, Adam lr 1e-3, L2 1e-5, batch 1,024, up to 500 epochs, best by valid NDCG@20,
patience 20). MIMIGenRec reports Industrial test HR@10 0.0920 (NDCG@10 0.0663, best epoch 138) on the full
train split (``experiments/Caser_Industrial_and_Scientific``); the paper's Table 1 has HR@10 0.0942.

As upstream, the horizontal max-pool runs over all 10 positions, zeroed pads included, and the vertical
filter needs exactly ``max_len`` positions. Upstream's ``h_out.squeeze()`` drops the batch axis for a batch
of one; here only the width axis is squeezed.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class Caser(nn.Module):
    """``scores(history, lengths)`` -> (batch, num_items) logits (``lengths`` unused: pads are zeroed)."""

    def __init__(self, num_items: int, hidden: int = 32, max_len: int = 10, num_filters: int = 16,
                 filter_sizes: Sequence[int] = (2, 3, 4), dropout: float = 0.3):
        super().__init__()
        self.num_items, self.hidden, self.max_len = int(num_items), hidden, max_len
        self.filter_sizes = tuple(int(size) for size in filter_sizes)
        self.item_embeddings = nn.Embedding(num_items + 1, hidden)
        nn.init.normal_(self.item_embeddings.weight, 0, 0.01)
        self.horizontal_cnn = nn.ModuleList(nn.Conv2d(1, num_filters, (size, hidden)) for size in self.filter_sizes)
        self.vertical_cnn = nn.Conv2d(1, 1, (max_len, 1))
        for conv in [*self.horizontal_cnn, self.vertical_cnn]:
            nn.init.xavier_normal_(conv.weight)
            nn.init.constant_(conv.bias, 0.1)
        self.dropout = nn.Dropout(dropout)
        self.s_fc = nn.Linear(hidden + num_filters * len(self.filter_sizes), num_items)

    def scores(self, history: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.item_embeddings(history) * history.ne(self.num_items).unsqueeze(-1)
        emb = emb.unsqueeze(1)  # (B, 1, T, H)
        pooled = [F.relu(conv(emb)).squeeze(3).amax(2) for conv in self.horizontal_cnn]  # each (B, filters)
        vertical = F.relu(self.vertical_cnn(emb)).view(-1, self.hidden)
        return self.s_fc(self.dropout(torch.cat([*pooled, vertical], 1)))

    forward = scores
