"""Score a beam-output file and log it as one MLflow run (reference-spec 6.4, 6.6).

    python -m minirec.score --predictions results/test.json --category Industrial_and_Scientific
    python -m minirec.score --predictions beams.parquet --category Office_Products --stage sft --out scores/
    mlflow run . -e score -P predictions=results/test.json -P category=Industrial_and_Scientific --env-manager local

The predictions file is upstream's result JSON (a list of {"input", "output", "predict"}) or the harness Parquet
(minirec.beams). The numbers equal upstream calc.py's; the run adds 95% user-bootstrap CIs, collision-aware
HR_coll@K, invalid_all, and the per-SID-level tables. The run is tagged category, stage, source (the file),
entry_point=score and scored=true; metrics.json, levels.json and the predictions file are its artifacts.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from minirec.beams import BeamFormatError, read_predictions
from minirec.data import Catalogue, DataLayoutError, locate, sha256_of
from minirec.metrics import DEFAULT_KS
from minirec.score import log_scores, score_predictions
from minirec.tracking import configure_environment, log_data_files, log_params, start_run


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m minirec.score", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--predictions", required=True, metavar="FILE",
                        help="upstream result JSON or harness beams Parquet")
    parser.add_argument("--category", required=True, metavar="CAT",
                        help="category whose info file defines the valid SIDs")
    parser.add_argument("--stage", default="score",
                        help="what the predictions come from, e.g. sft, grpo (the run's stage tag; default score)")
    parser.add_argument("--data-dir", "--data_dir", default=None, metavar="DIR",
                        help="upstream-layout data directory (default: $MINIREC_DATA_DIR or the bundled data)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="folder for metrics.json and levels.json (default: a temporary folder)")
    parser.add_argument("--n-boot", "--n_boot", type=int, default=1000, help="bootstrap draws (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--run-name", "--run_name", default=None, help="MLflow run name (default: <stage>-score)")
    return parser.parse_args(argv)


def main(argv=None) -> str:
    """Score, print the summary and return the MLflow run id; bad input exits with status 2 and the reason."""
    args = parse_args(argv)
    predictions = Path(args.predictions)
    try:
        files = locate(args.category, args.data_dir or None)  # MLproject passes '' for unset
        frame = read_predictions(predictions)
        catalogue = Catalogue.load(files)
        scores = score_predictions(frame, catalogue, DEFAULT_KS, args.n_boot, args.seed, source=str(predictions))
    except (BeamFormatError, DataLayoutError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from error

    configure_environment()
    import mlflow

    with tempfile.TemporaryDirectory() as scratch, start_run(
        category=args.category, stage=args.stage, source=str(predictions.resolve()), entry_point="score",
        run_name=args.run_name or f"{args.stage}-score",
    ) as run:
        log_data_files(files, roles=("index", "items", "info"))
        log_params({
            "predictions": str(predictions.resolve()),
            "predictions_sha256": sha256_of(predictions),
            "n_boot": args.n_boot,
            "seed": args.seed,
        })
        mlflow.log_artifact(str(predictions), "predictions")
        log_scores(scores, Path(args.out) if args.out else Path(scratch))
        print(scores.summary())
        print(f"MLflow run {run.info.run_id}")
        return run.info.run_id


if __name__ == "__main__":
    main()
