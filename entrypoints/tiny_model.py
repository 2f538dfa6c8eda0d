"""Build the tiny CPU stand-in model (random weights, category tokenizer, SID tokens added).

    python -m minirec.models tiny --category Industrial_and_Scientific --out models/tiny-industrial [--seed 0]
    mlflow run . -e tiny_model -P category=Industrial_and_Scientific -P out=models/tiny-industrial --env-manager local

It is a pipeline-scale stand-in, not a pretrained LLM: it lets SFT, GRPO and evaluation run end to end on CPU.
Nothing is logged to MLflow: the folder is an input for ``sft --model``.
"""

from __future__ import annotations

import argparse

from minirec.data import CATEGORIES
from minirec.models import build_tiny_model


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m minirec.models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    tiny = commands.add_parser("tiny", help="build the tiny Qwen2 model for a category")
    tiny.add_argument("--category", required=True, choices=CATEGORIES, help="category whose texts train the tokenizer")
    tiny.add_argument("--out", required=True, help="output folder (replaced atomically)")
    tiny.add_argument("--seed", type=int, default=0, help="weight-initialisation seed (default 0)")
    tiny.add_argument("--data-dir", "--data_dir", default=None, help="upstream-layout data directory")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    path = build_tiny_model(args.category, args.out, data_dir=args.data_dir or None, seed=args.seed)
    print(f"tiny model for {args.category} (seed {args.seed}) written to {path}")


if __name__ == "__main__":
    main()
