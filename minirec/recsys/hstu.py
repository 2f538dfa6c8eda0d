"""HSTU (Zhai et al. 2024, "Actions Speak Louder than Words", arXiv 2402.17152) over the harness's histories.

Source for the structure: Meta's public code, github.com/meta-recsys/generative-recommenders,
``generative_recommenders/research/modeling/sequential/hstu.py`` (``SequentialTransductionUnitJagged`` with
``normalization="rel_bias"``, ``linear_config="uvqk"``, ``linear_activation="silu"``, ``concat_ua=False``) and
its input/output modules; torch-rechub 0.9's ``HSTUModel`` / ``HSTULayer`` follow the same equations. One
block (paper eq. 1-3), for ``x`` of shape (T, D):

    U, V, Q, K = split(SiLU(LayerNorm(x) @ W_uvqk))                  W_uvqk: D x (2 H dv + 2 H dqk), no bias
    A          = SiLU(Q K^T + rab^p) / T, times the causal mask        pointwise aggregated attention, no softmax
    x'         = x + f_2(dropout(U * LayerNorm(A V)))                  gating by U; LayerNorms without affine

``rab^p`` is Meta's learned relative position bias (one weight per offset, ``2T - 1`` of them, ``N(0, 0.02)``),
shared by the heads of a block. The histories carry no timestamps, so the time-bucket half of Meta's
``RelativeBucketedTimeAndPositionBasedBias`` is absent. Input: ``item_emb * sqrt(D) + pos_emb``, dropout, pad
positions zeroed (``LearnablePositionalEmbeddingInputFeaturesPreprocessor``). Output: the state at position
``len - 1``, L2-normalised, dotted with the L2-normalised item embeddings and divided by a temperature (0.05):
Meta's ``l2_norm`` user embedding, ``item_l2_norm`` and ``DotProduct`` interaction. Item embeddings are the
input table (tied), truncated-normal with std ``sqrt(1 / D)`` as Meta's ``LocalEmbeddingModule``.

Loss (``configs/baselines/hstu.yaml``): full softmax cross-entropy over the whole catalogue (3.7k items)
instead of Meta's sampled softmax with 128-512 negatives, which is an approximation of the same objective
needed only for large catalogues; one target per row (the harness's rows are already every prefix of a user
sequence) instead of a loss at every position. Hyper-parameters of the CPU preset follow Meta's ml-1m config
(2 blocks, 1 head, dqk = dv = D, dropout 0.2, lr 1e-3, no weight decay) with D = 64 instead of 50; the
``paper:`` section of the YAML holds Meta's Amazon-Books config (4 blocks, 4 heads, dqk = dv = 16, D = 64,
dropout 0.5). MiniOneRec's Table 1 reports HSTU Industrial HR@10 0.1163 without saying which settings it used.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _truncated_normal_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """Meta's ``truncated_normal``: N(0, std) cut at two standard deviations."""
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std)


class RelativePositionalBias(nn.Module):
    """``rab^p``: a learned weight per offset ``j - i`` in ``-(T-1)..T-1``, as a (T, T) matrix."""

    def __init__(self, max_len: int):
        super().__init__()
        self.max_len = max_len
        self.weights = nn.Parameter(torch.empty(2 * max_len - 1).normal_(0, 0.02))
        positions = torch.arange(max_len)
        self.register_buffer("offsets", positions.view(1, -1) - positions.view(-1, 1) + max_len - 1,
                             persistent=False)

    def forward(self, length: int) -> torch.Tensor:
        return self.weights[self.offsets[:length, :length]]


class HSTUBlock(nn.Module):
    """One sequential transduction unit (see the module docstring)."""

    def __init__(self, hidden: int, num_heads: int, dqk: int, dv: int, dropout: float, max_len: int,
                 eps: float = 1e-6):
        super().__init__()
        self.hidden, self.num_heads, self.dqk, self.dv, self.eps = hidden, num_heads, dqk, dv, eps
        self.uvqk = nn.Parameter(torch.empty(hidden, 2 * num_heads * (dv + dqk)).normal_(0, 0.02))
        self.rab = RelativePositionalBias(max_len)
        self.output = nn.Linear(num_heads * dv, hidden)
        nn.init.xavier_uniform_(self.output.weight)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        heads = self.num_heads
        projected = F.silu(F.layer_norm(x, (self.hidden,), eps=self.eps) @ self.uvqk)
        u, v, q, k = projected.split([heads * self.dv, heads * self.dv, heads * self.dqk, heads * self.dqk], -1)
        q = q.view(batch, length, heads, self.dqk).transpose(1, 2)
        k = k.view(batch, length, heads, self.dqk).transpose(1, 2)
        v = v.view(batch, length, heads, self.dv).transpose(1, 2)
        weights = F.silu(q @ k.transpose(-1, -2) + self.rab(length)) / length * causal  # (B, heads, T, T)
        attended = (weights @ v).transpose(1, 2).reshape(batch, length, heads * self.dv)
        gated = u * F.layer_norm(attended, (heads * self.dv,), eps=self.eps)
        return x + self.output(self.dropout(gated))


class HSTU(nn.Module):
    """``scores(history, lengths)`` -> (batch, num_items) cosine logits / temperature."""

    def __init__(self, num_items: int, hidden: int = 64, max_len: int = 10, num_blocks: int = 2,
                 num_heads: int = 1, dqk: int = 64, dv: int = 64, dropout: float = 0.2, temperature: float = 0.05,
                 eps: float = 1e-6):
        super().__init__()
        self.num_items, self.hidden, self.max_len = int(num_items), hidden, max_len
        self.temperature, self.eps = temperature, eps
        self.item_embeddings = nn.Embedding(num_items + 1, hidden)
        self.positional_embeddings = nn.Embedding(max_len, hidden)
        _truncated_normal_(self.item_embeddings.weight.data, math.sqrt(1.0 / hidden))
        _truncated_normal_(self.positional_embeddings.weight.data, math.sqrt(1.0 / hidden))
        self.emb_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(HSTUBlock(hidden, num_heads, dqk, dv, dropout, max_len, eps)
                                    for _ in range(num_blocks))
        self.register_buffer("causal", torch.ones(max_len, max_len).tril(), persistent=False)

    def states(self, history: torch.Tensor) -> torch.Tensor:
        length = history.shape[1]
        positions = torch.arange(length, device=history.device)
        x = self.item_embeddings(history) * self.hidden ** 0.5 + self.positional_embeddings(positions)
        x = self.emb_dropout(x) * history.ne(self.num_items).unsqueeze(-1)
        causal = self.causal[:length, :length]
        for block in self.blocks:
            x = block(x, causal)
        return x

    def scores(self, history: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, self.hidden)
        user = F.normalize(self.states(history).gather(1, last).squeeze(1), dim=-1, eps=self.eps)
        items = F.normalize(self.item_embeddings.weight[: self.num_items], dim=-1, eps=self.eps)
        return user @ items.T / self.temperature

    forward = scores
