"""Settings of the GRPO stage: one dataclass, presets in ``configs/grpo/<preset>.yaml``, options on top.

    python -m minirec.grpo --preset paper --model <SFT run id> --num_gpus 4 --print_config

Reference: docs/upstream.md 5.2 (rl.sh's hyper-parameters). The global batch is the setting: ``prompts_per_step``
prompts of ``num_generations`` completions each per optimiser step (64 x 16 = 1,024 in the paper, on any number
of GPUs that divides it); ``gradient_accumulation_steps`` is derived from it, the per-device batch (in
completions, as trl counts) and the processes (:mod:`minirec.batching`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from minirec.batching import accumulation_steps
from minirec.decoding import DecodeSettings
from minirec.errors import SettingsError
from minirec.grpo.data import TASKS, TITLE_HISTORY_SAMPLE
from minirec.grpo.rewards import CF_REWARD_TYPES, REWARD_TYPES
from minirec.settings import LaunchedSettings, check_training_length, setting
from minirec.upstream import UpstreamSettings


@dataclass
class GRPOSettings(UpstreamSettings, LaunchedSettings):
    """Every setting of a GRPO run; the defaults are upstream's (rl.sh over rl.py, docs/upstream.md 5.2).

    Upstream switches (``upstream``, ``quirks``; minirec.upstream) acting here: rl_answer_leak, three_token_sids,
    rl_empty_description, rl_sample_raises (prompts), rollout_beam_sampling (roll-outs), constraint_fail_open and
    constraint_eos_fallback (the roll-outs' masking).
    """

    STAGE = "grpo"

    # --- what to train ---
    model: str = setting("", "policy to start from: SFT run id, runs:/ or models:/ URI, local folder or hub id; "
                         "empty: the latest finished SFT run of this category and preset")
    # --- prompts (docs/upstream.md 5.3) ---
    tasks: list = setting(list(TASKS), "prompt tasks of the mixture, comma-separated", choices=TASKS,
                          upstream="rl.py: the four datasets, concatenated in this order")
    title_history_sample: int = setting(TITLE_HISTORY_SAMPLE, "title-history prompts drawn from train "
                                        "(random_state=0)", upstream="rl.py: sample=10000", minimum=0)
    max_train_prompts: int = setting(-1, "keep the first N prompts of the shuffled mixture (-1: all)", minimum=-1)
    shuffle_seed: int = setting(42, "seed of the mixture shuffle", upstream="rl.py: the run seed, 42")
    max_prompt_length: int = setting(512, "keep the last N prompt tokens", upstream="trl's former default",
                                     minimum=1)
    # --- roll-outs (docs/upstream.md 5.4) ---
    num_generations: int = setting(16, "G: completions per prompt (beams in beam mode)", upstream="rl.sh: 16",
                                   minimum=2, maximum=1000)
    beam_search: bool = setting(True, "constrained beam search with G beams per prompt (rl.sh); false: one "
                                "constrained sample per repeated prompt at --temperature")
    rollout_decoder: str = setting("sid", "beam roll-outs: sid (one prefill per prompt, generate's beam search "
                                   "step for step) or hf (model.generate)", choices=("sid", "hf"))
    temperature: float = setting(1.0, "sampling temperature (also divides the logits of the loss, as in trl)",
                                 minimum=1e-6)
    max_completion_length: int = setting(128, "maximum new tokens per completion", upstream="rl.sh: 128",
                                         minimum=1)
    reward: str = setting("ranking", "rule, ranking (rule + rank penalty), ranking_only, ranking_cf (ranking + "
                          "cf_weight x the CF model's score) or cf_only (the CF score alone: upstream's "
                          "reward_type=sasrec)", choices=REWARD_TYPES, upstream="rl.sh: ranking")
    cf_model: str = setting("", "reward ranking_cf / cf_only: the learned baselines run (run id or runs:/ URI, or a "
                            "best.pt file) whose item-id model scores each roll-out (e.g. -e baselines -P "
                            "method=sasrec)", upstream="rl.py: --cf_path, a SASRec state dict")
    cf_weight: float = setting(1.0, "weight of the CF term in the summed reward", minimum=0.0)
    cf_score: str = setting("logit", "what the CF term is: the model's raw logit of the completion's item "
                            "(upstream) or its softmax probability over the catalogue", choices=("logit", "probability"),
                            upstream="rl.py cf_reward: the raw logit")
    # --- optimisation (docs/upstream.md 5.2, 5.6) ---
    prompts_per_step: int = setting(64, "prompts per optimiser step over all processes (each with G completions)",
                                    upstream="rl.sh: 8 GPUs x 64 completions x accumulation 2 / 16", minimum=1)
    per_device_batch_size: int = setting(64, "completions per device per micro-step (64 = 4 prompts x 16)",
                                         upstream="rl.sh: 64", minimum=1)
    num_train_epochs: float = setting(2.0, "epochs over the prompt mixture", upstream="rl.sh: 2", minimum=0.0)
    max_steps: int = setting(-1, "stop after N optimiser steps (-1: use num_train_epochs)", minimum=-1)
    learning_rate: float = setting(1e-5, "peak learning rate", upstream="rl.sh: 1e-5", minimum=0.0)
    lr_scheduler: str = setting("cosine", "transformers scheduler name")
    warmup_ratio: float = setting(0.03, "share of all steps spent in linear warm-up", upstream="rl.sh: 0.03",
                                  minimum=0.0, maximum=1.0)
    max_grad_norm: float = setting(0.3, "gradient clipping norm", upstream="rl.sh: 0.3", minimum=0.0)
    beta: float = setting(1e-3, "KL coefficient (k3 estimator against the reference model)",
                          upstream="rl.sh: 1e-3", minimum=0.0)
    optim: str = setting("adamw_torch", "transformers optimiser (upstream: paged_adamw_32bit, needs bitsandbytes)")
    precision: str = setting("auto", "auto (bf16 on GPU, fp32 on CPU), bf16 or fp32", choices=("auto", "bf16", "fp32"))
    deepspeed: str = setting("", "DeepSpeed config; default configs/deepspeed/zero2.yaml with several GPUs")
    # --- reference model (TR-DPO sync, trl defaults used by upstream) ---
    sync_ref_model: bool = setting(True, "mix the policy into the reference model every ref_model_sync_steps")
    ref_model_mixup_alpha: float = setting(0.6, "reference <- alpha * policy + (1 - alpha) * reference",
                                           minimum=0.0, maximum=1.0)
    ref_model_sync_steps: int = setting(512, "optimiser steps between reference syncs", minimum=1)
    # --- evaluation, checkpoints, logging ---
    eval_steps: float = setting(0.0999, "constrained-beam evaluation every N steps (< 1: a fraction of all steps; "
                                "0: only at the end)", minimum=0.0)
    eval_limit: int = setting(512, "valid rows of the fixed, seeded evaluation subset (-1: all)", minimum=-1)
    eval_beams: int = setting(50, "beams of the evaluation", minimum=1, maximum=1000)
    eval_batch_size: int = setting(8, "prompts per batch in the evaluation", minimum=1)
    save_steps: float = setting(0.1, "checkpoint every N steps (< 1: a fraction of all steps)", minimum=1e-9)
    save_total_limit: int = setting(20, "checkpoints kept on disk", minimum=1)
    logging_steps: int = setting(1, "log the step metrics every N optimiser steps", minimum=1)
    rollout_table_rows: int = setting(64, "roll-outs (prompt, beams, rewards) kept in the logged sample table",
                                      minimum=0)
    log_checkpoints: bool = setting(True, "upload each checkpoint as an MLflow artifact (needed to resume by run id)")
    log_model: bool = setting(True, "log the final policy and tokenizer as the run's MLflow model")
    # --- resume ---
    resume_from: str = setting("", "MLflow run id to continue; with a larger num_train_epochs it extends a "
                               "finished run")

    @property
    def completions_per_step(self) -> int:
        return self.prompts_per_step * self.num_generations

    def gradient_accumulation_steps(self) -> int:
        return accumulation_steps(self.completions_per_step, self.per_device_batch_size, self.world_size,
                                  global_name=f"prompts_per_step {self.prompts_per_step} x num_generations "
                                              f"{self.num_generations} =", micro_name="per_device_batch_size",
                                  unit="completions")

    def derived(self) -> dict[str, Any]:
        accumulation = self.gradient_accumulation_steps()
        per_process = self.per_device_batch_size * accumulation
        if per_process % self.num_generations:
            raise SettingsError(
                f"each of the {self.world_size} processes would roll out {per_process} completions per step "
                f"(per_device_batch_size {self.per_device_batch_size} x accumulation {accumulation}), not whole "
                f"groups of num_generations {self.num_generations}: make per_device_batch_size a multiple of "
                f"{self.num_generations}")
        return {"gradient_accumulation_steps": accumulation, "completions_per_step": self.completions_per_step,
                "prompts_per_process_step": per_process // self.num_generations, "world_size": self.world_size}

    def check(self) -> None:
        super().check()
        check_training_length("num_train_epochs", self.num_train_epochs, self.max_steps)
        if not self.tasks:
            raise SettingsError(f"tasks is empty: expected some of {', '.join(TASKS)}")
        if self.sync_ref_model and self.beta == 0:
            raise SettingsError("sync_ref_model needs beta > 0: with beta 0 there is no reference model to sync")
        if self.reward in CF_REWARD_TYPES and not self.cf_model:
            raise SettingsError(f"reward = {self.reward!r} needs cf_model: the run id of a learned baselines run "
                                "(mlflow run . -e baselines -P method=sasrec ...)")
        if self.cf_model and self.reward not in CF_REWARD_TYPES:
            raise SettingsError(f"cf_model is set but reward = {self.reward!r} does not use it: expected one of "
                                f"{', '.join(CF_REWARD_TYPES)}")

    def eval_decode(self) -> DecodeSettings:
        """The validation ranking's decoding (the evaluate stage's, on a seeded valid subset)."""
        return DecodeSettings(num_beams=self.eval_beams, batch_size=self.eval_batch_size, decoder=self.rollout_decoder)
