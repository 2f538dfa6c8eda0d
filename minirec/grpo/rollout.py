"""Constrained roll-outs for GRPO: G beams per prompt in beam-rank order, or one constrained sample per row.

    python -m minirec.grpo --preset tiny --category Industrial_and_Scientific

Reference: docs/upstream.md 5.4. trl repeats every prompt G times in a row; ``generation_kwargs={"num_beams": G}``
would decode each copy separately and return G copies of the best beam. Beam mode therefore decodes one
prompt per group with ``num_beams = num_return_sequences = G`` and hands back the G beams of each prompt in
the order ``generate`` ranks them (best first), so a completion's index inside its group is its beam rank,
which the ranking reward needs. Sampling mode decodes every repeated row once with ``do_sample``.

Both modes use the evaluation's constraint (fails closed: a row leaving the SID grammar raises) and fully
explicit generation configs, so no checkpoint default leaks in (docs/upstream.md 8.1 G). Completions end at their first
EOS, inclusive, as trl's own generation path cuts them; pad = EOS, so the padding of shorter beams goes too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from transformers import GenerationConfig

from minirec.constraint import SidConstraint
from minirec.generation import beam_generation_config, generate_constrained, left_pad


@dataclass
class Rollout:
    """One generation batch: a completion per row (G per group, group after group), and timings."""

    completion_ids: list[list[int]]
    scores: list[float] | None  # beam scores (sum of log-probs, length_penalty 0); None when sampling
    seconds: float


def group_prompts(prompt_ids: list[list[int]], num_generations: int) -> list[list[int]]:
    """The one prompt of each group of ``num_generations`` identical consecutive rows."""
    if len(prompt_ids) % num_generations:
        raise ValueError(
            f"{len(prompt_ids)} prompts do not split into groups of num_generations={num_generations}; "
            "the per-process generation batch must be whole groups"
        )
    firsts = prompt_ids[::num_generations]
    for group, first in enumerate(firsts):
        rows = prompt_ids[group * num_generations : (group + 1) * num_generations]
        if any(row != first for row in rows):
            raise ValueError(f"group {group} mixes different prompts; trl must repeat each prompt G times in a row")
    return firsts


def cut_at_eos(sequences: torch.Tensor, eos_token_ids: list[int]) -> list[list[int]]:
    """Each row up to and including its first EOS (the whole row when it has none)."""
    is_eos = torch.isin(sequences, torch.tensor(eos_token_ids, device=sequences.device))
    has_eos = is_eos.any(dim=1)
    full_length = torch.full_like(has_eos, sequences.size(1), dtype=torch.long)
    ends = torch.where(has_eos, is_eos.int().argmax(dim=1) + 1, full_length)
    return [row[:end].tolist() for row, end in zip(sequences.cpu(), ends.cpu().tolist())]


def beam_rollout(
    model,
    prompt_ids: list[list[int]],
    *,
    num_generations: int,
    constraint: SidConstraint,
    max_new_tokens: int,
    pad_token_id: int,
    eos_token_id: int,
    decoder: str = "sid",
) -> Rollout:
    """G constrained beams for each group's prompt, best first: the evaluation's decoding (``decoder`` sid, one
    prefill per prompt, or hf, ``generate``) with its explicit beam config."""
    from minirec.decoding import DecodeSettings

    start = time.perf_counter()
    unique = group_prompts(prompt_ids, num_generations)
    input_ids, attention_mask = left_pad(unique, pad_token_id, model.device)
    config = beam_generation_config(num_generations, max_new_tokens, eos_token_id, pad_token_id)
    decode = DecodeSettings(num_beams=num_generations, batch_size=len(unique), decoder=decoder)
    generated, scores = decode.rank(model, input_ids, attention_mask, constraint, config)
    completions = cut_at_eos(generated, [eos_token_id])
    return Rollout(completions, scores.float().cpu().tolist(), time.perf_counter() - start)


def sampling_generation_config(temperature: float, max_new_tokens: int, eos_token_id: int, pad_token_id: int):
    """Plain constrained sampling: one sequence, temperature only (no top-k, top-p or repetition penalty)."""
    return GenerationConfig(
        do_sample=True, num_beams=1, num_return_sequences=1, temperature=temperature, top_k=None, top_p=1.0,
        min_p=None, repetition_penalty=1.0, no_repeat_ngram_size=0, max_new_tokens=max_new_tokens, min_new_tokens=0,
        eos_token_id=eos_token_id, pad_token_id=pad_token_id, bos_token_id=None,
    )


def sample_rollout(
    model,
    prompt_ids: list[list[int]],
    *,
    constraint: SidConstraint,
    temperature: float,
    max_new_tokens: int,
    pad_token_id: int,
    eos_token_id: int,
) -> Rollout:
    """One constrained sample per row (the repeated prompts of a group give G independent samples)."""
    start = time.perf_counter()
    input_ids, attention_mask = left_pad(prompt_ids, pad_token_id, model.device)
    config = sampling_generation_config(temperature, max_new_tokens, eos_token_id, pad_token_id)
    sequences = generate_constrained(model, input_ids, attention_mask, constraint, config)
    completions = cut_at_eos(sequences[:, input_ids.size(1) :], [eos_token_id])
    return Rollout(completions, None, time.perf_counter() - start)


def rollout_counts(completions: list[str], targets: list[str], num_generations: int, valid_sids) -> dict[str, int]:
    """Counts behind the roll-out metrics of one batch (summed over processes before dividing).

    ``groups``, ``hit_groups`` (a completion equals the target), ``distinct`` (distinct SIDs summed over
    groups), ``invalid`` (completions that are not a catalogue SID) and ``completions``.
    """
    sids = [completion.strip("\n\" ") for completion in completions]
    answers = [target.strip("\n\" ") for target in targets]
    counts = {"groups": 0, "hit_groups": 0, "distinct": 0, "invalid": 0, "completions": len(sids)}
    for start in range(0, len(sids), num_generations):
        group = sids[start : start + num_generations]
        group_answers = answers[start : start + num_generations]
        counts["groups"] += 1
        counts["hit_groups"] += any(sid == answer for sid, answer in zip(group, group_answers))
        counts["distinct"] += len(set(group))
    counts["invalid"] = sum(sid not in valid_sids for sid in sids)
    return counts
