"""Quiet, readable logs: third-party noise silenced at its source, progress bars only on a terminal.

    from minirec.logs import progress
    with progress(total=4533, desc="beam search", unit="user", stage="evaluate") as bar:
        bar.update(16)

:func:`quiet_third_parties` runs once at the start of every stage (:mod:`minirec.stage`): it sets the
environment switches and log levels that stop the known noise of transformers, datasets, DeepSpeed, MLflow and
the Hugging Face hub (progress bars in non-terminal logs, "Setting accelerator to CPU", FutureWarnings of
dependencies, MLflow's dataset-source ambiguity notice) without hiding warnings about our own use of them.
:func:`progress` is a tqdm bar on a terminal and, in a log file, one line every ``LOG_SECONDS`` with the count,
the rate and the ETA (and one at the end), so a 248 KB log of carriage returns becomes a few lines per stage.
:class:`TrainerProgress` does the same for the transformers Trainer (SFT and GRPO); :func:`follow_in_log` puts
it in place of the Trainer's own per-step printing of its log dictionaries (every value is in MLflow anyway).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from typing import Iterator

from transformers import TrainerCallback

LOG_SECONDS = 30.0


def on_terminal() -> bool:
    return sys.stderr.isatty()


def quiet_third_parties() -> None:
    """Silence the known third-party noise, process-wide (inherited by launched processes)."""
    bars = on_terminal()
    defaults = {
        "HF_HUB_DISABLE_PROGRESS_BARS": "0" if bars else "1",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "0" if bars else "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "true" if bars else "false",
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
        "TRL_EXPERIMENTAL_SILENCE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    # DeepSpeed probes for an accelerator on import and warns when it finds none; name CPU up front instead.
    if "DS_ACCELERATOR" not in os.environ and not _cuda_visible():
        os.environ["DS_ACCELERATOR"] = "cpu"
    # MLflow's system-metrics monitor announces its start, stop and the absent GPU at INFO for every run.
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|trl|accelerate|torch|datasets)")
    warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
    warnings.filterwarnings("ignore", message=".*`torch_dtype` is deprecated.*")
    if not bars:
        import datasets
        import transformers

        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()


def _cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


class LineProgress:
    """A tqdm-like counter that prints a line every ``LOG_SECONDS`` and one at the end."""

    def __init__(self, total: int, desc: str, unit: str, stage: str):
        self.total, self.desc, self.unit, self.stage = total, desc, unit, stage
        self.done = 0
        self.started = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= LOG_SECONDS:
            self.last = now
            self.print(now)

    def print(self, now: float, final: bool = False) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate and not final else 0.0
        tail = f"done in {elapsed:.0f} s" if final else f"ETA {left:.0f} s"
        print(f"[{self.stage}] {self.desc}: {self.done:,}/{self.total:,} {self.unit}s, {rate:.1f} {self.unit}s/s, "
              f"{tail}", flush=True)


@contextlib.contextmanager
def progress(total: int, desc: str, unit: str, stage: str, enabled: bool = True) -> Iterator:
    """A progress bar on a terminal, progress lines in a log file, nothing when not ``enabled``."""
    if not enabled or total == 0:
        yield _Silent()
        return
    if on_terminal():
        from tqdm.auto import tqdm

        with tqdm(total=total, desc=desc, unit=unit) as bar:
            yield bar
        return
    bar = LineProgress(total, desc, unit, stage)
    yield bar
    bar.print(time.monotonic(), final=True)


class _Silent:
    def update(self, n: int = 1) -> None:
        pass


class TrainerProgress(TrainerCallback):
    """In a log file: one line every ``LOG_SECONDS`` with the step, rate, latest loss and ETA (the Trainer's own
    bar is switched off there, ``disable_tqdm``)."""

    def __init__(self, stage: str):
        self.stage = stage
        self.loss = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = self.last = time.monotonic()
        self.first_step = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.loss = logs["loss"]

    def on_step_end(self, args, state, control, **kwargs):
        now = time.monotonic()
        if state.is_world_process_zero and (now - self.last >= LOG_SECONDS or state.global_step == state.max_steps):
            self.last = now
            done = state.global_step - self.first_step
            rate = done / max(now - self.started, 1e-9)
            left = (state.max_steps - state.global_step) / rate if rate else 0.0
            loss = f", loss {self.loss:.4g}" if isinstance(self.loss, (int, float)) else ""
            print(f"[{self.stage}] step {state.global_step}/{state.max_steps}, {rate:.2f} steps/s{loss}, "
                  f"ETA {left:.0f} s", flush=True)


def follow_in_log(trainer, stage: str) -> None:
    """In a log file (not a terminal): :class:`TrainerProgress` lines instead of the dictionary the Trainer prints
    at every logging step once its bar is off (its ``PrinterCallback``; the values are logged to MLflow)."""
    if on_terminal():
        return
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(TrainerProgress(stage))
