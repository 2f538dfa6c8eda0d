"""Trainer callbacks of the SFT stage: per-step MLflow metrics with clean names, and the early-stopping summary.

    python -m minirec.sft --preset tiny

``report_to="none"`` is set on the Trainer and this callback logs instead, on the main process only, so the
metric names are the harness's own: ``train_loss``, ``eval_loss``, ``learning_rate``, ``grad_norm``,
``tokens_per_second`` (non-padding tokens of all processes per wall second since the previous log),
``train_loss_window`` and ``epoch``, each at its optimiser step.

``train_loss`` is the Trainer's mean loss over the optimiser steps since its previous log; ``train_loss_window``
says how many steps that is. It is ``logging_steps`` except for the first log after a resume when the
checkpoint's step is not a multiple of ``logging_steps`` (the window then starts at the checkpoint), so a
partial window is never passed off as a full one.
"""

from __future__ import annotations

import time

from transformers import TrainerCallback

from minirec.devices import is_main_process

# Trainer log keys -> MLflow metric names; anything else (runtime summaries) is logged under its own name.
STEP_METRICS = {"loss": "train_loss", "learning_rate": "learning_rate", "grad_norm": "grad_norm", "epoch": "epoch"}
EVAL_METRICS = {"eval_loss": "eval_loss", "eval_runtime": "eval_runtime_s"}
SUMMARY_METRICS = {"train_loss": "train_loss_mean", "train_runtime": "train_runtime_s",
                   "train_samples_per_second": "train_samples_per_second"}


class MlflowStepLogger(TrainerCallback):
    """Log the Trainer's step logs to the active MLflow run, adding ``tokens_per_second``."""

    def __init__(self):
        self._last_time: float | None = None
        self._last_tokens = 0
        self._last_loss_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_time = time.perf_counter()
        self._last_tokens = state.num_input_tokens_seen
        self._last_loss_step = state.global_step  # a resumed run starts its first window at the checkpoint

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not is_main_process() or not logs:
            return
        import mlflow

        metrics: dict[str, float] = {}
        for table in (STEP_METRICS, EVAL_METRICS, SUMMARY_METRICS):
            metrics.update({name: float(logs[key]) for key, name in table.items() if key in logs})
        if "loss" in logs:
            now = time.perf_counter()
            if self._last_time is not None and now > self._last_time:
                metrics["tokens_per_second"] = (state.num_input_tokens_seen - self._last_tokens) / (now - self._last_time)
            self._last_time, self._last_tokens = now, state.num_input_tokens_seen
            metrics["train_loss_window"] = float(state.global_step - self._last_loss_step)
            self._last_loss_step = state.global_step
        if metrics:
            mlflow.log_metrics(metrics, step=state.global_step)


def training_summary(state) -> dict[str, float]:
    """What early stopping decided: best eval loss, its step, and the epoch and step training ended at."""
    summary = {"stopped_epoch": float(state.epoch or 0.0), "stopped_step": float(state.global_step),
               "early_stopped": float(state.global_step < state.max_steps)}
    if state.best_metric is not None:
        summary["best_eval_loss"] = float(state.best_metric)
    if state.best_model_checkpoint:
        summary["best_step"] = float(state.best_model_checkpoint.rstrip("/").rsplit("-", 1)[-1])
    evals = [entry["eval_loss"] for entry in state.log_history if "eval_loss" in entry]
    if evals:
        summary["first_eval_loss"] = float(evals[0])
    return summary
