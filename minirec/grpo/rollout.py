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

Upstream switches (:mod:`minirec.upstream`) change the beam mode:

- ``rollout_beam_sampling`` (upstream since PR #57, docs/upstream.md 11.3): every group is decoded by ``generate``
  with a beam-*sampling* config (``do_sample=True``, the temperature, no top-k/top-p, ``num_beams =
  num_return_sequences = G``), still explicit and isolated, and upstream's processor list
  ``[TemperatureLogitsWarper(T), constraint]``; never by the sid decoder, which only searches.
- ``constraint_fail_open`` / ``constraint_eos_fallback`` (the constraint's upstream masking modes,
  :mod:`minirec.constraint`): the sid decoder cannot decode outside the grammar, so every group whose prompt does
  not start the grammar at its root (a prompt not ending in ``### Response:\n``: the leaked 8.1 B prompts, which
  end in their own SID and so get ``"\n"`` forced, then decode unconstrained) goes through ``generate`` with
  upstream's processor; the groups whose prompts do end in it keep the configured decoder (with the ``sid``
  decoder they get the strict grammar: the same G beams as upstream's processor whenever the catalogue offers G
  SIDs, since a beam upstream would leave unmasked then scores -1e6 and is never among the G best; tested). With
  ``decoder=hf`` every group goes through ``generate`` with upstream's processor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import copy

import torch
from transformers import GenerationConfig

from minirec.constraint import ROOT, SidConstraint
from minirec.generation import beam_generation_config, generate_constrained, isolated_generation_config, left_pad


@dataclass
class Rollout:
    """One generation batch: a completion per row (G per group, group after group), and timings.

    ``off_root_groups``: groups decoded by ``generate`` because their prompt does not start the grammar at its root
    (upstream masking modes only, see the module docstring).
    """

    completion_ids: list[list[int]]
    scores: list[float] | None  # beam scores (sum of log-probs, length_penalty 0); None when sampling
    seconds: float
    off_root_groups: int = 0


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
    beam_sampling: bool = False,
    temperature: float = 1.0,
) -> Rollout:
    """G constrained beams for each group's prompt, best first: the evaluation's decoding (``decoder`` sid, one
    prefill per prompt, or hf, ``generate``) with its explicit beam config; ``beam_sampling`` and the constraint's
    upstream masking modes decode through ``generate`` instead (see the module docstring)."""
    from minirec.decoding import DecodeSettings

    start = time.perf_counter()
    unique = group_prompts(prompt_ids, num_generations)
    input_ids, attention_mask = left_pad(unique, pad_token_id, model.device)
    if beam_sampling:
        config = beam_sampling_generation_config(num_generations, temperature, max_new_tokens, eos_token_id,
                                                 pad_token_id)
        generated, scores = upstream_generate(model, input_ids, attention_mask, constraint, config, temperature)
        return Rollout(cut_at_eos(generated, [eos_token_id]), scores.float().cpu().tolist(),
                       time.perf_counter() - start)
    config = beam_generation_config(num_generations, max_new_tokens, eos_token_id, pad_token_id)
    if constraint.strict:
        decode = DecodeSettings(num_beams=num_generations, batch_size=len(unique), decoder=decoder)
        generated, scores = decode.rank(model, input_ids, attention_mask, constraint, config)
        return Rollout(cut_at_eos(generated, [eos_token_id]), scores.float().cpu().tolist(),
                       time.perf_counter() - start)
    # Upstream masking: generate with upstream's processor for the groups the sid decoder cannot decode.
    vocab_size = model.get_output_embeddings().weight.shape[0]
    off_root = constraint.keyed_tables(vocab_size).prompt_nodes(input_ids) != ROOT
    through_generate = torch.ones_like(off_root) if decoder == "hf" else off_root
    completions: list[list[int] | None] = [None] * (len(unique) * num_generations)
    beam_scores: list[float | None] = [None] * len(completions)

    def place(groups: list[int], generated, scores) -> None:
        rows = cut_at_eos(generated, [eos_token_id])
        values = scores.float().cpu().tolist()
        for index, group in enumerate(groups):
            for beam in range(num_generations):
                completions[group * num_generations + beam] = rows[index * num_generations + beam]
                beam_scores[group * num_generations + beam] = values[index * num_generations + beam]

    upstream_groups = through_generate.nonzero().flatten().tolist()
    other_groups = (~through_generate).nonzero().flatten().tolist()
    if upstream_groups:
        ids, mask = left_pad([unique[g] for g in upstream_groups], pad_token_id, model.device)
        place(upstream_groups, *upstream_generate(model, ids, mask, constraint, config, temperature))
    if other_groups:
        ids, mask = left_pad([unique[g] for g in other_groups], pad_token_id, model.device)
        decode = DecodeSettings(num_beams=num_generations, batch_size=len(other_groups), decoder=decoder)
        place(other_groups, *decode.rank(model, ids, mask, constraint.with_masking("strict"), config))
    return Rollout(completions, beam_scores, time.perf_counter() - start, off_root_groups=int(off_root.sum()))


def beam_sampling_generation_config(num_beams: int, temperature: float, max_new_tokens: int, eos_token_id: int,
                                    pad_token_id: int) -> GenerationConfig:
    """Upstream's RL beam config since PR #57 (docs/upstream-revisions-notes.md 5.1): ``num_beams =
    num_return_sequences``, ``do_sample=True`` with the temperature, no top-k and no top-p; every other field
    explicit and neutral (upstream leaves them to the checkpoint, 8.1 G: "as run with a base checkpoint").

    Upstream writes ``top_k=None, top_p=None``, which transformers 4.57 reads as "no warper"; transformers 5.23
    fills a ``None`` with the library default (top-k 50), so the same meaning is written ``top_k=0, top_p=1.0``."""
    return GenerationConfig(
        num_beams=num_beams, num_return_sequences=num_beams, do_sample=True, temperature=temperature, top_k=0,
        top_p=1.0, min_p=None, repetition_penalty=1.0, no_repeat_ngram_size=0, length_penalty=0.0,
        early_stopping=False, max_new_tokens=max_new_tokens, min_new_tokens=0, eos_token_id=eos_token_id,
        pad_token_id=pad_token_id, bos_token_id=None, output_scores=True, return_dict_in_generate=True,
    )


# What beam sampling must run with, checked on the effective config (the sampling counterpart of
# minirec.generation.REQUIRED).
BEAM_SAMPLING_REQUIRED = dict(do_sample=True, length_penalty=0.0, early_stopping=False, top_k=0, top_p=1.0,
                              min_p=None, repetition_penalty=1.0, no_repeat_ngram_size=0)


def effective_beam_sampling_config(model, config: GenerationConfig) -> GenerationConfig:
    """The config ``generate`` runs with under isolation; raises if a field beam sampling depends on changed."""
    with isolated_generation_config(model, config):
        effective, _ = model._prepare_generation_config(copy.deepcopy(config))
    expected = {**BEAM_SAMPLING_REQUIRED, "temperature": config.temperature, "num_beams": config.num_beams,
                "num_return_sequences": config.num_return_sequences, "max_new_tokens": config.max_new_tokens}
    wrong = {key: (getattr(effective, key, None), value) for key, value in expected.items()
             if getattr(effective, key, None) != value}
    if wrong:
        raise RuntimeError(f"beam sampling would run with {wrong} (effective, expected); refusing to decode")
    return effective


def upstream_generate(model, input_ids, attention_mask, constraint: SidConstraint, config: GenerationConfig,
                      temperature: float):
    """``generate`` with upstream's roll-out processors ``[TemperatureLogitsWarper(T), constraint]``
    (minionerec_trainer.py, docs/upstream.md 5.4), under ``config`` alone; returns ``(new tokens, beam scores)``.

    A strict constraint still raises for a row outside the grammar; upstream modes count such rows instead.
    """
    from transformers import LogitsProcessorList, TemperatureLogitsWarper

    if config.do_sample:
        effective_beam_sampling_config(model, config)
    processor = constraint.logits_processor()
    with isolated_generation_config(model, config), torch.inference_mode():
        output = model.generate(
            input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
            logits_processor=LogitsProcessorList([TemperatureLogitsWarper(temperature), processor]),
        )
    processor.check()
    return output.sequences[:, input_ids.shape[1]:], output.sequences_scores


def sampling_generation_config(temperature: float, max_new_tokens: int, eos_token_id: int, pad_token_id: int):
    """Plain constrained sampling: one sequence, temperature only (no top-k, top-p or repetition penalty).

    ``top_k=0`` is "no top-k": transformers 5.23 fills ``top_k=None`` with its default, 50."""
    return GenerationConfig(
        do_sample=True, num_beams=1, num_return_sequences=1, temperature=temperature, top_k=0, top_p=1.0,
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
