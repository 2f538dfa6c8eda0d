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
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

REWARD_TYPES = ("rule", "ranking", "ranking_only")

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


def reward_functions(reward_type: str, num_generations: int) -> list[Callable[..., list[float]]]:
    """The trl ``reward_funcs`` list for a reward type (summed with weight 1 each, as upstream)."""
    if reward_type == "rule":
        return [rule_reward]
    if reward_type == "ranking":
        return [rule_reward, NdcgRuleReward(num_generations)]
    if reward_type == "ranking_only":
        return [NdcgRuleReward(num_generations)]
    raise ValueError(f"unknown reward {reward_type!r}; expected one of {', '.join(REWARD_TYPES)}")


def _check_lengths(completions: Sequence[str], target: Sequence[str]) -> None:
    if len(completions) != len(target):
        raise ValueError(f"{len(completions)} completions but {len(target)} targets")
