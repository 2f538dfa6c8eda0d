"""GRU4Rec in the lineage of upstream's ``sasrec.py --model GRU`` (MiniOneRec 81b4ba9, class ``GRU``).

Sources: the ``GRU`` class of upstream MiniOneRec's ``sasrec.py`` and, its nearest public re-run, MIMIGenRec's
``scripts/rec_zoo/gru.py`` + ``runner.py`` (github.com/cocoshe/MIMIGenRec), whose hyper-parameters are the
same as upstream's defaults and are used here: hidden 32, one GRU layer, item embeddings ``N(0, 0.01)`` over
``item_num + 1`` rows (pad = item_num), no dropout, the last hidden state -> ``Linear(hidden, item_num)``;
trained like SASRec (BCE on the target and one uniform negative, Adam lr 1e-3, L2 1e-5, batch 1,024, up to
500 epochs, best by valid NDCG@20, patience 20). MIMIGenRec reports Industrial test HR@10 0.1041 (NDCG@10
0.0713, best epoch 128) on the full train split (its ``experiments/GRU_Industrial_and_Scientific``); the
paper's Table 1 has HR@10 0.0999.

Upstream packs the right-padded histories (``pack_padded_sequence``) and reads the final hidden state. A GRU
is causal, so with right padding the output at position ``len - 1`` of the unpacked run is that same state:
this module runs the padded batch and gathers it, which is the same function without the packing.
"""

from __future__ import annotations

import torch
from torch import nn


class GRU4Rec(nn.Module):
    """``scores(history, lengths)`` -> (batch, num_items) logits from the GRU state after the last real item."""

    def __init__(self, num_items: int, hidden: int = 32, max_len: int = 10, num_layers: int = 1):
        super().__init__()
        self.num_items, self.hidden, self.max_len = int(num_items), hidden, max_len
        self.item_embeddings = nn.Embedding(num_items + 1, hidden)
        nn.init.normal_(self.item_embeddings.weight, 0, 0.01)
        self.gru = nn.GRU(hidden, hidden, num_layers=num_layers, batch_first=True)
        self.s_fc = nn.Linear(hidden, num_items)

    def scores(self, history: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.gru(self.item_embeddings(history))
        last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, self.hidden)
        return self.s_fc(outputs.gather(1, last).squeeze(1))

    forward = scores
