"""The GRPO configuration: one dataclass, presets in ``configs/grpo/<preset>.yaml``, CLI overrides on top.

    python -m minirec.grpo --preset paper --category Industrial_and_Scientific --model <SFT run id> --num_gpus 4

Reference: reference-spec 5.2 (upstream's rl.sh hyper-parameters). Resolution order: dataclass defaults, then
the preset file, then every option given on the command line (or ``-P name=value`` under ``mlflow run``).
Batch sizes count completions, as trl does: 64 per device = 4 prompts x 16 beams.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from minirec.data.layout import PROJECT_ROOT
from minirec.presets import ConfigError, layered_values
from minirec.presets import preset_path as _preset_path
from minirec.grpo.data import TASKS, TITLE_HISTORY_SAMPLE
from minirec.grpo.rewards import REWARD_TYPES

PRESET_DIR = PROJECT_ROOT / "configs" / "grpo"
DEEPSPEED_ZERO2 = PROJECT_ROOT / "configs" / "deepspeed" / "zero2.yaml"
PARAM_PREFIX = "config."


def _opt(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class GRPOSettings:
    """Every setting of a GRPO run; the defaults are upstream's (rl.sh over rl.py, spec 5.2)."""

    # --- what to train ---
    category: str = _opt("Industrial_and_Scientific", "Amazon category to train on")
    data_dir: str = _opt("", "data directory in the upstream layout (default: bundled data/amazon18)")
    model: str = _opt("", "policy to start from: SFT run id, runs:/ or models:/ URI, local folder or hub id; "
                      "empty: the latest finished SFT run of this category and preset")
    output_dir: str = _opt("outputs/grpo", "folder for checkpoints and the final model")
    preset: str = _opt("", "the preset these settings came from (recorded as a tag)")
    # --- prompts (spec 5.3) ---
    tasks: str = _opt(",".join(TASKS), "prompt tasks of the mixture, comma-separated (default: upstream's four)")
    upstream_quirks: bool = _opt(False, "restore upstream's answer leak in title/description prompts (spec 8.1 B), "
                                 "3-token SIDs there (8.1 I) and the empty-description prompt")
    title_history_sample: int = _opt(TITLE_HISTORY_SAMPLE, "title-history prompts drawn from train (random_state=0)")
    max_train_prompts: int = _opt(-1, "keep the first N prompts of the shuffled mixture (-1: all)")
    shuffle_seed: int = _opt(42, "seed of the mixture shuffle (upstream: the run seed, 42)")
    max_prompt_length: int = _opt(512, "keep the last N prompt tokens (trl's former default, upstream)")
    # --- roll-outs (spec 5.4) ---
    num_generations: int = _opt(16, "G: completions per prompt (beams in beam mode)")
    beam_search: bool = _opt(True, "constrained beam search with G beams per prompt (rl.sh); false: one constrained "
                             "sample per repeated prompt at --temperature")
    temperature: float = _opt(1.0, "sampling temperature (also divides the logits of the loss, as in trl)")
    max_completion_length: int = _opt(128, "maximum new tokens per completion")
    reward: str = _opt("ranking", "rule, ranking (rule + rank penalty) or ranking_only", choices=REWARD_TYPES)
    # --- optimisation (spec 5.2, 5.6) ---
    per_device_batch_size: int = _opt(64, "completions per device per micro-step (64 = 4 prompts x 16)")
    gradient_accumulation_steps: int = _opt(4, "micro-steps per optimiser step")
    num_gpus: int = _opt(1, "processes (GPUs); > 1 re-launches itself with accelerate")
    num_train_epochs: float = _opt(2.0, "epochs over the prompt mixture")
    max_steps: int = _opt(-1, "stop after N optimiser steps (-1: use num_train_epochs)")
    learning_rate: float = _opt(1e-5, "peak learning rate")
    lr_scheduler: str = _opt("cosine", "transformers scheduler name")
    warmup_ratio: float = _opt(0.03, "share of all steps spent in linear warm-up")
    max_grad_norm: float = _opt(0.3, "gradient clipping norm")
    beta: float = _opt(1e-3, "KL coefficient (k3 estimator against the reference model)")
    optim: str = _opt("adamw_torch", "transformers optimiser (upstream: paged_adamw_32bit, needs bitsandbytes)")
    seed: int = _opt(42, "seed of the trainer, sampler and sampling (TrainingArguments default, as upstream)")
    precision: str = _opt("auto", "auto (bf16 on GPU, fp32 on CPU), bf16 or fp32", choices=("auto", "bf16", "fp32"))
    # --- reference model (TR-DPO sync, trl defaults used by upstream) ---
    sync_ref_model: bool = _opt(True, "mix the policy into the reference model every ref_model_sync_steps")
    ref_model_mixup_alpha: float = _opt(0.6, "reference <- alpha * policy + (1 - alpha) * reference")
    ref_model_sync_steps: int = _opt(512, "optimiser steps between reference syncs")
    # --- evaluation, checkpoints, logging ---
    eval_steps: float = _opt(0.0999, "constrained-beam evaluation every N steps (< 1: a fraction of all steps; "
                             "0: only at the end)")
    eval_limit: int = _opt(512, "valid rows of the fixed, seeded evaluation subset (-1: all)")
    eval_beams: int = _opt(50, "beams of the evaluation")
    eval_batch_size: int = _opt(8, "prompts per batch in the evaluation")
    save_steps: float = _opt(0.1, "checkpoint every N steps (< 1: a fraction of all steps)")
    save_total_limit: int = _opt(20, "checkpoints kept on disk")
    logging_steps: int = _opt(1, "log the step metrics every N optimiser steps")
    rollout_table_rows: int = _opt(64, "roll-outs (prompt, beams, rewards) kept in the logged sample table")
    log_checkpoints: bool = _opt(True, "upload each checkpoint as an MLflow artifact (needed to resume by run id)")
    log_model: bool = _opt(True, "log the final policy and tokenizer as the run's MLflow model")
    # --- hardware and resume ---
    device: str = _opt("auto", "auto, cpu or cuda", choices=("auto", "cpu", "cuda"))
    deepspeed: str = _opt("", "DeepSpeed config; default configs/deepspeed/zero2.yaml with several GPUs")
    resume_from: str = _opt("", "checkpoint folder or MLflow run id to continue; with a larger num_train_epochs "
                            "it extends a finished run")

    def task_list(self) -> tuple[str, ...]:
        return tuple(task.strip() for task in self.tasks.split(",") if task.strip())

    def prompts_per_process_step(self) -> int:
        """Prompts one process rolls out per optimiser step; an error unless the batch is whole groups."""
        completions = self.per_device_batch_size * self.gradient_accumulation_steps
        if completions <= 0 or completions % self.num_generations:
            raise ConfigError(
                f"per_device_batch_size {self.per_device_batch_size} x gradient_accumulation_steps "
                f"{self.gradient_accumulation_steps} = {completions} completions per process per step is not a "
                f"multiple of num_generations {self.num_generations}: every process must roll out whole groups "
                f"(e.g. per_device_batch_size {self.num_generations * max(1, completions // self.num_generations)})"
            )
        return completions // self.num_generations

    def prompts_per_step(self) -> int:
        """Prompts per optimiser step over all processes (64 in the paper preset)."""
        return self.prompts_per_process_step() * self.num_gpus

    def validate(self) -> "GRPOSettings":
        if self.num_generations < 2:
            raise ConfigError(f"num_generations must be at least 2 (got {self.num_generations}): advantages are "
                              "normalised inside each group")
        self.prompts_per_process_step()
        for name in ("reward", "precision", "device"):
            choices = FIELDS[name].metadata["choices"]
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {getattr(self, name)!r}")
        unknown = [task for task in self.task_list() if task not in TASKS]
        if unknown or not self.task_list():
            raise ConfigError(f"tasks must name some of {', '.join(TASKS)}; got {self.tasks!r}")
        if self.sync_ref_model and self.beta == 0:
            raise ConfigError("sync_ref_model needs beta > 0: with beta 0 there is no reference model to sync")
        if self.num_gpus < 1:
            raise ConfigError(f"num_gpus must be at least 1, got {self.num_gpus}")
        return self

    def as_params(self) -> dict[str, str]:
        """The resolved settings as flat MLflow params ``config.<name>``.

        The prefix keeps them apart from the raw ``-P`` values that ``mlflow run`` logs under the plain names.
        """
        return {f"{PARAM_PREFIX}{key}": str(value) for key, value in dataclasses.asdict(self).items()}


FIELDS = {f.name: f for f in dataclasses.fields(GRPOSettings)}


def preset_path(preset: str) -> Path:
    """A preset name (``tiny``, ``paper``) or a path to a YAML file."""
    return _preset_path(PRESET_DIR, preset, "GRPO")


def load_settings(preset: str | None, overrides: Mapping[str, Any] | None = None) -> GRPOSettings:
    """Defaults, then the preset's values, then ``overrides`` (values left ``None`` are ignored)."""
    values = layered_values(FIELDS, PRESET_DIR, "GRPO", preset, overrides)
    if preset:
        values.setdefault("preset", preset)  # a name, or the YAML path itself so it can be found again
    return GRPOSettings(**values).validate()
