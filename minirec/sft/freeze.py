"""``--freeze_llm true``: train only the SID rows of the input and output embedding matrices.

    python -m minirec.sft --preset tiny --freeze_llm true

Reference: docs/upstream.md 4.1 and 8.1 D. Upstream's option crashes (``original_vocab_size`` is undefined) and,
even fixed, would unfreeze only the input embedding and only rows past the old matrix size. Here every
parameter is frozen, then the input embedding and the output projection (one matrix when tied) are made
trainable with a gradient hook that zeroes every row that is not a SID token. SID tokens are found by id,
not by position, because Qwen checkpoints place some new tokens in pre-existing padding rows (docs/upstream.md 1.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minirec.sid import is_sid


@dataclass(frozen=True)
class FreezeSummary:
    """What stayed trainable: the SID row ids and the matrices that carry them."""

    sid_rows: tuple[int, ...]
    matrices: tuple[str, ...]
    trainable_parameters: int


def sid_token_ids(tokenizer) -> list[int]:
    """Ids of every SID token (``<a_1>``...) in the tokenizer's vocabulary, sorted."""
    return sorted(index for token, index in tokenizer.get_vocab().items() if is_sid(token) and token.count("<") == 1)


def freeze_all_but_sid_rows(model: torch.nn.Module, sid_rows: list[int]) -> FreezeSummary:
    """Freeze ``model`` except the SID rows of its embedding matrices; works with tied and untied weights.

    The optimiser must not decay weights (AdamW applies decay to every row of a trainable matrix, gradient
    or not); :class:`minirec.sft.config.SFTConfig` refuses ``freeze_llm`` with ``weight_decay > 0``.
    """
    if not sid_rows:
        raise ValueError("freeze_llm: the tokenizer holds no SID tokens; add them before freezing")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    named = {"input_embeddings": model.get_input_embeddings().weight}
    output = model.get_output_embeddings()
    if output is not None and output.weight is not named["input_embeddings"]:
        named["output_embeddings"] = output.weight
    for name, weight in named.items():
        if max(sid_rows) >= weight.shape[0]:
            raise ValueError(f"freeze_llm: SID id {max(sid_rows)} is outside the {name} matrix ({weight.shape[0]} rows)")
        keep = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
        keep[sid_rows] = 1
        weight.requires_grad_(True)
        weight.register_hook(lambda grad, keep=keep: grad * keep)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return FreezeSummary(sid_rows=tuple(sid_rows), matrices=tuple(named), trainable_parameters=trainable)
