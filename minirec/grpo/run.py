"""One GRPO run: resolve the policy, build prompts and trainer, train (or resume), log everything to MLflow.

    python -m minirec.grpo --preset tiny --category Industrial_and_Scientific
    python -m minirec.grpo --preset paper --model <SFT run id> --num_gpus 4
    python -m minirec.grpo --resume_from <GRPO run id> --num_train_epochs 3      # extend a finished run

Reference: reference-spec 5 (the RL stage) and 8.1 B, C, E, G, K (what is fixed here).

The policy is the SFT checkpoint; trl rebuilds the reference model from ``model.config._name_or_path`` when
``beta > 0``, so that attribute is pinned to the SFT checkpoint folder: at step 0 the reference model *is*
the SFT model and the KL is 0. Upstream's test-time decode during training (8.1 E, which shared the
constraint's counter with the roll-outs) is replaced by a separate constrained evaluation on a valid subset,
and upstream's extra full model per rank (8.1 K) does not exist here.

Resuming from a run id restores that run's settings (options given again on the command line win), downloads
its latest ``checkpoints/checkpoint-<N>`` artifact and continues in a new run tagged ``resumed_from`` and
parented to the old one. With a larger ``num_train_epochs`` the trainer recomputes ``max_steps`` = T' and
builds a fresh cosine schedule for it (warm-up ``ceil(warmup_ratio x T')``); the restored scheduler state
keeps only the step count s0. The first resumed step (s0 + 1) still runs at the learning rate saved in the
optimizer state, the *old* curve's next value (0 when the old cosine had run to its end); every later step s
runs at ``lr x lambda_new(s - 1)`` on the *new* curve, so the new curve's value for step s0 + 1 is skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from pathlib import Path

import torch

from minirec.grpo.config import DEEPSPEED_ZERO2, GRPOSettings

STAGE = "grpo"
FINAL_CHECKPOINT = "final_checkpoint"
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class PolicyNotFoundError(LookupError):
    """No model was given and no finished SFT run exists to start from."""


def resolve_device(settings: GRPOSettings) -> str:
    """``cuda`` when asked for or available (``auto``), else ``cpu``."""
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but no CUDA device is visible; use device=cpu or auto")
    return "cuda" if settings.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"


def latest_sft_run(category: str, preset: str) -> str:
    """The id of the latest FINISHED run tagged stage=sft, this category and this preset."""
    import mlflow

    from minirec.tracking import configure_environment, experiment_name

    configure_environment()
    preset = preset or "tiny"
    runs = mlflow.search_runs(
        experiment_names=[experiment_name(category)],
        filter_string=f"tags.stage = 'sft' and tags.category = '{category}' and tags.preset = '{preset}' "
                      "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    if not runs:
        raise PolicyNotFoundError(
            f"no finished SFT run for {category} with preset {preset} in {os.environ['MLFLOW_TRACKING_URI']}; "
            f"train one first: mlflow run . -e sft -P preset={preset} -P category={category} --env-manager local "
            f"(or python -m minirec.sft --preset {preset} --category {category}), or pass --model"
        )
    return runs[0].info.run_id


def is_run_id(text: str) -> bool:
    return bool(_RUN_ID.match(text))


def previous_run_params(run_id: str) -> dict[str, str]:
    """The settings a GRPO run was started with (its MLflow params), its resolved policy as ``model``."""
    from mlflow import MlflowClient

    from minirec.grpo.config import FIELDS, PARAM_PREFIX
    from minirec.tracking import configure_environment

    configure_environment()
    params = MlflowClient().get_run(run_id).data.params
    settings = {name: params[PARAM_PREFIX + name] for name in FIELDS
                if PARAM_PREFIX + name in params and name != "resume_from"}
    if not settings:
        raise LookupError(f"run {run_id} has no {PARAM_PREFIX}* params: it is not a GRPO run of this harness")
    # the policy the run actually started from, also when it took the latest SFT run by default
    settings["model"] = params.get("policy") or settings.get("model", "")
    return settings


def download_latest_checkpoint(run_id: str, into: Path) -> Path:
    """Download the highest-step ``checkpoints/checkpoint-<N>`` artifact of a run into ``into``."""
    import mlflow
    from mlflow import MlflowClient

    from minirec.grpo.callbacks import CHECKPOINT_DIR

    entries = MlflowClient().list_artifacts(run_id, CHECKPOINT_DIR)
    steps = sorted(int(e.path.rsplit("-", 1)[-1]) for e in entries
                   if e.is_dir and re.search(r"checkpoint-\d+$", e.path))
    if not steps:
        raise FileNotFoundError(f"run {run_id} has no {CHECKPOINT_DIR}/checkpoint-<N> artifacts to resume from")
    into.mkdir(parents=True, exist_ok=True)
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"{CHECKPOINT_DIR}/checkpoint-{steps[-1]}",
                                               dst_path=str(into))
    return Path(path)


def resolve_resume(settings: GRPOSettings) -> tuple[Path | None, str | None]:
    """``(checkpoint folder, run id it came from)`` for ``resume_from`` (a folder or a run id)."""
    if not settings.resume_from:
        return None, None
    if Path(settings.resume_from).is_dir():
        return Path(settings.resume_from), None
    if is_run_id(settings.resume_from):
        # one copy per process, so processes never write into the same folder at once
        into = Path(settings.output_dir) / "resumed" / f"rank-{os.environ.get('RANK', '0')}"
        checkpoint = download_latest_checkpoint(settings.resume_from, into)
        return checkpoint, settings.resume_from
    raise FileNotFoundError(f"resume_from {settings.resume_from!r} is neither a checkpoint folder nor an MLflow run id")


def deepspeed_config(settings: GRPOSettings, device: str) -> dict | None:
    """The given DeepSpeed YAML, or the shared ZeRO-2 file when several GPUs train."""
    import yaml

    from minirec.data.layout import PROJECT_ROOT

    name = settings.deepspeed or (str(DEEPSPEED_ZERO2) if settings.num_gpus > 1 and device == "cuda" else "")
    if not name:
        return None
    path = Path(name) if Path(name).is_absolute() or Path(name).exists() else PROJECT_ROOT / name
    if not path.exists():
        raise FileNotFoundError(f"DeepSpeed config {name} not found (also looked in {PROJECT_ROOT})")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def grpo_arguments(settings: GRPOSettings, device: str):
    """trl's ``GRPOConfig``: upstream's objective plus the run's batch, schedule and checkpoint settings."""
    from minirec.grpo.trainer import upstream_grpo_arguments

    bf16 = settings.precision == "bf16" or (settings.precision == "auto" and device == "cuda")
    return upstream_grpo_arguments(
        output_dir=settings.output_dir,
        per_device_train_batch_size=settings.per_device_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
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
        bf16=bf16,
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
    """The constrained GRPO trainer with its MLflow callbacks."""
    from minirec.constraint import SidConstraint
    from minirec.grpo.callbacks import CheckpointArtifacts, StepMetrics, ValidRanking
    from minirec.grpo.rewards import reward_functions
    from minirec.grpo.trainer import ConstrainedGRPOTrainer

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    trainer = ConstrainedGRPOTrainer(
        model=model,
        reward_funcs=reward_functions(settings.reward, settings.num_generations),
        args=grpo_arguments(settings, device),
        train_dataset=prompts.train,
        processing_class=tokenizer,
        constraint=SidConstraint.from_catalogue(catalogue, tokenizer).to(device),
        valid_sids=catalogue.valid_sids,
        beam_search=settings.beam_search,
        max_prompt_length=settings.max_prompt_length,
    )
    trainer.add_callback(StepMetrics())
    trainer.add_callback(ValidRanking(
        trainer=trainer, files=files, catalogue=catalogue, eval_steps=settings.eval_steps,
        limit=None if settings.eval_limit < 0 else settings.eval_limit, num_beams=settings.eval_beams,
        batch_size=settings.eval_batch_size, out_dir=Path(settings.output_dir) / "valid",
        table_rows=settings.rollout_table_rows,
    ))
    if settings.log_checkpoints:
        trainer.add_callback(CheckpointArtifacts())
    return trainer


def log_run_inputs(settings: GRPOSettings, policy: str, files, prompts, trainer) -> None:
    """Params (settings, policy, prompt counts), data files and the roll-out generation config in effect."""
    import mlflow

    import yaml

    from minirec.generation import beam_generation_config, effective_generation_config
    from minirec.grpo.config import preset_path
    from minirec.grpo.rollout import sampling_generation_config
    from minirec.tracking import log_data_files, log_params

    model, tokenizer = trainer.model, trainer.processing_class
    log_params({**settings.as_params(), "policy": policy, "policy_path": model.config._name_or_path,
                       "train_prompts": len(prompts.train), "eval_prompts": len(prompts.eval),
                       **{f"prompts.{task}": rows for task, rows in prompts.task_rows.items()}})
    log_data_files(files)
    mlflow.log_text(yaml.safe_dump(dataclasses.asdict(settings), sort_keys=False), "config/resolved.yaml")
    if settings.preset:
        preset_file = preset_path(settings.preset)
        mlflow.log_text(preset_file.read_text(encoding="utf-8"), f"config/{preset_file.name}")
    new_tokens = min(settings.max_completion_length, trainer.constraint.max_new_tokens)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if settings.beam_search:
        config = beam_generation_config(settings.num_generations, new_tokens, eos, pad)
        config = effective_generation_config(model, config)
    else:
        config = sampling_generation_config(settings.temperature, new_tokens, eos, pad)
    mlflow.log_dict(config.to_dict(), "rollout_generation_config.json")


def train_grpo(settings: GRPOSettings) -> str | None:
    """Run GRPO as described by ``settings``; return the MLflow run id (None on non-main processes)."""
    from minirec.data import Catalogue, locate
    from minirec.grpo.data import build_prompt_set
    from minirec.models import log_hf_model, save_checkpoint
    from minirec.tracking import is_main_process, start_run

    device = resolve_device(settings)
    files = locate(settings.category, settings.data_dir or None)
    catalogue = Catalogue.load(files)
    checkpoint, previous_run = resolve_resume(settings)
    policy = settings.model or latest_sft_run(settings.category, settings.preset)
    model, tokenizer = load_policy(policy, device)
    prompts = build_prompt_set(
        files, catalogue, tasks=settings.task_list(), upstream_quirks=settings.upstream_quirks,
        title_history_sample=settings.title_history_sample, seed=settings.shuffle_seed,
        max_train_prompts=None if settings.max_train_prompts < 0 else settings.max_train_prompts,
    )
    tags = {"preset": settings.preset or "custom"}
    if previous_run:
        tags["resumed_from"] = previous_run
    run_context = (
        start_run(category=settings.category, stage=STAGE, source=policy, entry_point="grpo",
                  run_name=f"grpo-{settings.preset or 'custom'}-{settings.category}", tags=tags,
                  parent_run_id=previous_run)
        if is_main_process() else contextlib.nullcontext()
    )
    with run_context as run:
        trainer = build_trainer(settings, model, tokenizer, files, catalogue, prompts, device)
        if run is not None:
            log_run_inputs(settings, policy, files, prompts, trainer)
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        if run is None:
            return None
        # The final policy and tokenizer in upstream's layout.
        save_checkpoint(trainer.accelerator.unwrap_model(trainer.model), tokenizer,
                        Path(settings.output_dir) / FINAL_CHECKPOINT)
        if settings.log_model:
            log_hf_model(trainer.accelerator.unwrap_model(trainer.model), tokenizer,
                         tags={"stage": STAGE, "category": settings.category})
        return run.info.run_id
