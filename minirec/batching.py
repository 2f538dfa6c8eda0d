"""Batch arithmetic shared by SFT and GRPO: a fixed global batch, accumulation derived from the processes.

    python -m minirec.sft  --preset paper --num_gpus 8 --print_config    # global_batch_size 1024, accumulation 8
    python -m minirec.grpo --preset paper --num_gpus 8 --print_config    # 64 prompts x 16 beams, accumulation 2

Upstream fixes the global batch and divides it by micro batch x GPUs (sft.py; rl.sh's 64 prompts of 16 beams
per optimiser step, docs/upstream.md 4.1, 5.2), so a run on a different number of GPUs optimises the same
objective. Here both stages do that: the global batch is the setting, ``gradient_accumulation_steps`` is
derived, and a combination that does not divide is refused with the numbers.
"""

from __future__ import annotations

from minirec.errors import SettingsError


def accumulation_steps(global_batch: int, micro_batch: int, processes: int, *, global_name: str,
                       micro_name: str, unit: str = "examples") -> int:
    """``global_batch / (micro_batch x processes)``, or a :class:`SettingsError` saying why it is not whole."""
    per_step = micro_batch * processes
    if global_batch <= 0 or per_step <= 0 or global_batch % per_step:
        raise SettingsError(
            f"{global_name} {global_batch} {unit} per optimiser step is not a multiple of {micro_name} "
            f"{micro_batch} x {processes} processes = {per_step}; choose values whose product divides it"
        )
    return global_batch // per_step
