"""The one multi-process launcher of the harness: ``accelerate launch``, for SFT, GRPO and evaluation alike.

    python -m minirec.sft --preset paper --num_gpus 8                       # 8 GPUs, DeepSpeed ZeRO-2
    python -m minirec.grpo --preset tiny --device cpu --num_gpus 2          # 2 gloo processes on CPU
    python -m minirec.sft --preset paper --num_gpus 8 --num_machines 2 --machine_rank 0 \\
        --main_process_ip 10.0.0.1 --main_process_port 29500               # node 0 of 2; node 1: --machine_rank 1

A stage whose settings ask for more than one process re-runs itself as ``accelerate launch ... -m
minirec.<stage> <same options>``; each child sees ``WORLD_SIZE`` and works instead of launching again.
DeepSpeed ZeRO-2 is switched on by the Trainer from ``configs/deepspeed/zero2.yaml`` (``TrainingArguments
.deepspeed``), so the launch itself is the same on GPUs and on CPU: ``--multi_gpu`` starts one process per
GPU or CPU slot through ``torch.distributed.run`` (accelerate's ``--cpu`` would start a single process, its
several-CPU mode needs MPI), and the stage joins a NCCL or gloo group from its device (``process_state``).
Upstream runs ``torchrun`` for SFT and ``accelerate`` for RL (docs/upstream.md 4.1, 5.1).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence

from minirec.data.layout import PROJECT_ROOT
from minirec.errors import SettingsError
from minirec.settings import LaunchedSettings

DEEPSPEED_ZERO2 = PROJECT_ROOT / "configs" / "deepspeed" / "zero2.yaml"


def launch_command(module: str, argv: Sequence[str], settings: LaunchedSettings) -> list[str]:
    """``accelerate launch`` of ``python -m module argv`` on ``settings.world_size`` processes."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--num_processes", str(settings.world_size),
               "--num_machines", str(settings.num_machines), "--machine_rank", str(settings.machine_rank)]
    if settings.num_machines > 1:
        command += ["--main_process_ip", settings.main_process_ip,
                    "--main_process_port", str(settings.main_process_port)]
    return [*command, "-m", module, *argv]


def relaunch(module: str, argv: Sequence[str], settings: LaunchedSettings, env: Mapping[str, str]) -> int:
    """Run the launch in the project root with ``env``; return its exit status."""
    command = launch_command(module, argv, settings)
    print(f"[{settings.STAGE}] launching {settings.world_size} processes: {' '.join(command[1:])}", flush=True)
    return subprocess.run(command, cwd=PROJECT_ROOT, env=dict(env)).returncode


def deepspeed_config(settings, device: str, ddp: bool = False) -> dict | None:
    """The DeepSpeed config the Trainer gets: ``settings.deepspeed`` (a YAML path), or ZeRO-2 by default when
    several GPUs train; ``None`` on one process or on CPU. ``ddp`` (the upstream switch ``sft_ddp``: upstream's
    SFT runs under ``torchrun`` with plain DDP, docs/upstream.md 4.1) gives ``None`` too, so the Trainer wraps the
    model in DDP on the processes this launcher started."""
    import yaml

    if ddp:
        if settings.deepspeed:
            raise SettingsError(f"deepspeed = {settings.deepspeed!r} contradicts plain DDP (the upstream switch "
                                "sft_ddp)")
        return None
    name = settings.deepspeed or (str(DEEPSPEED_ZERO2) if settings.world_size > 1 and device == "cuda" else "")
    if not name:
        return None
    path = Path(name) if Path(name).is_absolute() or Path(name).exists() else PROJECT_ROOT / name
    if not path.exists():
        raise SettingsError(f"deepspeed = {name!r}: no such file (also looked in {PROJECT_ROOT})")
    return yaml.safe_load(path.read_text(encoding="utf-8"))
