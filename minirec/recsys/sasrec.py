"""SASRec as upstream MiniOneRec trains it: ``sasrec.py`` + ``SASRecModules_ori.py`` at commit 81b4ba9.

Source: github.com/AkaliKong/MiniOneRec (``sasrec.py`` class ``SASRec``, ``SASRecModules_ori.py``
``MultiHeadAttention`` / ``PositionwiseFeedForward``), described in docs/upstream.md 7; written anew here, same
behaviour. Hyper-parameters (upstream's defaults, ``configs/baselines/sasrec.yaml``): hidden 32, 1 head,
dropout 0.3, histories of 10; BCE on the target and one uniformly drawn negative != target; Adam lr 1e-3,
L2 (weight decay) 1e-5, batch 1,024, up to 500 epochs, best epoch by valid NDCG@20, patience 20.

The forward pass, step by step as upstream:

1. ``e = item_emb(history) + pos_emb(0..9)``; item embeddings ``N(0, 0.01)`` over ``item_num + 1`` rows (the
   last one the pad), positions PyTorch's default ``N(0, 1)``; embedding dropout; pad positions zeroed.
2. Attention with queries ``ln_1(e)`` and keys/values ``e``: Q, K, V linear layers with bias, heads split on
   the hidden axis, scores scaled by ``1/sqrt(hidden)`` (the whole hidden size, as upstream, not per head),
   key masking (keys whose entries sum to 0, i.e. the zeroed pads), causal masking (both with upstream's
   ``-2**32 + 1``), softmax, query masking (queries summing to 0), dropout on the weights, then the
   residual ``+ queries``.
3. Feed-forward on ``ln_2(attention)``: two kernel-1 ``Conv1d`` with ReLU between, dropout, and its own
   LayerNorm of ``output + input``; pad positions zeroed; ``ln_3``.
4. The state at position ``len - 1`` (right padding) -> ``Linear(hidden, item_num)``: logits over the
   catalogue (the pad is never scored).

The parameter names are upstream's too, so a state dict saved by upstream's ``sasrec.py``
(``result_temp/best_<...>_state.pth``, what ``rl.py --cf_path`` loads) loads into :class:`SASRec` unchanged; on
the same weights (and the same dropout draws) both give identical logits, checked against upstream's code.

Parameters: ``(N+1)H + 10H`` embeddings, ``3(H^2+H)`` Q/K/V, ``2(H^2+H)`` convolutions, 4 LayerNorms
(``8H``), ``HN + N`` output: ``5H^2 + 2NH + 24H + N`` in all (245,478 for H = 32, N = 3,686).

Fixed against upstream (docs/upstream.md 8.1 L and neighbours), none of which changes a forward pass: the
output keeps its batch axis for a batch of one (upstream's ``.squeeze()`` drops it), the module holds no
device of its own, and the training-loop bugs (``early_stop`` read before assignment, ``--debug`` parsed
with ``type=bool``, wandb calls) do not exist in :mod:`minirec.recsys.train`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# Upstream's mask filler, ``-2 ** 32 + 1`` in Python: -(2**32) + 1.
MASK_VALUE = -(2.0 ** 32) + 1


class SelfAttention(nn.Module):
    """``SASRecModules_ori.MultiHeadAttention``: causal attention with key and query masking and a residual."""

    def __init__(self, hidden: int, num_heads: int, dropout: float):
        super().__init__()
        if hidden % num_heads:
            raise ValueError(f"hidden {hidden} is not divisible by num_heads {num_heads}")
        self.hidden, self.num_heads = hidden, num_heads
        self.linear_q = nn.Linear(hidden, hidden)
        self.linear_k = nn.Linear(hidden, hidden)
        self.linear_v = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        batch, length, _ = queries.shape
        heads = self.num_heads

        def split(x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, heads, T, C / heads)
            return x.view(batch, x.shape[1], heads, self.hidden // heads).transpose(1, 2)

        q, k, v = split(self.linear_q(queries)), split(self.linear_k(keys)), split(self.linear_v(keys))
        scores = q @ k.transpose(-1, -2) / self.hidden ** 0.5  # (B, heads, T_q, T_k)
        key_mask = keys.sum(-1).ne(0)[:, None, None, :]  # a zeroed (pad) key is masked
        causal = torch.ones(length, keys.shape[1], dtype=torch.bool, device=keys.device).tril()
        scores = scores.masked_fill(~key_mask, MASK_VALUE).masked_fill(~causal, MASK_VALUE)
        weights = scores.softmax(-1) * queries.sum(-1).ne(0)[:, None, :, None].to(scores.dtype)
        output = self.dropout(weights) @ v  # (B, heads, T_q, C / heads)
        return output.transpose(1, 2).reshape(batch, length, self.hidden) + queries


class FeedForward(nn.Module):
    """``SASRecModules_ori.PositionwiseFeedForward``: Conv1d(k=1) -> ReLU -> Conv1d(k=1), dropout, LN(out + in)."""

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.w_1 = nn.Conv1d(hidden, hidden, 1)
        self.w_2 = nn.Conv1d(hidden, hidden, 1)
        self.layer_norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.w_2(F.relu(self.w_1(x.transpose(1, 2)))).transpose(1, 2)
        return self.layer_norm(self.dropout(output) + x)


class SASRec(nn.Module):
    """Upstream's SASRec (see the module docstring); ``scores(history, lengths)`` -> (batch, num_items) logits."""

    def __init__(self, num_items: int, hidden: int = 32, max_len: int = 10, dropout: float = 0.3,
                 num_heads: int = 1):
        super().__init__()
        self.num_items, self.hidden, self.max_len = int(num_items), hidden, max_len
        self.item_embeddings = nn.Embedding(num_items + 1, hidden)
        nn.init.normal_(self.item_embeddings.weight, 0, 0.01)
        self.positional_embeddings = nn.Embedding(max_len, hidden)
        self.emb_dropout = nn.Dropout(dropout)
        self.ln_1 = nn.LayerNorm(hidden)
        self.ln_2 = nn.LayerNorm(hidden)
        self.ln_3 = nn.LayerNorm(hidden)
        self.mh_attn = SelfAttention(hidden, num_heads, dropout)
        self.feed_forward = FeedForward(hidden, dropout)
        self.s_fc = nn.Linear(hidden, num_items)

    def states(self, history: torch.Tensor) -> torch.Tensor:
        """The (batch, max_len, hidden) output of the block, pad positions zero before ``ln_3``."""
        positions = torch.arange(history.shape[1], device=history.device)
        seq = self.emb_dropout(self.item_embeddings(history) + self.positional_embeddings(positions))
        mask = history.ne(self.num_items).unsqueeze(-1).to(seq.dtype)
        seq = seq * mask
        attended = self.mh_attn(self.ln_1(seq), seq)
        return self.ln_3(self.feed_forward(self.ln_2(attended)) * mask)

    def scores(self, history: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, self.hidden)
        return self.s_fc(self.states(history).gather(1, last).squeeze(1))

    forward = scores
