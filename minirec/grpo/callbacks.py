"""MLflow logging for GRPO runs, as ``transformers`` callbacks; only the main process writes to MLflow.

    python -m minirec.grpo --preset tiny --category Industrial_and_Scientific

Reference: docs/upstream.md 5.5-5.6 (what upstream logs: reward, per-function reward, reward std, KL, diversity).

- :class:`StepMetrics`: every ``logging_steps``, trl's step metrics (reward mean/std, per-function means, KL,
  step time, ...) and the roll-out metrics of :class:`~minirec.grpo.trainer.ConstrainedGRPOTrainer`, at the
  optimiser step.
- :class:`ValidRanking`: every ``eval_steps`` and after the last step, constrained 50-beam HR@K/NDCG@K on a
  fixed, seeded subset of the valid split (``valid/HR_at_10``, ...), plus a sample of the latest roll-outs
  (prompt, rank, beam, target, rewards, advantage) as an MLflow table ``rollouts/step-<N>.json``.
Checkpoints are uploaded by :class:`minirec.resume.CheckpointArtifacts`, shared with SFT.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import pandas as pd
from transformers import TrainerCallback

from minirec.atomic import atomic_path
from minirec.decoding import DecodeSettings
from minirec.tracking import metric_name

ROLLOUT_TABLE_DIR = "rollouts"


def steps_from_fraction(value: float, max_steps: int) -> int:
    """``value`` optimiser steps, or that fraction of ``max_steps`` when below 1 (transformers' rule)."""
    return max(1, math.ceil(value * max_steps)) if value < 1 else int(value)


class StepMetrics(TrainerCallback):
    """Log each ``on_log`` dict of numbers as MLflow metrics at the current optimiser step."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        import mlflow

        numbers = {
            name: float(value)
            for name, value in logs.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        }
        if numbers:
            mlflow.log_metrics(numbers, step=state.global_step)


def rollout_sample(trainer, rows: int) -> pd.DataFrame:
    """The first ``rows`` completions of the latest roll-out batch, whole groups first, as a table."""
    logs = trainer._logs
    table = {
        "prompt": list(logs["prompt"]),
        "rank": list(logs["extra"].get("rank", [])),
        "completion": list(logs["completion"]),
        "target": list(logs["extra"].get("target", [])),
        **{f"reward_{name}": list(values) for name, values in logs["rewards"].items()},
        "advantage": list(logs["advantages"]),
    }
    length = min(len(values) for values in table.values())
    return pd.DataFrame({name: values[:length] for name, values in table.items()}).head(rows)


def seeded_valid_subset(files, limit: int | None, seed: int, out_dir: Path):
    """``files`` with its valid split replaced by ``limit`` rows drawn with ``seed`` (kept in split order)."""
    if limit is None:
        return files
    frame = pd.read_csv(files.valid, dtype=str, keep_default_na=False)
    if limit >= len(frame):
        return files
    subset = frame.sample(limit, random_state=seed).sort_index()
    target = Path(out_dir) / f"valid-subset-{limit}-seed{seed}.csv"
    with atomic_path(target) as staging:
        subset.to_csv(staging, index=False)
    return dataclasses.replace(files, valid=target)


class ValidRanking(TrainerCallback):
    """Constrained-beam ranking metrics on a fixed valid subset, and a roll-out sample, every ``eval_steps``.

    ``eval_steps`` below 1 is a fraction of all steps; 0 evaluates only after the last step, which is always
    evaluated. ``limit`` valid rows are drawn once with ``seed``, so every evaluation sees the same users.
    """

    def __init__(self, *, trainer, files, catalogue, eval_steps: float, limit: int | None, decode: DecodeSettings,
                 out_dir: Path, table_rows: int, seed: int = 0):
        self.trainer = trainer
        self.catalogue = catalogue
        self.eval_steps = eval_steps
        self.decode = decode
        self.out_dir = Path(out_dir)
        self.table_rows = table_rows
        self.seed = seed
        self.done_at: set[int] = set()
        self.eval_files = seeded_valid_subset(files, limit, seed, self.out_dir)

    def due(self, state) -> bool:
        if state.global_step in self.done_at or state.global_step == 0:
            return False
        if state.global_step >= state.max_steps:
            return True
        return self.eval_steps > 0 and state.global_step % steps_from_fraction(self.eval_steps, state.max_steps) == 0

    def on_step_end(self, args, state, control, **kwargs):
        if not self.due(state):
            return
        step = state.global_step
        self.done_at.add(step)
        out_dir = self.out_dir / f"valid-step-{step:06d}"
        if state.is_world_process_zero:
            shutil.rmtree(out_dir, ignore_errors=True)  # a folder left by an earlier run holds another model's beams
        self.trainer.accelerator.wait_for_everyone()
        scores = self.evaluate(out_dir)  # every process decodes its share; the main one scores
        if state.is_world_process_zero:
            self.log(step, scores)

    def evaluate(self, out_dir: Path):
        from minirec.evaluate import evaluate_model

        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        was_training = model.training
        model.eval()
        try:
            evaluation = evaluate_model(model, self.trainer.processing_class, self.eval_files, self.catalogue,
                                        self.decode, split="valid", out_dir=out_dir, seed=self.seed, progress=False)
        finally:
            model.train(was_training)
        return evaluation.scores

    def log(self, step: int, scores) -> dict[str, float]:
        import mlflow

        metrics = {f"valid/{metric_name(name)}": float(value) for name, value in scores.metrics.items()
                   if name.startswith(("HR@", "NDCG@"))}
        metrics["valid/invalid"] = float(scores.invalid)
        mlflow.log_metrics(metrics, step=step)
        sample = rollout_sample(self.trainer, self.table_rows)
        if len(sample):
            mlflow.log_table(sample, artifact_file=f"{ROLLOUT_TABLE_DIR}/step-{step:06d}.json")
        return metrics
