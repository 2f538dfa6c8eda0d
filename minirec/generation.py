"""Beam-search settings for SID decoding, every field explicit and isolated from the model's own defaults.

Upstream passes ``GenerationConfig(num_beams, num_return_sequences, length_penalty=0.0, max_new_tokens, pad/eos)``
and lets transformers fill the rest from the checkpoint's ``generation_config.json`` (docs/upstream.md 8.1 G):
an Instruct checkpoint then turns evaluation into beam *sampling* with temperature, top-k, top-p and a
repetition penalty. In transformers 5.23 ``_prepare_generation_config`` still fills every field left ``None``
from ``model.generation_config``, so :func:`isolated_generation_config` swaps our config in as the model's own
for the duration of ``generate``, and :func:`effective_generation_config` checks what generate will really use.

``early_stopping=False`` is transformers' default and upstream's; with ``length_penalty=0`` its stopping test
compares the best running score with the worst finished one, which is exact because log-probabilities only
add non-positive terms (the same as ``"never"``). ``True`` would stop once ``num_beams`` SIDs are finished and
could miss higher-scoring longer (4-token) SIDs.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator, Sequence

from transformers import GenerationConfig

# What beam search must run with whatever the checkpoint says; checked on the effective config.
REQUIRED = dict(do_sample=False, length_penalty=0.0, early_stopping=False, temperature=1.0, top_p=1.0,
                repetition_penalty=1.0, no_repeat_ngram_size=0, num_beam_groups=1, diversity_penalty=0.0)


def beam_generation_config(num_beams: int, max_new_tokens: int, eos_token_id: int, pad_token_id: int) -> GenerationConfig:
    """The beam-search config of evaluation and GRPO roll-outs: ``num_beams`` ranked beams, no sampling."""
    return GenerationConfig(
        num_beams=num_beams,
        num_return_sequences=num_beams,
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        do_sample=False,
        length_penalty=0.0,
        early_stopping=False,
        temperature=1.0,
        top_k=None,
        top_p=1.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=None,
        # Needed for the final beam scores (``sequences_scores``); it also keeps each step's log-probs,
        # about 0.5 GB per step for 800 rows of a 152k vocabulary.
        output_scores=True,
        return_dict_in_generate=True,
    )


@contextlib.contextmanager
def isolated_generation_config(model, config: GenerationConfig) -> Iterator[GenerationConfig]:
    """Make ``config`` the model's own generation config while inside, so no checkpoint default can merge in."""
    saved = model.generation_config
    model.generation_config = copy.deepcopy(config)
    try:
        yield model.generation_config
    finally:
        model.generation_config = saved


def effective_generation_config(model, config: GenerationConfig) -> GenerationConfig:
    """The config ``generate`` will actually run with under :func:`isolated_generation_config`; raises if any
    setting that beam search depends on differs from what was asked."""
    with isolated_generation_config(model, config):
        effective, _ = model._prepare_generation_config(copy.deepcopy(config))
    expected = {**REQUIRED, "num_beams": config.num_beams, "num_return_sequences": config.num_return_sequences,
                "max_new_tokens": config.max_new_tokens, "eos_token_id": config.eos_token_id,
                "pad_token_id": config.pad_token_id}
    wrong = {key: (getattr(effective, key, None), value) for key, value in expected.items()
             if getattr(effective, key, None) != value}
    if wrong:
        raise RuntimeError(f"generation would run with {wrong} (effective, expected); refusing to decode")
    return effective


def left_pad(batch: Sequence[Sequence[int]], pad_token_id: int, device) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Left-pad token lists into ``(input_ids, attention_mask)`` (upstream pads prompts on the left with EOS,
    docs/upstream.md 6.2)."""
    import torch

    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        if ids:
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids):] = 1
    return input_ids.to(device), attention_mask.to(device)


def generate_constrained(model, input_ids, attention_mask, constraint, config: GenerationConfig):
    """``model.generate`` under ``config`` alone (no saved defaults) with a fresh SID constraint.

    Returns what ``generate`` returns. Raises :class:`minirec.constraint.ConstraintViolation` if any row left
    the SID grammar.
    """
    import torch
    from transformers import LogitsProcessorList

    # Sampling keeps each step's processed scores by reference when asked for them; beam search copies them.
    processor = constraint.logits_processor(reuse_output=config.num_beams > 1 or not config.output_scores)
    with isolated_generation_config(model, config), torch.inference_mode():
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=config,
            logits_processor=LogitsProcessorList([processor]),
        )
    processor.check()
    return output


def generate_sid_beams(model, input_ids, attention_mask, constraint, config: GenerationConfig):
    """Constrained beam search over left-padded prompts.

    Returns ``(generated, scores)``: the new tokens, shape (batch x num_return_sequences, new tokens), best beam
    first within each prompt, and their beam scores (sums of log-probabilities, ``length_penalty=0``).
    Raises :class:`minirec.constraint.ConstraintViolation` if any row left the SID grammar.
    """
    output = generate_constrained(model, input_ids, attention_mask, constraint, config)
    return output.sequences[:, input_ids.shape[1]:], output.sequences_scores
