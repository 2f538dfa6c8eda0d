"""Evaluate a model with constrained beam search and log beams, metrics and SID-level tables to MLflow.

    python -m minirec.evaluate --model REF --category Industrial_and_Scientific [--split test] [--limit 200]
    accelerate launch --num_processes 8 -m minirec.evaluate --model REF --category Industrial_and_Scientific
    mlflow run . -e evaluate -P model=REF -P category=Industrial_and_Scientific --env-manager local

REF is a local Hugging Face folder, a hub id, an MLflow run id, or a ``runs:/`` / ``models:/`` URI. The run is
tagged stage=<--stage> (default: the stage of the run that produced the model, sft or grpo, else
``evaluate``), source=REF, entry_point=evaluate, scored=true. Re-running with the same --out (or --resume
RUN_ID) continues an interrupted evaluation. With --strict true (the default) the run fails when any beam is
not a catalogue SID (``invalid_all`` > 0, upstream's CC).
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from minirec.data import CATEGORIES, Catalogue, locate
from minirec.data.layout import PROJECT_ROOT
from minirec.tracking import configure_environment, log_data_files, log_params, start_run

MODEL_STAGES = ("sft", "grpo")


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m minirec.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--model", required=True, help="model reference: folder, hub id, run id, runs:/ or models:/ URI")
    add("--category", required=True, choices=CATEGORIES, help="category whose split and SIDs are used")
    add("--split", default="test", choices=("valid", "test"), help="rows to evaluate (default test)")
    add("--num-beams", "--num_beams", type=int, default=50, help="beams = ranked SIDs per user (default 50)")
    add("--batch-size", "--batch_size", type=int, default=16, help="prompts per generate call (default 16)")
    add("--limit", type=int, default=0, help="evaluate only the first N rows (default 0: all)")
    add("--data-dir", "--data_dir", default=None, help="upstream-layout data directory (default: bundled)")
    add("--prompt", default="test", choices=("test", "sft"), help="prompt wording: upstream test (default) or SFT")
    add("--strict", type=_bool, default=True, help="fail the run if any beam is not a catalogue SID (default true)")
    add("--out", default=None, help="output folder; re-using it resumes (default: outputs/evaluate/<...>)")
    add("--stage", default=None, help="stage tag of the run (default: the model's stage, else 'evaluate')")
    add("--resume", default=None, help="MLflow run id of an interrupted evaluation to continue")
    add("--seed", type=int, default=0, help="seed for transformers and the bootstrap (default 0)")
    add("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
        help="weights dtype (default auto: bfloat16 on GPU as upstream, float32 on CPU)")
    args = parser.parse_args(argv)
    for name in ("data_dir", "out", "stage", "resume"):  # MLproject passes '' for "not given"
        setattr(args, name, getattr(args, name) or None)
    return args


def default_out(args) -> Path:
    model = re.sub(r"[^A-Za-z0-9._-]+", "_", str(args.model)).strip("_")[-80:]
    limit = f"-limit{args.limit}" if args.limit else ""
    return PROJECT_ROOT / "outputs" / "evaluate" / args.category / f"{model}-{args.split}-b{args.num_beams}-{args.prompt}{limit}"


def model_stage(ref: str) -> str:
    """``sft`` or ``grpo`` when the model came from such a run, else ``evaluate``."""
    import mlflow

    from minirec.models import source_run_id

    run_id = source_run_id(ref)
    if run_id is None:
        return "evaluate"
    stage = mlflow.get_run(run_id).data.tags.get("stage")
    return stage if stage in MODEL_STAGES else "evaluate"


def _resume_out(run_id: str) -> Path:
    import mlflow

    out = mlflow.get_run(run_id).data.params.get("out_dir")
    if not out:
        raise SystemExit(f"run {run_id} has no out_dir parameter; it is not an evaluate run")
    os.environ["MLFLOW_RUN_ID"] = run_id  # start_run then continues that run
    return Path(out)


def main(argv=None) -> None:
    args = parse_args(argv)
    configure_environment()
    from accelerate import PartialState

    from minirec.distributed import leave_process_group

    state = PartialState()
    out = _resume_out(args.resume) if args.resume else Path(args.out) if args.out else default_out(args)
    if state.is_main_process:
        with start_run(category=args.category, stage=args.stage or model_stage(args.model), source=str(args.model),
                       entry_point="evaluate", run_name=f"evaluate-{args.split}") as run:
            scores = run_evaluation(args, out, state)
        print(scores.summary())
        print(f"MLflow run {run.info.run_id}; outputs in {out}")
    else:
        run_evaluation(args, out, state)
    leave_process_group()


def run_evaluation(args, out: Path, state):
    """Load, decode, score and (on the main process) log; returns the scores (``None`` elsewhere)."""
    import torch

    from minirec.evaluate import evaluate_model
    from minirec.models import add_sid_tokens, load_model_and_tokenizer

    files = locate(args.category, args.data_dir)
    catalogue = Catalogue.load(files)
    device = state.device if torch.cuda.is_available() else torch.device("cpu")
    dtype = {"auto": torch.bfloat16 if device.type == "cuda" else torch.float32, "float32": torch.float32,
             "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    model, tokenizer = load_model_and_tokenizer(args.model, dtype=dtype, device=device)
    added = add_sid_tokens(tokenizer, model, catalogue)
    if state.is_main_process:
        _log_setup(args, out, files, model, tokenizer, catalogue, added, dtype)
    beams, scores = evaluate_model(model, tokenizer, files, catalogue, split=args.split, num_beams=args.num_beams,
                                   batch_size=args.batch_size, limit=args.limit or None, out_dir=out,
                                   prompt=args.prompt, seed=args.seed)
    if state.is_main_process:
        _log_results(out, scores)
        if args.strict and scores.invalid_all:
            raise SystemExit(f"{scores.invalid_all} predicted SIDs are not in the catalogue (strict mode)")
    return scores


def _log_setup(args, out, files, model, tokenizer, catalogue, added, dtype) -> None:
    import mlflow

    from minirec.constraint import SidConstraint
    from minirec.generation import beam_generation_config, effective_generation_config

    log_data_files(files, roles=(args.split, "index", "info"))
    constraint = SidConstraint.from_catalogue(catalogue, tokenizer)
    config = beam_generation_config(args.num_beams, constraint.max_new_tokens, tokenizer.eos_token_id,
                                    tokenizer.eos_token_id)
    effective = effective_generation_config(model, config)
    mlflow.log_dict(effective.to_dict(), "generation_config.json")
    log_params({
        "model": args.model, "split": args.split, "num_beams": args.num_beams, "batch_size": args.batch_size,
        "limit": args.limit, "prompt": args.prompt, "strict": args.strict, "seed": args.seed, "dtype": str(dtype),
        "out_dir": str(out), "tokenizer_length": len(tokenizer), "sid_tokens_added": added,
        "constraint_sids": constraint.num_sids, "max_new_tokens": constraint.max_new_tokens,
        **{f"generation.{key}": value for key, value in effective.to_diff_dict().items()
           if key not in ("transformers_version",)},
    })


def _log_results(out: Path, scores) -> None:
    import mlflow

    from minirec.score import log_scores

    mlflow.log_artifact(str(out / "beams.parquet"), "beams")
    mlflow.log_artifact(str(out / "predictions.json"), "beams")
    log_scores(scores, out / "scores")


if __name__ == "__main__":
    main()
