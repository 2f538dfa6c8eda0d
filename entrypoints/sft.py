"""CLI of the SFT stage: fine-tune a base model on upstream's five SFT tasks, tracked in one MLflow run.

    python -m minirec.sft --preset tiny --category Industrial_and_Scientific
    python -m minirec.sft --preset paper --base_model Qwen/Qwen2.5-1.5B-Instruct --num_gpus 8
    python -m minirec.sft --preset tiny --device cpu --num_processes 2
    python -m minirec.sft --preset tiny --resume_from <run id or checkpoint folder>
    mlflow run . -e sft -P preset=tiny -P category=Industrial_and_Scientific --env-manager local

Reference: reference-spec section 4. Every setting of ``minirec.sft.config.SFTConfig`` is an option (hyphens
or underscores); preset values (``configs/sft/<preset>.yaml``) apply first, options override them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from pathlib import Path

import yaml

from minirec.data.layout import PROJECT_ROOT
from minirec.sft.config import FIELDS, SFTConfig, load_config, preset_path

ALIASES = {"num_processes": ("--num_gpus", "--num-gpus")}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minirec.sft",
        description="Supervised fine-tuning on MiniOneRec's five SFT tasks (reference-spec 4), logged to MLflow.",
        epilog="Booleans take true/false; lists (tasks) are comma-separated; an empty value keeps the preset's.",
    )
    parser.add_argument("--preset", default="tiny", help="preset name in configs/sft (tiny, paper) or a YAML path")
    for name, spec in FIELDS.items():
        flags = dict.fromkeys([f"--{name}", f"--{name.replace('_', '-')}", *ALIASES.get(name, ())])
        default = ",".join(spec.default_factory()) if spec.default_factory is not dataclasses.MISSING else spec.default
        parser.add_argument(*flags, dest=name, default=None, metavar=name.upper(),
                            help=f"{spec.metadata['help']} (built-in default: {default!r})")
    return parser


def resolve_output_dir(config: SFTConfig) -> str:
    """``outputs/sft/<Category>/<UTC time>`` unless given; fixed before any re-launch so ranks agree."""
    if config.output_dir:
        return str(Path(config.output_dir).resolve())
    return str(PROJECT_ROOT / "outputs" / "sft" / config.category / time.strftime("%Y%m%d-%H%M%S", time.gmtime()))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    # An empty value means "the preset's": MLproject parameters default to "" so presets stay in charge.
    overrides = {name: value for name in FIELDS if (value := getattr(args, name)) not in (None, "")}
    config = load_config(args.preset, overrides)
    config.output_dir = resolve_output_dir(config)

    from minirec.distributed import leave_process_group
    from minirec.sft import launch, train
    from minirec.tracking import configure_environment

    configure_environment()
    if config.num_processes > 1 and not launch.inside_launch():
        train.prepare_base_model(config)  # build the tiny model once, before the ranks look for it
        code = launch.relaunch(config.num_processes, train.resolve_device(config),
                               [*argv, "--output_dir", config.output_dir])
        if code:
            sys.exit(code)
        return
    run_sft(config, args.preset)
    leave_process_group()


def run_sft(config: SFTConfig, preset: str) -> None:
    """Train, evaluate and log one SFT run (every process trains; the main process logs)."""
    from minirec.data import Catalogue, locate
    from minirec.sft import resume
    from minirec.tracking import is_main_process

    files = locate(config.category, config.data_dir or None)
    catalogue = Catalogue.load(files)
    checkpoint, previous_run = resume.resolve_resume(config.resume_from) if config.resume_from else (None, None)
    tracking = _tracked_run(config, preset, files, previous_run) if is_main_process() else contextlib.nullcontext()
    with tracking:
        _train_evaluate_log(config, files, catalogue, checkpoint)


@contextlib.contextmanager
def _tracked_run(config: SFTConfig, preset: str, files, previous_run: str | None):
    import mlflow

    from minirec.sft import resume
    from minirec.tracking import log_data_files, log_params, start_run

    tags = {"preset": preset, **({"resumed_from": previous_run} if previous_run else {})}
    mlflow.enable_system_metrics_logging()
    try:
        with start_run(category=config.category, stage="sft", source=config.base_model, entry_point="sft",
                       tags=tags, parent_run_id=previous_run) as run:
            Path(config.output_dir).mkdir(parents=True, exist_ok=True)
            resume.record_run(config.output_dir, run.info.run_id)
            log_params({**config.as_params(), "preset": preset})
            preset_file = preset_path(preset)
            mlflow.log_text(preset_file.read_text(encoding="utf-8"), f"config/{preset_file.name}")
            mlflow.log_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False), "config/resolved.yaml")
            log_data_files(files)
            yield run
    finally:
        mlflow.disable_system_metrics_logging()  # a process-wide switch: later runs of this process stay unaffected


def _train_evaluate_log(config: SFTConfig, files, catalogue, checkpoint) -> None:
    from minirec.sft.train import prepare_model, resolve_device, train_sft
    from minirec.sft.validation import evaluate_on_valid
    from minirec.tracking import is_main_process, log_params

    prepared = prepare_model(config, catalogue, resolve_device(config))
    main = is_main_process()
    if main:
        log_params({**prepared.facts(), "gradient_accumulation_steps": config.gradient_accumulation_steps()})
    if config.evaluate_untrained:
        evaluate_on_valid(prepared.model, prepared.tokenizer, files, catalogue, config,
                          Path(config.output_dir) / "untrained_valid_eval", prefix="untrained_valid")
    result = train_sft(config, files, catalogue, resume_checkpoint=str(checkpoint) if checkpoint else None,
                       prepared=prepared)
    if main:
        import mlflow

        log_params({f"samples.{task}": count for task, count in result.datasets.task_counts.items()}
                   | {"world_size": result.trainer.args.world_size})
        mlflow.log_metrics(result.summary)
    metrics = evaluate_on_valid(result.trainer.model, prepared.tokenizer, files, catalogue, config,
                                Path(config.output_dir) / "valid_eval", prefix="valid")
    if main and config.log_model:
        from minirec.models import log_hf_model

        log_hf_model(result.trainer.model, prepared.tokenizer, tags={"stage": "sft", "category": config.category})
    if main:
        _print_summary(result.summary, metrics)


def _print_summary(summary: dict, metrics: dict) -> None:
    lines = [f"{name}: {value:.4f}" for name, value in summary.items()]
    lines += [f"{name}: {metrics[name]:.4f}" for name in ("valid_HR_at_10", "valid_NDCG_at_10") if name in metrics]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
