"""Rank, score and log the non-learned baselines (one MLflow run per category and method).

    python -m minirec.baselines --category Industrial_and_Scientific --method all [--split test] [--data-dir DIR]
    mlflow run . -e baselines -P category=all --env-manager local

Each run is tagged ``stage=<method>`` and ``scored=true``, so ``compare`` lists it beside the model stages.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import mlflow

from minirec import baselines
from minirec.data import CATEGORIES, Catalogue, locate, read_split

from minirec.tracking import adopt_outer_run_as_parent, configure_environment, log_data_files, log_params, start_run


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m minirec.baselines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--category", default="all", help="a category, or 'all' (default)")
    parser.add_argument("--method", default="all", help="popularity, transition, or 'all' (default)")
    parser.add_argument("--split", default="test", choices=("valid", "test"), help="rows to rank (default test)")
    parser.add_argument("--num-beams", "--num_beams", type=int, default=50, help="ranking length (default 50)")
    parser.add_argument("--data-dir", "--data_dir", default=None, help="upstream-layout data directory")
    parser.add_argument("--out", default=None, help="folder for outputs (default: a temporary folder)")
    return parser.parse_args(argv)


def _expand(value: str, choices: tuple[str, ...], what: str) -> list[str]:
    if value == "all":
        return list(choices)
    if value not in choices:
        raise SystemExit(f"unknown {what} {value!r}; expected one of {', '.join(choices)} or 'all'")
    return [value]


def run_baseline(category: str, method: str, split: str, num_beams: int, data_dir, out: Path) -> str:
    """Rank, write, score and log one baseline; returns the MLflow run id."""
    from minirec.beams import write_beams
    from minirec.score import log_scores, score_predictions

    files = locate(category, data_dir)
    catalogue = Catalogue.load(files)
    train, rows = read_split(files.train), read_split(files.split(split))
    with start_run(category=category, stage=method, source=str(files.train), entry_point="baselines",
                   run_name=f"{method}-{split}") as run:
        log_data_files(files, roles=("train", split, "index", "info"))
        log_params({"method": method, "split": split, "num_beams": num_beams})
        beams = baselines.rank(method, train, rows, catalogue, k=num_beams)
        beams_path = write_beams(out / "beams.parquet", beams)
        mlflow.log_artifact(str(beams_path), "beams")
        scores = score_predictions(beams, catalogue)
        log_scores(scores, out / "scores")
        print(f"{category} {method}: HR@10={scores.metrics['HR@10']:.4f} NDCG@10={scores.metrics['NDCG@10']:.4f}")
        return run.info.run_id


def main(argv=None) -> list[str]:
    args = parse_args(argv)
    configure_environment()
    categories = _expand(args.category, CATEGORIES, "category")
    methods = _expand(args.method, baselines.METHODS, "method")
    if len(categories) * len(methods) > 1:
        adopt_outer_run_as_parent()
    run_ids = []
    for category in categories:
        for method in methods:
            with tempfile.TemporaryDirectory() as scratch:
                out = Path(args.out) / category / method if args.out else Path(scratch)
                run_ids.append(run_baseline(category, method, args.split, args.num_beams, args.data_dir, out))
    return run_ids


if __name__ == "__main__":
    main()
