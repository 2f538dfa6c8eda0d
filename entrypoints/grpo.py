"""GRPO with constrained beam roll-outs and ranking rewards, on trl's GRPOTrainer (reference-spec 5).

    python -m minirec.grpo --preset tiny --category Industrial_and_Scientific          # CPU, latest tiny SFT run
    python -m minirec.grpo --preset paper --model <SFT run id> --num_gpus 4             # 4 GPUs, ZeRO-2
    python -m minirec.grpo --resume_from <GRPO run id> --num_train_epochs 3             # extend a finished run
    mlflow run . -e grpo -P preset=tiny -P category=Industrial_and_Scientific --env-manager local

Settings resolve as: the preset file (configs/grpo/<preset>.yaml), then, when resuming from a run id, that
run's settings, then every option given here. Each option is accepted with hyphens or underscores.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys

from minirec.data.layout import PROJECT_ROOT, DataLayoutError
from minirec.grpo.config import FIELDS, ConfigError, GRPOSettings, load_settings
from minirec.grpo.data import GrpoDataError
from minirec.tracking import configure_environment

# Options given with this value count as not given (MLproject parameters default to it).
UNSET = ""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m minirec.grpo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", help="preset in configs/grpo (tiny, paper) or a YAML path "
                        "(default: tiny; when resuming from a run id: that run's preset)")
    for name, spec in FIELDS.items():
        if name == "preset":
            continue
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        default = spec.default
        help_text = f"{spec.metadata['help']} (default: {default!r}, or the preset's value)"
        parser.add_argument(*flags, dest=name, default=None, metavar=type(default).__name__.upper(), help=help_text)
    return parser.parse_args(argv)


def overrides_of(args: argparse.Namespace) -> dict[str, str]:
    """The options actually given (``preset`` aside, which selects the base)."""
    return {name: value for name, value in vars(args).items()
            if name != "preset" and value is not None and value != UNSET}


def resolve_settings(args: argparse.Namespace) -> GRPOSettings:
    """Preset, then the resumed run's settings (resuming from a run id), then the command line."""
    from minirec.grpo.run import is_run_id, previous_run_params

    overrides = overrides_of(args)
    resume = overrides.get("resume_from", "")
    base = previous_run_params(resume) if is_run_id(resume) else {}
    preset = base.get("preset") or args.preset
    return load_settings(preset, {**base, **overrides})


def relaunch(argv: list[str], num_gpus: int) -> int:
    """Start ``num_gpus`` processes of this command with torchrun (each sees RANK and WORLD_SIZE)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={num_gpus}",
               "-m", "minirec.grpo", *argv]
    print("launching:", " ".join(command), flush=True)
    return subprocess.run(command, check=False, cwd=PROJECT_ROOT).returncode


def main(argv=None) -> str | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    configure_environment()
    from minirec.distributed import leave_process_group
    from minirec.grpo.run import PolicyNotFoundError, train_grpo

    try:
        settings = resolve_settings(args)
        if settings.num_gpus > 1 and "WORLD_SIZE" not in os.environ:
            code = relaunch(argv, settings.num_gpus)
            if code:
                raise SystemExit(code)
            return None
        print("GRPO settings:", dataclasses.asdict(settings), flush=True)
        run_id = train_grpo(settings)
        leave_process_group()
    except (ConfigError, PolicyNotFoundError, GrpoDataError, DataLayoutError) as error:
        raise SystemExit(f"grpo: {error}") from None
    if run_id:
        print(f"GRPO run {run_id} finished; evaluate it with: python -m minirec.evaluate --model {run_id} "
              f"--category {settings.category}")
    return run_id


if __name__ == "__main__":
    main()
