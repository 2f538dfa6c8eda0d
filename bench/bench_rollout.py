"""GRPO roll-out seconds per step: the SID decoder against ``generate`` (the roll-out path before it), same prompts.

    .venv/bin/python bench/bench_rollout.py [--steps 8 --prompts 16 --rounds 3] [--record]

The tiny preset's roll-out shape (``configs/grpo/tiny.yaml``: 16 prompts x 16 beams per step), the tiny
Industrial model trained briefly as in ``tests/test_sid_decoder.py`` (an untrained one ties everywhere), the first
train prompts of the GRPO mixture in steps of ``--prompts``. Each round rolls out every step with both decoders,
their order alternating, so load from other processes hits them alike; the table gives the median round's CPU
seconds per step and the ratio, and checks the two return the same completions. ``--record`` appends the figures
to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

RESULTS = Path(__file__).with_name("RESULTS.md")
G = 16


def trained_model():
    """The trained tiny model of tests/test_sid_decoder.py (60 AdamW steps), built here the same way."""
    import tempfile

    from minirec.data import locate
    from minirec.tiny_model import build_tiny_model

    folder = Path(tempfile.mkdtemp(prefix="bench-rollout-")) / "tiny"
    build_tiny_model("Industrial_and_Scientific", folder, seed=0)
    from test_sid_decoder import build_trained

    return build_trained(folder, locate("Industrial_and_Scientific"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=16, help="prompts per step (the tiny preset's 16)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from minirec.grpo.data import build_prompt_set
    from minirec.grpo.rollout import beam_rollout
    from minirec.data import locate

    trained = trained_model()
    model, tokenizer, constraint = trained.model, trained.tokenizer, trained.constraints[3]
    texts = list(build_prompt_set(locate("Industrial_and_Scientific"), tasks=("sid_history",),
                                  max_train_prompts=args.steps * args.prompts).train["prompt"])
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    steps = [[ids[s * args.prompts + p] for p in range(args.prompts) for _ in range(G)] for s in range(args.steps)]
    common = dict(num_generations=G, constraint=constraint, max_new_tokens=8, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    seconds = {"hf": [], "sid": []}
    same = True
    for round_index in range(args.rounds):
        order = ("hf", "sid") if round_index % 2 == 0 else ("sid", "hf")
        totals = {}
        outputs = {}
        for decoder in order:
            start = time.process_time()
            outputs[decoder] = [beam_rollout(model, rows, decoder=decoder, **common).completion_ids for rows in steps]
            totals[decoder] = (time.process_time() - start) / args.steps
        same &= outputs["hf"] == outputs["sid"]
        for decoder in totals:
            seconds[decoder].append(totals[decoder])
    hf, sid = (statistics.median(seconds[d]) for d in ("hf", "sid"))
    ratios = sorted(h / s for h, s in zip(seconds["hf"], seconds["sid"]))
    lines = [
        f"GRPO roll-out, tiny model (trained 60 steps), {args.prompts} prompts x {G} beams per step, {args.steps} steps, "
        f"{args.rounds} interleaved rounds, {args.threads} torch thread(s); CPU seconds per step, median round:",
        f"  generate (hf)      {hf:.3f} s/step",
        f"  sid decoder        {sid:.3f} s/step",
        f"  ratio {hf / sid:.2f}x (per round {ratios[0]:.2f}-{ratios[-1]:.2f}x); identical completions: {same}",
    ]
    print("\n".join(lines))
    if args.record:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        command = "python bench/bench_rollout.py " + " ".join(argv if argv is not None else sys.argv[1:])
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        with open(RESULTS, "a", encoding="utf-8") as handle:
            handle.write(f"\n## GRPO roll-out seconds per step ({stamp})\n\n`{command.strip()}` at {commit}\n\n```\n"
                         + "\n".join(lines) + "\n```\n")


if __name__ == "__main__":
    main()
