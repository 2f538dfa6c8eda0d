"""trl's ``GRPOTrainer`` with constrained roll-outs in beam-rank order and roll-out metrics.

    python -m minirec.grpo --preset tiny --category Industrial_and_Scientific

Reference: docs/upstream.md 5.4-5.6. Only the generation hook and the prompt tokenisation are replaced; the
advantage, KL and loss are trl 1.16's own, configured to be upstream's (see :func:`upstream_grpo_arguments`):

- advantage ``(r - mean_G) / (std_G + 1e-4)`` with the unbiased std (``scale_rewards="group"``);
- per-token k3 KL ``exp(ref - logp) - (ref - logp) - 1`` times ``beta``;
- ``loss_type="grpo"``: mean over a sequence's completion tokens, then over sequences, divided by the
  accumulation steps (upstream's default aggregation);
- ``num_iterations=1``: one update per roll-out, so the ratio is exactly 1 and clipping never applies.

One difference remains: trl divides the logits by ``temperature`` before taking the log-probabilities of the
loss, upstream does not (docs/upstream.md 5.6). At the paper's temperature 1.0 the two are identical.
"""

from __future__ import annotations

import torch
from trl import GRPOConfig, GRPOTrainer
from trl.models import unwrap_model_for_generation

from minirec.constraint import SidConstraint
from minirec.grpo.rollout import beam_rollout, rollout_counts, sample_rollout

# Fields of GRPOConfig that make trl's objective upstream's; the CLI does not expose them.
UPSTREAM_OBJECTIVE = dict(
    loss_type="grpo",
    scale_rewards="group",
    num_iterations=1,
    multi_objective_aggregation="sum_then_normalize",
    importance_sampling_level="token",
    mask_truncated_completions=False,
    top_entropy_quantile=1.0,
    use_bias_correction_kl=False,
)


def upstream_grpo_arguments(**arguments) -> GRPOConfig:
    """A ``GRPOConfig`` with upstream's objective (fixed) and the given training arguments."""
    clash = sorted(set(arguments) & set(UPSTREAM_OBJECTIVE))
    if clash:
        raise ValueError(f"{', '.join(clash)} define upstream's objective and cannot be changed")
    return GRPOConfig(**UPSTREAM_OBJECTIVE, **arguments)


class ConstrainedGRPOTrainer(GRPOTrainer):
    """GRPO whose roll-outs are constrained beams (or samples) over the catalogue's SIDs.

    ``constraint`` is the catalogue's SID grammar (on the model's device), ``valid_sids`` the catalogue's SID
    set, used to count invalid completions (always 0 unless the constraint is broken). Roll-outs decode at most
    ``max_completion_length`` tokens and, with the strict constraint, never more than the grammar's longest SID
    needs (upstream's masking modes can leave rows unconstrained: they get all ``max_completion_length``).
    ``beam_sampling``: beam roll-outs sample (the upstream switch ``rollout_beam_sampling``, minirec.grpo.rollout).
    """

    def __init__(
        self,
        *args,
        constraint: SidConstraint,
        valid_sids,
        beam_search: bool = True,
        rollout_decoder: str = "sid",
        max_prompt_length: int = 512,
        beam_sampling: bool = False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.beam_sampling = beam_sampling
        self.rollout_decoder = rollout_decoder
        self.constraint = constraint
        self.valid_sids = frozenset(valid_sids)
        self.beam_search = beam_search
        self.max_prompt_length = max_prompt_length

    def _tokenize_prompts(self, prompts: list):
        """One tokenizer call without special tokens, keeping the last ``max_prompt_length`` tokens (docs/upstream.md 5.4)."""
        ids = self.processing_class(text=prompts, add_special_tokens=False)["input_ids"]
        return [row[-self.max_prompt_length :] for row in ids], None, {}

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        common = dict(
            constraint=self.constraint,
            max_new_tokens=min(self.max_completion_length, self.constraint.max_new_tokens)
            if self.constraint.strict else self.max_completion_length,
            pad_token_id=self._tokenizer.pad_token_id,
            eos_token_id=self._tokenizer.eos_token_id,
        )
        with unwrap_model_for_generation(
            self.model_wrapped, self.accelerator, gather_deepspeed3_params=self.args.ds3_gather_for_generation
        ) as model:
            if self.beam_search:
                rollout = beam_rollout(model, prompt_ids, num_generations=num_generations,
                                       decoder=self.rollout_decoder, beam_sampling=self.beam_sampling,
                                       temperature=self.temperature, **common)
            else:
                rollout = sample_rollout(model, prompt_ids, temperature=self.temperature, **common)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["rollout/seconds"].append(rollout.seconds)
        if not self.constraint.strict and self.beam_search and not self.beam_sampling:
            groups = max(len(prompt_ids) // num_generations, 1)
            self._metrics[mode]["rollout/off_root_group_share"].append(rollout.off_root_groups / groups)
        return rollout.completion_ids, None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        mode = "train" if self.model.training else "eval"
        group = self.num_generations if mode == "train" else self.num_generations_eval
        targets = [example["target"] for example in inputs]
        counts = rollout_counts(completions, targets, group, self.valid_sids)
        totals = self.accelerator.gather(torch.tensor(list(counts.values()), device=self.accelerator.device))
        totals = dict(zip(counts, totals.view(-1, len(counts)).sum(dim=0).tolist()))
        self._metrics[mode]["rollout/hit_group_share"].append(totals["hit_groups"] / totals["groups"])
        self._metrics[mode]["rollout/distinct_sids_per_group"].append(totals["distinct"] / totals["groups"])
        self._metrics[mode]["rollout/invalid_share"].append(totals["invalid"] / totals["completions"])
        self._log_completion_extra("target", targets)
        self._log_completion_extra("rank", [i % group for i in range(len(targets))])
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        advantages = self.accelerator.gather(output["advantages"])
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["advantage_std"].append(advantages.std().item() if advantages.numel() > 1 else 0.0)
        return output

    def training_step(self, model, inputs, num_items_in_batch):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self._step % self.current_gradient_accumulation_steps == 0:
            # trl has just recorded this optimiser step's seconds, roll-outs included
            step_seconds = self._metrics["train"]["step_time"][-1]
            self._metrics["train"]["prompts_per_second"].append(self.prompts_per_step / step_seconds)
        return loss

    @property
    def prompts_per_step(self) -> float:
        """Prompts rolled out per optimiser step, over all processes."""
        completions = self.args.per_device_train_batch_size * self.current_gradient_accumulation_steps
        return completions * self.accelerator.num_processes / self.num_generations
