"""Ranking rewards for GRPO roll-outs, with trl's reward-function signature (docs/upstream.md 5.5).

    python -m minirec.grpo --preset tiny --category Industrial_and_Scientific

Each function receives trl's keyword arguments (``completions`` plus every dataset column) and returns one
float per completion. The target comes from the row's own ``target`` column, never from a global dict keyed
by history text, so two rows with the same history keep their own targets (upstream bug, docs/upstream.md 8.1 C).

- ``rule``: 1 for the exact target SID, else 0 (upstream strips ``"\\n\\" "`` from both sides).
- ``ndcg_rule``: inside a group of G completions ordered by beam rank, when some completion hits the target,
  each wrong completion at rank i gets ``-(1/log2(i+2)) / sum_{j<G} 1/log2(j+2)`` and the hit gets 0; a
  group without a hit gets 0 everywhere. The G penalties sum to -1.
- ``ranking`` = rule + ndcg_rule (two reward functions, weights 1, summed by trl as upstream sums them);
  ``ranking_only`` = ndcg_rule alone.
- ``cf_reward`` (:class:`minirec.recsys.CfReward`, upstream's ``reward_type=sasrec``, docs/upstream.md 5.5): a
  trained item-id model's raw logit (``cf_score=probability``: its softmax probability) of the completion's
  item given the prompt row's history item ids (column ``history_item_ids``), 0 for a completion that is not
  a catalogue SID or a row without history (title/description -> SID). The model is a learned baselines run
  (``cf_model=<run id>``, normally ``-e baselines -P method=sasrec``). ``ranking_cf`` = rule + ndcg_rule +
  ``cf_weight`` x cf_reward (the README's "augment" reading: the CF term added to the ranking reward);
  ``cf_only`` = ``cf_weight`` x cf_reward alone, which is what upstream's ``reward_type=sasrec`` does (it
  replaces the rule reward). The weight goes to trl's ``reward_weights``, so ``rewards/cf_reward/mean`` is the
  unweighted term.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

REWARD_TYPES = ("rule", "ranking", "ranking_only", "ranking_cf", "cf_only")
CF_REWARD_TYPES = ("ranking_cf", "cf_only")  # need a trained item-id model (cf_model)

# Upstream strips these characters before comparing (rl.py); the ndcg rule leaves spaces in (docs/upstream.md 5.5).
_RULE_STRIP = "\n\" "
_NDCG_STRIP = "\n\""


def rank_penalties(num_generations: int) -> list[float]:
    """The penalty of a wrong completion at each rank 0..G-1; they sum to -1."""
    gains = [1.0 / math.log2(rank + 2) for rank in range(num_generations)]
    total = sum(gains)
    return [-gain / total for gain in gains]


def rule_reward(completions: Sequence[str], target: Sequence[str], **kwargs) -> list[float]:
    """1.0 where the completion is the row's target SID (after upstream's stripping), else 0.0."""
    _check_lengths(completions, target)
    return [1.0 if c.strip(_RULE_STRIP) == t.strip(_RULE_STRIP) else 0.0 for c, t in zip(completions, target)]


class NdcgRuleReward:
    """The rank penalty of wrong completions in groups that contain a hit (``ndcg_rule`` of docs/upstream.md 5.5).

    Completions arrive as consecutive groups of ``num_generations``, each group in beam-rank order, which is
    how the constrained roll-out hands them to trl; a completion's rank is its index inside its group.
    """

    __name__ = "ndcg_rule_reward"

    def __init__(self, num_generations: int):
        if num_generations < 1:
            raise ValueError(f"num_generations must be at least 1, got {num_generations}")
        self.num_generations = num_generations
        self.penalties = rank_penalties(num_generations)

    def __call__(self, completions: Sequence[str], target: Sequence[str], **kwargs) -> list[float]:
        _check_lengths(completions, target)
        group = self.num_generations
        if len(completions) % group:
            raise ValueError(
                f"{len(completions)} completions do not split into groups of num_generations={group}; "
                "each process must receive whole groups"
            )
        rewards: list[float] = []
        for start in range(0, len(completions), group):
            hits = [
                completions[i].strip(_NDCG_STRIP) == target[i].strip(_NDCG_STRIP) for i in range(start, start + group)
            ]
            if any(hits):
                rewards.extend(0.0 if hit else self.penalties[rank] for rank, hit in enumerate(hits))
            else:
                rewards.extend([0.0] * group)
        return rewards


def reward_functions(reward_type: str, num_generations: int,
                     cf_reward: Callable[..., list[float]] | None = None) -> list[Callable[..., list[float]]]:
    """The trl ``reward_funcs`` list for a reward type (summed with weight 1 each, as upstream, unless
    :func:`reward_weights` says otherwise); the CF types need ``cf_reward`` (a :class:`minirec.recsys.CfReward`)."""
    if reward_type in CF_REWARD_TYPES and cf_reward is None:
        raise ValueError(f"reward {reward_type!r} needs the CF model's reward (cf_model)")
    if reward_type == "rule":
        return [rule_reward]
    if reward_type == "ranking":
        return [rule_reward, NdcgRuleReward(num_generations)]
    if reward_type == "ranking_only":
        return [NdcgRuleReward(num_generations)]
    if reward_type == "ranking_cf":
        return [rule_reward, NdcgRuleReward(num_generations), cf_reward]
    if reward_type == "cf_only":
        return [cf_reward]
    raise ValueError(f"unknown reward {reward_type!r}; expected one of {', '.join(REWARD_TYPES)}")


def reward_weights(reward_type: str, cf_weight: float = 1.0) -> list[float] | None:
    """trl's ``reward_weights`` for a reward type: ``None`` (all 1) except where the CF term is weighted."""
    if reward_type == "ranking_cf":
        return [1.0, 1.0, float(cf_weight)]
    if reward_type == "cf_only":
        return [float(cf_weight)]
    return None


def _check_lengths(completions: Sequence[str], target: Sequence[str]) -> None:
    if len(completions) != len(target):
        raise ValueError(f"{len(completions)} completions but {len(target)} targets")


def cf_reward_of(settings, catalogue):
    """The run's CF reward (``reward`` ranking_cf / cf_only): the item-id model of the baselines run
    ``settings.cf_model``, checked against its recorded digest and this catalogue; ``None`` for other rewards."""
    if settings.reward not in CF_REWARD_TYPES:
        return None
    from minirec.baselines.artifacts import cf_reward_from_run

    return cf_reward_from_run(settings.cf_model, catalogue, score=settings.cf_score)
