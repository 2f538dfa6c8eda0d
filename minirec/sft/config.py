"""The SFT configuration: one dataclass, presets in ``configs/sft/<preset>.yaml``, CLI overrides on top.

    python -m minirec.sft --preset paper --category Industrial_and_Scientific --base_model Qwen/Qwen2.5-1.5B-Instruct

Reference: reference-spec 4.1 (upstream's hyper-parameters). Resolution order: dataclass defaults, then the
preset file, then every option given on the command line (or ``-P name=value`` under ``mlflow run``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from minirec.data.layout import PROJECT_ROOT
from minirec.presets import ConfigError, layered_values
from minirec.presets import preset_path as _preset_path
from minirec.sft.data import TASKS, UPSTREAM_SHUFFLE_SEED

PRESET_DIR = PROJECT_ROOT / "configs" / "sft"
DEEPSPEED_ZERO2 = PROJECT_ROOT / "configs" / "deepspeed" / "zero2.yaml"
TINY_MODEL = "tiny"


def _opt(default, help: str, **kw):
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class SFTConfig:
    """Every setting of an SFT run; the defaults are upstream's (sft.sh and sft.py, spec 4.1)."""

    # --- what to train ---
    category: str = _opt("Industrial_and_Scientific", "Amazon category to train on")
    data_dir: str = _opt("", "data directory in the upstream layout (default: bundled data/amazon18)")
    base_model: str = _opt(TINY_MODEL, "model to fine-tune: local path, hub id, MLflow run id or URI; "
                           "'tiny' builds the small Qwen2 model of minirec.models")
    output_dir: str = _opt("", "folder for checkpoints and the final model (default: outputs/sft/<Category>/<time>)")
    # --- data (spec 4.2-4.3) ---
    tasks: list = _opt(list(TASKS), "SFT tasks to train on, comma-separated", choices=TASKS)
    upstream_quirks: bool = _opt(False, "restore upstream's alignment answer leak (spec 8.1 A), 3-token SIDs "
                                 "in the item-level tasks (spec 8.1 I) and pure-bf16 weights in bf16 runs")
    cutoff_len: int = _opt(512, "keep the last N tokens of each sample")
    sample: int = _opt(-1, "train rows of the CSV-based tasks (-1: all; the alignment task keeps every item), "
                       "drawn with --seed")
    valid_sample: int = _opt(-1, "valid rows for the eval loss (-1: all)")
    shuffle_seed: int = _opt(UPSTREAM_SHUFFLE_SEED, "seed of the training-set shuffle (upstream: 42, fixed)")
    # --- optimisation (spec 4.1) ---
    batch_size: int = _opt(1024, "global batch: micro_batch_size x gradient accumulation x processes")
    micro_batch_size: int = _opt(16, "per-device batch")
    num_epochs: float = _opt(10.0, "maximum epochs")
    max_steps: int = _opt(-1, "stop after N optimiser steps (-1: use num_epochs)")
    learning_rate: float = _opt(3e-4, "peak learning rate")
    lr_scheduler: str = _opt("cosine", "cosine (the paper) or linear (upstream's code, spec 4.1)",
                             choices=("cosine", "linear", "constant_with_warmup"))
    warmup_steps: int = _opt(20, "linear warm-up steps")
    weight_decay: float = _opt(0.0, "AdamW weight decay")
    optim: str = _opt("adamw_torch", "transformers optimiser name")
    max_grad_norm: float = _opt(1.0, "gradient clipping norm (transformers default, as upstream)")
    seed: int = _opt(42, "seed of model init, sampling and the data loader")
    precision: str = _opt("auto", "auto (bf16 on GPU, fp32 on CPU), bf16 or fp32", choices=("auto", "bf16", "fp32"))
    freeze_llm: bool = _opt(False, "train only the SID rows of the input and output embeddings")
    # --- evaluation, checkpoints, early stopping ---
    eval_steps: float = _opt(0.05, "evaluate every N steps (a fraction < 1: of all steps)")
    save_steps: float = _opt(0.05, "checkpoint every N steps (must be a multiple of eval_steps)")
    early_stopping_patience: int = _opt(3, "evaluations without eval-loss improvement before stopping (0: off)")
    logging_steps: int = _opt(1, "log loss, lr, grad norm and tokens/s every N steps")
    final_eval_limit: int = _opt(-1, "valid rows for the final constrained beam evaluation (-1: all, 0: skip)")
    final_eval_beams: int = _opt(50, "beams of the final evaluation")
    final_eval_batch_size: int = _opt(8, "prompts per batch in the final evaluation")
    evaluate_untrained: bool = _opt(False, "also evaluate the untrained base model the same way (baseline)")
    log_model: bool = _opt(True, "log the best checkpoint and its tokenizer as the run's MLflow model")
    # --- hardware ---
    device: str = _opt("auto", "auto, cpu or cuda", choices=("auto", "cpu", "cuda"))
    num_processes: int = _opt(1, "processes (GPUs; CPU processes with device=cpu); > 1 re-launches itself")
    deepspeed: str = _opt("", "DeepSpeed config (YAML); default configs/deepspeed/zero2.yaml with several GPUs")
    # --- resume ---
    resume_from: str = _opt("", "checkpoint folder or MLflow run id of an interrupted run to continue")

    def gradient_accumulation_steps(self) -> int:
        """``batch_size / (micro_batch_size x num_processes)``; an error when it is not a whole number."""
        per_step = self.micro_batch_size * self.num_processes
        if self.batch_size <= 0 or per_step <= 0 or self.batch_size % per_step:
            raise ConfigError(
                f"batch_size {self.batch_size} is not a multiple of micro_batch_size {self.micro_batch_size} x "
                f"num_processes {self.num_processes} = {per_step}; choose values whose product divides it"
            )
        return self.batch_size // per_step

    def validate(self) -> "SFTConfig":
        self.gradient_accumulation_steps()
        unknown = [task for task in self.tasks if task not in TASKS]
        if unknown:
            raise ConfigError(f"unknown SFT tasks {unknown}; known: {', '.join(TASKS)}")
        for name in ("lr_scheduler", "precision", "device"):
            choices = FIELDS[name].metadata["choices"]
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {getattr(self, name)!r}")
        if self.freeze_llm and self.weight_decay > 0:
            raise ConfigError("freeze_llm needs weight_decay 0: AdamW decays every row of a trainable matrix, "
                              "so the frozen rows of the embeddings would drift")
        if self.eval_steps <= 0 or self.save_steps <= 0:
            raise ConfigError("eval_steps and save_steps must be positive")
        return self

    def as_params(self) -> dict[str, str]:
        """The resolved config as flat MLflow params."""
        return {key: ",".join(value) if isinstance(value, list) else str(value)
                for key, value in dataclasses.asdict(self).items()}


FIELDS = {f.name: f for f in dataclasses.fields(SFTConfig)}


def preset_path(preset: str) -> Path:
    """A preset name (``tiny``, ``paper``) or a path to a YAML file."""
    return _preset_path(PRESET_DIR, preset, "SFT")


def load_config(preset: str | None, overrides: Mapping[str, Any] | None = None) -> SFTConfig:
    """Defaults, then the preset's values, then ``overrides`` (values left ``None`` are ignored)."""
    return SFTConfig(**layered_values(FIELDS, PRESET_DIR, "SFT", preset, overrides)).validate()
