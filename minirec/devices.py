"""Which device a stage computes on, and the process state of a (possibly multi-process) launch.

    device = resolve_device(settings.device)      # "cuda" or "cpu"
    state = process_state(device)                 # accelerate's PartialState, gloo on CPU
"""

from __future__ import annotations

import re

from minirec.errors import SettingsError


def check_device(requested: str | None) -> None:
    """A :class:`SettingsError` unless ``requested`` is auto, cpu, cuda or cuda:N (checked before any run)."""
    if requested and not re.fullmatch(r"auto|cpu|cuda(:\d+)?", requested):
        raise SettingsError(f"device = {requested!r}: expected auto, cpu, cuda or cuda:N")


def resolve_device(requested: str | None) -> str:
    """``cuda`` (or ``cuda:N`` as asked) when asked for or available (``auto``), else ``cpu``; ``cuda`` without a
    GPU is an error."""
    import torch

    check_device(requested)
    requested = requested or "auto"
    available = torch.cuda.is_available()
    if requested.startswith("cuda") and not available:
        raise SettingsError(f"device = {requested!r} but no CUDA device is visible; use device=cpu or auto")
    if requested.startswith("cuda"):
        return requested
    return "cuda" if requested == "auto" and available else "cpu"


def uses_bf16(precision: str, device: str) -> bool:
    """bf16 mixed precision: ``auto`` means on GPU only (CPU trains in fp32)."""
    return precision == "bf16" or (precision == "auto" and device.startswith("cuda"))


def process_state(device: str):
    """accelerate's ``PartialState`` for this process: its rank among the launched processes and its device.

    ``cpu=True`` matters: without it a CPU process launched by accelerate believes it is alone (no gloo group).
    """
    from accelerate import PartialState

    return PartialState(cpu=device == "cpu")


def is_main_process() -> bool:
    """True on rank 0 of a launch (or when not launched): only it writes to MLflow."""
    import os

    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def inside_launch() -> bool:
    """True in a process started by a distributed launcher (``accelerate launch`` sets ``WORLD_SIZE``)."""
    import os

    return "WORLD_SIZE" in os.environ


def leave_process_group() -> None:
    """Wait for every rank, then shut the process group down before the interpreter exits; no-op without one.

    Non-main ranks finish first (the main one still saves the final checkpoint, writes outputs and logs). A rank
    that exits with the gloo group still up can abort in its teardown ("terminate called without an active
    exception"), which fails the whole launch although the work succeeded. Call it only after success: a rank
    that failed never reaches the barrier, and the launcher stops the others.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
