"""Settings of the SFT stage: one dataclass, presets in ``configs/sft/<preset>.yaml``, options on top.

    python -m minirec.sft --preset paper --model Qwen/Qwen2.5-1.5B-Instruct --num_gpus 8 --print_config

Reference: docs/upstream.md 4.1 (upstream's hyper-parameters). The global batch is the setting (1,024 as
upstream); ``gradient_accumulation_steps`` is derived from it, the micro batch and the processes
(:mod:`minirec.batching`), so every number of GPUs trains with the same objective.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from minirec.batching import accumulation_steps
from minirec.decoding import DecodeSettings
from minirec.errors import SettingsError
from minirec.settings import LaunchedSettings, check_training_length, setting
from minirec.sft.data import TASKS, UPSTREAM_SHUFFLE_SEED, trained_tasks
from minirec.upstream import UpstreamSettings

TINY_MODEL = "tiny"


@dataclass
class SFTSettings(UpstreamSettings, LaunchedSettings):
    """Every setting of an SFT run; the defaults are upstream's (sft.sh and sft.py, docs/upstream.md 4.1).

    Upstream switches (``upstream``, ``quirks``; minirec.upstream) acting here: alignment_leak, three_token_sids,
    sft_three_tasks (data), sft_linear_schedule, sft_pure_bf16, sft_ddp (training); logged with the derived
    ``effective_tasks`` and ``effective_lr_scheduler``.
    """

    STAGE = "sft"

    # --- what to train ---
    model: str = setting(TINY_MODEL, "base model to fine-tune: local path, hub id, MLflow run id or URI; 'tiny' "
                         "builds the small Qwen2 model of minirec.tiny_model", upstream="sft.sh: base_model")
    # --- data (docs/upstream.md 4.2-4.3) ---
    tasks: list = setting(list(TASKS), "SFT tasks to train on, comma-separated", choices=TASKS,
                          upstream="sft.py: five datasets, concatenated in this order")
    cutoff_len: int = setting(512, "keep the last N tokens of each sample", upstream="sft.sh: 512", minimum=8)
    sample: int = setting(-1, "train rows of the CSV-based tasks (-1: all; the alignment task keeps every item), "
                          "drawn with --seed", minimum=-1)
    valid_sample: int = setting(-1, "valid rows for the eval loss (-1: all)", minimum=-1)
    shuffle_seed: int = setting(UPSTREAM_SHUFFLE_SEED, "seed of the training-set shuffle",
                                upstream="sft.py:222, 42 whatever --seed says")
    # --- optimisation (docs/upstream.md 4.1) ---
    global_batch_size: int = setting(1024, "examples per optimiser step over all processes", upstream="sft.sh: 1024",
                                     minimum=1, aliases=("batch_size",))
    micro_batch_size: int = setting(16, "examples per device per micro-step", upstream="sft.sh: 16", minimum=1)
    num_epochs: float = setting(10.0, "maximum epochs", upstream="sft.sh: 10", minimum=0.0)
    max_steps: int = setting(-1, "stop after N optimiser steps (-1: use num_epochs)", minimum=-1)
    learning_rate: float = setting(3e-4, "peak learning rate", upstream="sft.sh: 3e-4", minimum=0.0)
    lr_scheduler: str = setting("cosine", "cosine (the paper) or linear (upstream's code)",
                                choices=("cosine", "linear", "constant_with_warmup"))
    warmup_steps: int = setting(20, "linear warm-up steps", upstream="sft.py: 20", minimum=0)
    weight_decay: float = setting(0.0, "AdamW weight decay", minimum=0.0)
    optim: str = setting("adamw_torch", "transformers optimiser name")
    max_grad_norm: float = setting(1.0, "gradient clipping norm (transformers default, as upstream)", minimum=0.0)
    precision: str = setting("auto", "auto (bf16 on GPU, fp32 on CPU), bf16 or fp32", choices=("auto", "bf16", "fp32"))
    freeze_llm: bool = setting(False, "train only the SID rows of the input and output embeddings (8.1 D fixed)")
    deepspeed: str = setting("", "DeepSpeed config (YAML); default configs/deepspeed/zero2.yaml with several GPUs")
    # --- evaluation, checkpoints, early stopping ---
    eval_steps: float = setting(0.05, "evaluate every N steps (a fraction < 1: of all steps)", upstream="sft.py: 0.05",
                                minimum=1e-9)
    save_steps: float = setting(0.05, "checkpoint every N steps (a multiple of eval_steps)", minimum=1e-9)
    early_stopping_patience: int = setting(3, "evaluations without eval-loss improvement before stopping (0: off)",
                                           upstream="sft.py: 3", minimum=0)
    logging_steps: int = setting(1, "log loss, lr, grad norm and tokens/s every N steps", minimum=1)
    final_eval_limit: int = setting(-1, "valid rows for the final constrained beam evaluation (-1: all, 0: skip)",
                                    minimum=-1)
    final_eval_beams: int = setting(50, "beams of the final evaluation", minimum=1, maximum=1000)
    final_eval_batch_size: int = setting(8, "prompts per batch in the final evaluation", minimum=1)
    evaluate_untrained: bool = setting(False, "also evaluate the untrained base model the same way (baseline)")
    log_model: bool = setting(True, "log the best checkpoint and its tokenizer as the run's MLflow model")
    # --- resume ---
    resume_from: str = setting("", "MLflow run id of an interrupted SFT run to continue (its latest whole "
                               "checkpoint artifact, on any machine)")

    def gradient_accumulation_steps(self) -> int:
        return accumulation_steps(self.global_batch_size, self.micro_batch_size, self.world_size,
                                  global_name="global_batch_size", micro_name="micro_batch_size")

    def derived(self) -> dict[str, Any]:
        return {"gradient_accumulation_steps": self.gradient_accumulation_steps(), "world_size": self.world_size,
                "effective_tasks": self.effective_tasks(), "effective_lr_scheduler": self.effective_lr_scheduler()}

    def effective_tasks(self) -> list[str]:
        """The tasks trained: ``tasks``, restricted to upstream's three under the switch ``sft_three_tasks``."""
        return trained_tasks(self.tasks, self.switches())

    def effective_lr_scheduler(self) -> str:
        """``lr_scheduler``, or ``linear`` (upstream's code) under the switch ``sft_linear_schedule``."""
        return "linear" if self.switch("sft_linear_schedule") else self.lr_scheduler

    def check(self) -> None:
        super().check()
        check_training_length("num_epochs", self.num_epochs, self.max_steps)
        if not self.tasks:
            raise SettingsError(f"tasks is empty: expected some of {', '.join(TASKS)}")
        if not self.effective_tasks():
            raise SettingsError(f"tasks = {self.tasks} leaves nothing to train under the upstream switch "
                                "sft_three_tasks (it keeps sid_history, item_alignment, sid_history_to_title)")
        if self.deepspeed and self.switch("sft_ddp"):
            raise SettingsError(f"deepspeed = {self.deepspeed!r} contradicts the upstream switch sft_ddp (plain DDP, "
                                "no DeepSpeed); drop one (quirks=no_sft_ddp keeps the profile's other switches)")
        if self.freeze_llm and self.weight_decay > 0:
            raise SettingsError("freeze_llm needs weight_decay 0: AdamW decays every row of a trainable matrix, "
                                "so the frozen rows of the embeddings would drift")

    def final_decode(self) -> DecodeSettings | None:
        """The final valid-split evaluation, or ``None`` when skipped (``final_eval_limit = 0``)."""
        if self.final_eval_limit == 0:
            return None
        return DecodeSettings(num_beams=self.final_eval_beams, batch_size=self.final_eval_batch_size,
                              limit=max(self.final_eval_limit, 0))
