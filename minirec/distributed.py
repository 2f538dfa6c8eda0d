"""Leaving a multi-process run cleanly (``torchrun`` / ``accelerate launch`` children of sft, grpo, evaluate).

    from minirec.distributed import leave_process_group
    leave_process_group()   # last thing a launched process does after its work succeeded
"""

from __future__ import annotations


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
