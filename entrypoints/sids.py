"""CLI of the ``sids`` stage: embed item texts, quantise them into SIDs, write a new data directory, report.

    python -m minirec.sids --category Industrial_and_Scientific --method rqkmeans
    python -m minirec.sids --category Office_Products --method rqkmeans_constrained --seed 42
    python -m minirec.sids --category Industrial_and_Scientific --method rqvae --epochs 200
    mlflow run . -e sids -P category=Office_Products -P method=rqvae --env-manager local

Reference-spec 3 (upstream ``rq/``). The new directory (``--out``, default ``outputs/sids/<run id>``)
is also logged as the run's ``data/`` artifacts; later stages take it as ``--data-dir <dir or this run id>``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

from minirec.data import Catalogue, locate, read_split, sha256_of
from minirec.data.layout import PROJECT_ROOT
from minirec.sids.embed import DEFAULT_MODEL, EmbeddingRecipe, cached_embeddings, pick_device
from minirec.sids.quantise import METHODS, quantise
from minirec.sids.report import plot_code_usage, write_report
from minirec.sids.resolve import resolve_data_dir
from minirec.sids.stats import flat_metrics, level_counts, sid_statistics
from minirec.sids.text import item_texts
from minirec.sids.writer import write_data_dir
from minirec.tracking import configure_environment, log_data_files, start_run

UPSTREAM_SEEDS = {"rqkmeans": 42, "rqkmeans_constrained": 42, "rqvae": 2024}


def strict_bool(text: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no); anything else is an error, unlike upstream's ``type=bool``."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m minirec.sids",
        description="Embed item texts, quantise them into semantic IDs, and write a new data directory in the "
        "upstream layout with a report of what the SID scheme costs (collisions, unused codes).",
    )
    parser.add_argument("--category", required=True, help="category folder name, e.g. Industrial_and_Scientific")
    parser.add_argument("--method", default="rqkmeans", choices=METHODS, help="quantiser (reference-spec 3.2-3.4; default rqkmeans)")
    parser.add_argument("--embedding-model", "--embedding_model", default=DEFAULT_MODEL,
                        help=f"encoder: '{DEFAULT_MODEL}' (packaged, offline), a local folder, or a hub id such as "
                             "Qwen/Qwen3-Embedding-4B (set HF_HUB_OFFLINE=0 to download); default: the packaged one")
    parser.add_argument("--data-dir", "--data_dir", default="", help="input data directory or sids run id (default: bundled data)")
    parser.add_argument("--out", default="", help="new data directory, also holding the report (default: outputs/sids/<run id>)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random step (default 0; upstream: 42 k-means, 2024 rqvae)")
    parser.add_argument("--epochs", type=int, default=200, help="rqvae full-batch epochs (default 200; upstream 10000)")
    parser.add_argument("--eval-step", "--eval_step", type=int, default=50, help="rqvae epochs between collision checks (default 50)")
    parser.add_argument("--lr", type=float, default=1e-3, help="rqvae AdamW learning rate (default 1e-3)")
    parser.add_argument("--codebook-size", "--codebook_size", type=int, default=256, help="codes per level (default 256)")
    parser.add_argument("--levels", type=int, default=3, help="quantisation levels (default 3)")
    parser.add_argument("--upstream-quirks", "--upstream_quirks", type=strict_bool, default=False,
                        help="empty any text field of >= 2,000 characters, as upstream (spec 8.1 N); default false")
    parser.add_argument("--max-length", "--max_length", type=int, default=0,
                        help="encoder token limit; 0 = the model's own, at most 2048 (upstream)")
    parser.add_argument("--batch-size", "--batch_size", type=int, default=64, help="texts per encoder batch (default 64)")
    parser.add_argument("--device", default="auto", help="auto (default: cuda if available), cpu or cuda[:N]")
    parser.add_argument("--cache-dir", "--cache_dir", default=str(PROJECT_ROOT / ".cache" / "embeddings"),
                        help="embedding cache folder (default .cache/embeddings)")
    return parser.parse_args(argv)


def method_options(args: argparse.Namespace, device: str) -> dict:
    options = {"codebook_size": args.codebook_size, "levels": args.levels, "seed": args.seed}
    if args.method == "rqvae":
        options.update(epochs=args.epochs, lr=args.lr, eval_step=args.eval_step, device=device)
    return options


def target_items(files) -> dict[str, list[int]]:
    return {split: read_split(files.split(split), parse_histories=False)["item_id"].astype(int).tolist() for split in ("valid", "test")}


def validate_new_data(files) -> None:
    """Fail the run unless the new directory passes the project's data validation (logged as validation.json)."""
    import mlflow

    from minirec.data.validate import validate_category

    report = validate_category(files)
    mlflow.log_dict(report.to_json(), "validation.json")
    mlflow.log_metric("validation_ok", float(report.ok))
    if not report.ok:
        raise RuntimeError(f"the new data directory {files.root} failed validation:\n{report.message()}")


def log_new_params(params: dict) -> None:
    """Log params not already set (``mlflow run`` logs the entry point's own parameters first)."""
    import mlflow

    existing = mlflow.get_run(mlflow.active_run().info.run_id).data.params
    mlflow.log_params({k: v for k, v in params.items() if k not in existing})


def save_method_artifacts(result, folder: Path) -> list[Path]:
    import torch

    from minirec.atomic import atomic_path

    saved = []
    if "codebooks" in result.artifacts:
        with atomic_path(folder / "codebooks.npz") as tmp:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, **{f"codebook_{i}": c for i, c in enumerate(result.artifacts["codebooks"])})
        saved.append(folder / "codebooks.npz")
    if "checkpoint" in result.artifacts:
        with atomic_path(folder / "rqvae_best_collision.pt") as tmp:
            torch.save(result.artifacts["checkpoint"], tmp)
        saved.append(folder / "rqvae_best_collision.pt")
    return saved


def run_stage(args: argparse.Namespace) -> str:
    import mlflow

    started = time.perf_counter()
    files = locate(args.category, resolve_data_dir(args.data_dir))
    catalogue = Catalogue.load(files)
    device = pick_device(args.device)
    with start_run(category=args.category, stage="sids", source=args.embedding_model, entry_point="sids",
                   run_name=f"sids-{args.method}", tags={"method": args.method}) as run:
        # The data directory holds <Cat>/ plus this run's report, plot and quantiser files beside it.
        out_dir = Path(args.out) if args.out else PROJECT_ROOT / "outputs" / "sids" / run.info.run_id
        log_new_params({**{k: str(v) for k, v in vars(args).items()}, "device_resolved": device,
                        "upstream_seed": UPSTREAM_SEEDS[args.method], "out_dir_resolved": str(out_dir)})
        log_data_files(files)

        recipe = EmbeddingRecipe(args.embedding_model, args.upstream_quirks, args.max_length or None)
        texts = item_texts(catalogue.items, args.upstream_quirks)
        tick = time.perf_counter()
        embedded = cached_embeddings(texts, recipe, sha256_of(files.items), args.cache_dir, args.batch_size, device)
        mlflow.log_metrics({"embedding_seconds": time.perf_counter() - tick, "embedding_from_cache": float(embedded.from_cache)})
        log_new_params({"embedding_dim": embedded.vectors.shape[1], "embedding_key": embedded.key,
                        **{f"embedding_{k}": v for k, v in embedded.details.items()}})
        mlflow.log_artifact(str(embedded.path), "embeddings")
        mlflow.log_artifact(str(embedded.path.with_suffix(".json")), "embeddings")

        tick = time.perf_counter()
        result = quantise(args.method, embedded.vectors, **method_options(args, device))
        mlflow.log_metric("quantise_seconds", time.perf_counter() - tick)
        log_new_params({f"quantiser_{k}": v for k, v in result.params.items()})
        for entry in result.history:
            mlflow.log_metrics({f"rqvae_{k}": v for k, v in entry.items() if k != "epoch"}, step=entry["epoch"])

        new_tokens = dict(enumerate(result.tokens))
        new_files = write_data_dir(files, new_tokens, out_dir)
        validate_new_data(new_files)

        targets = target_items(files)
        new_stats = {**sid_statistics(new_tokens, targets, embedded.vectors), "recon_mse_native": result.recon_mse}
        official_stats = sid_statistics(catalogue.item_tokens, targets, embedded.vectors)
        mlflow.log_metrics({**flat_metrics(new_stats, "new"), **flat_metrics(official_stats, "official"), **result.metrics})
        mlflow.log_dict({"new": new_stats, "official": official_stats, "method_metrics": result.metrics,
                         "history": result.history}, "sid_stats.json")

        title = f"SIDs for {args.category}: {args.method} on {args.embedding_model}"
        settings = {"run": run.info.run_id, "method": args.method, "embedding model": args.embedding_model,
                    "embedding dim": embedded.vectors.shape[1], "seed": args.seed, "input data": files.root,
                    "new data": new_files.root, **{f"quantiser {k}": v for k, v in result.params.items()}}
        report = write_report(out_dir / "sid_report.md", title, settings, new_stats, official_stats)
        plot = plot_code_usage(out_dir / "code_usage.png", level_counts(new_tokens), level_counts(catalogue.item_tokens), title)
        for path in [report, plot, *save_method_artifacts(result, out_dir)]:
            mlflow.log_artifact(str(path))
        mlflow.log_artifacts(str(new_files.root), f"data/{args.category}")
        mlflow.log_metric("stage_seconds", time.perf_counter() - started)
        print(report.read_text())
        print(f"New data directory: {new_files.root.parent}  (use --data-dir {out_dir} or --data-dir {run.info.run_id})")
        return run.info.run_id


def main(argv=None) -> str:
    args = parse_args(argv)
    configure_environment()
    return run_stage(args)


if __name__ == "__main__":
    main()
