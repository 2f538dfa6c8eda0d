"""Re-launching the SFT entry point on several processes: ``accelerate`` + ZeRO-2 on GPUs, ``torchrun`` on CPU.

    python -m minirec.sft --preset paper --num_gpus 8          # accelerate launch, configs/accelerate/zero2.yaml
    python -m minirec.sft --preset tiny --device cpu --num_processes 2   # torchrun, DDP over gloo

Reference: reference-spec 4.1 (upstream: ``torchrun --nproc_per_node 8``, plain DDP). ``accelerate launch
--cpu`` runs a single process (several CPU processes need MPI), so CPU runs go through
``torch.distributed.run``; the Trainer then joins a gloo process group. Each child sees ``WORLD_SIZE`` and
trains instead of re-launching.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Sequence

from minirec.data.layout import PROJECT_ROOT

ACCELERATE_ZERO2 = PROJECT_ROOT / "configs" / "accelerate" / "zero2.yaml"


def inside_launch() -> bool:
    """True in a process started by a distributed launcher."""
    return "WORLD_SIZE" in os.environ


def launch_command(num_processes: int, device: str, argv: Sequence[str]) -> list[str]:
    """The command that runs ``python -m minirec.sft argv`` on ``num_processes`` processes."""
    if device == "cuda":
        launcher = ["-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_ZERO2),
                    "--num_processes", str(num_processes)]
    else:
        launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(num_processes)]
    return [sys.executable, *launcher, "-m", "minirec.sft", *argv]


def relaunch(num_processes: int, device: str, argv: Sequence[str]) -> int:
    """Run the distributed command in the project root; return its exit code."""
    command = launch_command(num_processes, device, argv)
    print("launching:", " ".join(command), flush=True)
    return subprocess.run(command, cwd=PROJECT_ROOT).returncode
