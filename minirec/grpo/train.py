"""Building a GRPO training: the policy, trl's arguments and the constrained trainer with its callbacks.

    python -m minirec.grpo --preset tiny --category Industrial_and_Scientific

Reference: docs/upstream.md 5 (the RL stage) and 8.1 B, C, E, G, K (what is fixed here).

The policy is the SFT checkpoint; trl rebuilds the reference model from ``model.config._name_or_path`` when
``beta > 0``, so that attribute is pinned to the SFT checkpoint folder: at step 0 the reference model *is*
the SFT model and the KL is 0. Upstream's test-time decode during training (8.1 E, which shared the
constraint's counter with the roll-outs) is replaced by a separate constrained evaluation on a valid subset,
and upstream's extra full model per rank (8.1 K) does not exist here.

Extending a finished run (``resume_from`` with a larger ``num_train_epochs``): the trainer recomputes
``max_steps`` = T' and builds a fresh cosine schedule for it (warm-up ``ceil(warmup_ratio x T')``); the
restored scheduler state keeps only the step count s0. The first resumed step (s0 + 1) still runs at the
learning rate saved in the optimizer state, the *old* curve's next value (0 when the old cosine had run to
its end); every later step s runs at ``lr x lambda_new(s - 1)`` on the *new* curve.
"""

from __future__ import annotations

from pathlib import Path

import torch

from minirec.devices import uses_bf16
from minirec.grpo.settings import GRPOSettings
from minirec.launch import deepspeed_config
from minirec.logs import follow_in_log, on_terminal

FINAL_CHECKPOINT = "final_checkpoint"


def grpo_arguments(settings: GRPOSettings, device: str):
    """trl's ``GRPOConfig``: upstream's objective plus the run's batch, schedule and checkpoint settings."""
    from minirec.grpo.rewards import reward_weights
    from minirec.grpo.trainer import upstream_grpo_arguments

    return upstream_grpo_arguments(
        output_dir=settings.output_dir,
        per_device_train_batch_size=settings.per_device_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps(),
        num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length,
        temperature=settings.temperature,
        beta=settings.beta,
        num_train_epochs=settings.num_train_epochs,
        max_steps=settings.max_steps,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=settings.warmup_ratio,  # transformers 5: a value below 1 is a share of all steps
        max_grad_norm=settings.max_grad_norm,
        optim=settings.optim,
        seed=settings.seed,
        bf16=uses_bf16(settings.precision, device),
        use_cpu=device == "cpu",
        sync_ref_model=settings.sync_ref_model,
        ref_model_mixup_alpha=settings.ref_model_mixup_alpha,
        ref_model_sync_steps=settings.ref_model_sync_steps,
        gradient_checkpointing=False,
        logging_steps=settings.logging_steps,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        eval_strategy="no",  # ranking metrics come from ValidRanking instead of trl's eval loss
        report_to="none",
        reward_weights=reward_weights(settings.reward, settings.cf_weight),  # None (all 1) but for the CF rewards
        disable_tqdm=not on_terminal(),  # a log file gets TrainerProgress's lines instead
        deepspeed=deepspeed_config(settings, device),
        dataloader_num_workers=0,
    )


def load_policy(reference: str, device: str):
    """The SFT policy in fp32 (upstream loads it without a dtype) with ``_name_or_path`` pinned to its folder."""
    from minirec.models import load_model_and_tokenizer, resolve_model

    folder = resolve_model(reference)
    model, tokenizer = load_model_and_tokenizer(folder, dtype=torch.float32, device=device)
    # trl builds the reference model from this path when beta > 0: it must be the SFT checkpoint itself
    model.config._name_or_path = str(Path(folder).resolve())
    return model, tokenizer


def build_trainer(settings: GRPOSettings, model, tokenizer, files, catalogue, prompts, device: str):
    """The constrained GRPO trainer with its MLflow callbacks (checkpoint uploads from the main process)."""
    from minirec.constraint import SidConstraint
    from minirec.devices import is_main_process
    from minirec.grpo.callbacks import StepMetrics, ValidRanking
    from minirec.grpo.rewards import cf_reward_of, reward_functions
    from minirec.grpo.trainer import ConstrainedGRPOTrainer
    from minirec.resume import CheckpointArtifacts

    trainer = ConstrainedGRPOTrainer(
        model=model,
        reward_funcs=reward_functions(settings.reward, settings.num_generations, cf_reward_of(settings, catalogue)),
        args=grpo_arguments(settings, device),
        train_dataset=prompts.train,
        processing_class=tokenizer,
        constraint=SidConstraint.from_catalogue(catalogue, tokenizer, masking=settings.masking).to(device),
        valid_sids=catalogue.valid_sids,
        beam_search=settings.beam_search,
        rollout_decoder=settings.rollout_decoder,
        max_prompt_length=settings.max_prompt_length,
        beam_sampling=settings.switch("rollout_beam_sampling"),
    )
    trainer.add_callback(StepMetrics())
    follow_in_log(trainer, "grpo")
    trainer.add_callback(ValidRanking(
        trainer=trainer, files=files, catalogue=catalogue, eval_steps=settings.eval_steps,
        limit=None if settings.eval_limit < 0 else settings.eval_limit, decode=settings.eval_decode(),
        out_dir=Path(settings.output_dir) / "valid", table_rows=settings.rollout_table_rows,
    ))
    if settings.log_checkpoints and is_main_process():
        trainer.add_callback(CheckpointArtifacts())
    return trainer


def rollout_generation_config(settings: GRPOSettings, trainer):
    """The generation config the roll-outs use, as logged with the run (beam sampling under the upstream switch
    ``rollout_beam_sampling``; all ``max_completion_length`` tokens under upstream masking, which can leave rows
    unconstrained)."""
    from minirec.generation import beam_generation_config, effective_generation_config
    from minirec.grpo.rollout import (beam_sampling_generation_config, effective_beam_sampling_config,
                                      sampling_generation_config)

    model, tokenizer = trainer.model, trainer.processing_class
    new_tokens = min(settings.max_completion_length, trainer.constraint.max_new_tokens)
    if not trainer.constraint.strict:
        new_tokens = settings.max_completion_length
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if settings.beam_search and settings.switch("rollout_beam_sampling"):
        return effective_beam_sampling_config(model, beam_sampling_generation_config(
            settings.num_generations, settings.temperature, new_tokens, eos, pad))
    if settings.beam_search:
        return effective_generation_config(model, beam_generation_config(settings.num_generations, new_tokens, eos, pad))
    return sampling_generation_config(settings.temperature, new_tokens, eos, pad)
