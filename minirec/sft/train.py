"""SFT training with the transformers ``Trainer``: model preparation, arguments, trainer, final checkpoint.

    python -m minirec.sft --preset tiny --category Industrial_and_Scientific           # CPU, bundled data
    python -m minirec.sft --preset paper --model Qwen/Qwen2.5-1.5B-Instruct --num_gpus 8

Reference: docs/upstream.md 4.1 (launch, hyper-parameters, saving) and 1.5 (SID tokens).

Why the plain ``Trainer`` and not trl's ``SFTTrainer``: the samples are pre-tokenised with upstream's own
masking (preamble and body tokenised apart, labels -100 on the prompt, left truncation, docs/upstream.md 4.2), which
``SFTTrainer`` would redo its own way (chat templates, completion masks, packing). The plain Trainer with
``DataCollatorForSeq2Seq(pad_to_multiple_of=8, label_pad_token_id=-100)`` and left padding is exactly
upstream's choice, so batches match upstream's token for token.

Deliberate differences from upstream (all switchable, minirec.upstream): cosine schedule (``lr_scheduler=linear``
or the switch ``sft_linear_schedule`` restores the code's), fp32 master weights under bf16 autocast (the switch
``sft_pure_bf16`` loads pure bf16 weights as upstream), ZeRO-2 instead of plain DDP across several GPUs (same
optimiser maths, less memory; the switch ``sft_ddp`` restores DDP).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from minirec.data.catalogue import Catalogue
from minirec.devices import resolve_device, uses_bf16
from minirec.launch import deepspeed_config
from minirec.logs import follow_in_log, on_terminal
from minirec.sft.callbacks import MlflowStepLogger, training_summary
from minirec.sft.data import IGNORE_INDEX, SFTDatasets, build_datasets
from minirec.sft.freeze import FreezeSummary, freeze_all_but_sid_rows, sid_token_ids
from minirec.sft.settings import TINY_MODEL, SFTSettings

FINAL_CHECKPOINT = "final_checkpoint"


def tiny_model_dir(config: SFTSettings) -> Path:
    """Where the tiny base model of a category and seed is cached: beside the run's output folder."""
    return Path(config.output_dir).resolve().parent / f"tiny-base-{config.category}-seed{config.seed}"


def prepare_base_model(config: SFTSettings) -> Path:
    """The base model's folder; ``tiny`` is built once per category and seed (minirec.tiny_model)."""
    if config.model != TINY_MODEL:
        from minirec.models import resolve_model

        return resolve_model(config.model)
    folder = tiny_model_dir(config)
    if not (folder / "config.json").exists():
        from minirec.tiny_model import build_tiny_model

        build_tiny_model(config.category, folder, data_dir=config.data_dir or None, seed=config.seed)
    return folder


@dataclass
class PreparedModel:
    model: torch.nn.Module
    tokenizer: object
    sid_tokens_added: int
    freeze: FreezeSummary | None

    def facts(self) -> dict[str, float]:
        """Numbers worth a param: tokenizer size, SID tokens, trainable parameters."""
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        config = self.model.config
        return {"tokenizer_size": len(self.tokenizer), "sid_tokens_added": self.sid_tokens_added,
                "sid_tokens": len(sid_token_ids(self.tokenizer)), "trainable_parameters": trainable,
                "total_parameters": sum(p.numel() for p in self.model.parameters()),
                "model.layers": config.num_hidden_layers, "model.hidden_size": config.hidden_size}


def prepare_model(config: SFTSettings, catalogue: Catalogue, device: str) -> PreparedModel:
    """Load the base model and tokenizer, add SID tokens (docs/upstream.md 1.5), optionally freeze all but SID rows."""
    from transformers import set_seed

    from minirec.models import add_sid_tokens, load_model_and_tokenizer

    # Upstream seeds everything before loading, which makes the mean-resizing draw of new rows deterministic.
    set_seed(config.seed)
    pure_bf16 = config.switch("sft_pure_bf16") and uses_bf16(config.precision, device)
    model, tokenizer = load_model_and_tokenizer(prepare_base_model(config),
                                                dtype=torch.bfloat16 if pure_bf16 else torch.float32)
    added = add_sid_tokens(tokenizer, model, catalogue)
    model.config.use_cache = False
    freeze = freeze_all_but_sid_rows(model, sid_token_ids(tokenizer)) if config.freeze_llm else None
    return PreparedModel(model, tokenizer, added, freeze)


def training_arguments(config: SFTSettings, device: str):
    """Upstream's ``TrainingArguments`` (docs/upstream.md 4.1) with the harness's schedule, precision and logging."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=config.output_dir,
        per_device_train_batch_size=config.micro_batch_size,
        per_device_eval_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps(),
        num_train_epochs=config.num_epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.effective_lr_scheduler(),
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        optim=config.optim,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        bf16=uses_bf16(config.precision, device),
        use_cpu=device == "cpu",
        logging_steps=config.logging_steps,
        eval_strategy="steps",
        eval_steps=config.eval_steps,
        eval_on_start=True,  # the eval loss before any update, so its fall is visible in the run
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        disable_tqdm=not on_terminal(),  # a log file gets TrainerProgress's lines instead
        ddp_find_unused_parameters=False,
        deepspeed=deepspeed_config(config, device, ddp=config.switch("sft_ddp")),
        dataloader_num_workers=0,
    )


class AnswerSpanCollator:
    """Upstream's ``DataCollatorForSeq2Seq`` batches, plus ``logits_to_keep``: the last positions that hold every
    supervised token of the batch (and the one before, whose logits predict the first).

    The loss only reads logits where labels are not -100, the response at the end of each row; projecting the
    whole prompt onto the vocabulary is wasted work (for the tiny model most of a step; for Qwen2.5-1.5B a
    (512 x 151k) float tensor per sequence). The loss is the same number (:func:`answer_loss`)."""

    def __init__(self, tokenizer):
        from transformers import DataCollatorForSeq2Seq

        self.collate = DataCollatorForSeq2Seq(tokenizer, padding=True, pad_to_multiple_of=8,
                                              label_pad_token_id=IGNORE_INDEX, return_tensors="pt")

    def __call__(self, features):
        batch = self.collate(features)
        supervised = batch["labels"] != IGNORE_INDEX
        width = batch["labels"].shape[1]
        first = int(supervised.float().argmax(dim=1)[supervised.any(dim=1)].min()) if supervised.any() else width - 1
        batch["logits_to_keep"] = width - first + 1 if first > 0 else width
        return batch


def answer_loss(outputs, labels, num_items_in_batch=None):
    """transformers' causal-LM loss on the kept logits (the last ``logits_to_keep`` positions): the same sum over
    supervised tokens, divided by the same count, as the model's own loss over the full sequence."""
    from transformers.loss.loss_utils import ForCausalLMLoss

    logits = outputs["logits"]
    return ForCausalLMLoss(logits, labels[:, -logits.shape[1]:], logits.shape[-1], num_items_in_batch=num_items_in_batch)


def build_trainer(config: SFTSettings, prepared: PreparedModel, datasets: SFTDatasets, device: str,
                  callbacks: Sequence = ()):
    """The ``Trainer`` with upstream's collator and early stopping, plus the MLflow step logger."""
    from transformers import EarlyStoppingCallback, Trainer

    collator = AnswerSpanCollator(prepared.tokenizer)
    all_callbacks = [MlflowStepLogger(), *callbacks]
    if config.early_stopping_patience > 0:
        all_callbacks.insert(0, EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    trainer = Trainer(model=prepared.model, args=training_arguments(config, device), train_dataset=datasets.train,
                      eval_dataset=datasets.valid, data_collator=collator, processing_class=prepared.tokenizer,
                      compute_loss_func=answer_loss, callbacks=all_callbacks)
    follow_in_log(trainer, "sft")
    return trainer


@dataclass
class SFTResult:
    trainer: object
    prepared: PreparedModel
    datasets: SFTDatasets
    final_checkpoint: Path | None
    summary: dict[str, float]


def train_sft(config: SFTSettings, files, catalogue: Catalogue, *, resume_checkpoint: str | None = None,
              callbacks: Sequence = (), prepared: PreparedModel | None = None, save: bool = True) -> SFTResult:
    """Prepare the model and data, train (or continue from ``resume_checkpoint``), save the best model."""
    from minirec.models import save_checkpoint

    device = resolve_device(config.device)
    prepared = prepared or prepare_model(config, catalogue, device)
    datasets = build_datasets(prepared.tokenizer, files, catalogue, tasks=config.tasks,
                              quirks=config.switches(), cutoff_len=config.cutoff_len,
                              sample=config.sample, valid_sample=config.valid_sample, seed=config.seed,
                              shuffle_seed=config.shuffle_seed)
    trainer = build_trainer(config, prepared, datasets, device, callbacks)
    trainer.train(resume_from_checkpoint=resume_checkpoint or None)
    # The best model (load_best_model_at_end) and its tokenizer, in upstream's layout.
    final = (save_checkpoint(trainer.model, prepared.tokenizer, Path(config.output_dir) / FINAL_CHECKPOINT)
             if save and trainer.is_world_process_zero() else None)
    return SFTResult(trainer, prepared, datasets, final, training_summary(trainer.state))
