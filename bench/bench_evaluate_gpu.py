"""Evaluation throughput on one GPU: a Qwen2.5-1.5B-shaped model, bf16, the full Industrial test set, 50 beams.

    .venv/bin/python bench/bench_evaluate_gpu.py [--batch-size 16 --num-beams 50 --limit 0] [--record]
    .venv/bin/python bench/bench_evaluate_gpu.py --shape tiny --limit 32     # smoke test of this script on CPU

Runs the real evaluation path (:func:`minirec.evaluate.evaluate_model`: constrained beam search, shards,
scoring) with random weights built from a config (no download), so the figures are about speed only. It
reports users/s, the total time, and the ratio to a compute limit: the FLOPs of prefill and decode divided by
a bf16 matmul rate measured on the same GPU in the same run. Two FLOP counts are given: what beam search
executes (transformers copies each prompt ``num_beams`` times before the prefill, padding included) and the
minimum (one prefill per prompt, no padding); the second bounds how much a shared-prefix prefill could gain.

Prompt tokens come from the tiny model's tokenizer (the SID tokens and prompt templates as every stage
uses them); Qwen2.5's own tokenizer gives somewhat longer prompts, so the prompt lengths are printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from minirec.constraint import SidConstraint
from minirec.data import Catalogue, locate, read_split
from minirec.evaluate import DecodeSettings, encode_prompts, evaluate_model, split_prompts
from minirec.models import add_sid_tokens, load_tokenizer
from minirec.tiny_model import build_tiny_model

CATEGORY = "Industrial_and_Scientific"
RESULTS = Path(__file__).with_name("RESULTS.md")
SHAPES = {
    # Qwen2.5-1.5B's config.json (hidden 1536, 28 layers, 12 query / 2 key-value heads, tied embeddings).
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=True),
    "tiny": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=0, max_position_embeddings=2048, tie_word_embeddings=True),
}


def matmul_rate(device, dtype, size: int = 8192, repeats: int = 20) -> float:
    """Measured dense matmul FLOP/s for ``dtype`` on ``device``."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def forward_flops(config, tokens: int, context: int, logits_rows: int) -> float:
    """Matmul FLOPs of one forward over ``tokens`` new tokens attending to ``context`` tokens on average."""
    head_dim = config.hidden_size // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    per_layer = config.hidden_size * (2 * config.hidden_size + 2 * kv) + 3 * config.hidden_size * config.intermediate_size
    dense = 2 * tokens * config.num_hidden_layers * per_layer
    attention = 4 * tokens * context * config.num_hidden_layers * config.hidden_size
    return dense + attention + 2 * logits_rows * config.hidden_size * config.vocab_size


def evaluation_flops(config, lengths: list[int], batch_size: int, num_beams: int, steps: int) -> tuple[float, float]:
    """(executed, minimum) FLOPs of decoding prompts of ``lengths``: one prefill, then ``steps - 1`` decodes."""
    executed = minimum = 0.0
    for start in range(0, len(lengths), batch_size):
        batch = lengths[start:start + batch_size]
        rows, padded = len(batch) * num_beams, max(batch)
        executed += forward_flops(config, rows * padded, padded / 2, rows)
        minimum += sum(forward_flops(config, length, length / 2, 1) for length in batch)
        for step in range(1, steps):
            decode = forward_flops(config, rows, padded + step, rows)
            executed += decode
            minimum += sum(forward_flops(config, num_beams, length + step, num_beams) for length in batch)
    return executed, minimum


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="qwen2.5-1.5b", choices=SHAPES)
    parser.add_argument("--batch-size", "--batch_size", type=int, default=16)
    parser.add_argument("--num-beams", "--num_beams", type=int, default=50)
    parser.add_argument("--limit", type=int, default=0, help="first N test rows (default 0: all 4,533)")
    parser.add_argument("--record", action="store_true", help="append the result to bench/RESULTS.md")
    args = parser.parse_args(argv)

    from transformers import Qwen2Config, Qwen2ForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    files = locate(CATEGORY)
    catalogue = Catalogue.load(files)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = load_tokenizer(build_tiny_model(CATEGORY, Path(folder) / "tiny"))
        shape = SHAPES[args.shape] | {"vocab_size": max(SHAPES[args.shape]["vocab_size"], len(tokenizer))}
        config = Qwen2Config(**shape, bos_token_id=tokenizer.eos_token_id,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
        torch.manual_seed(0)
        with torch.device(device):
            model = Qwen2ForCausalLM(config).to(dtype).eval()
        add_sid_tokens(tokenizer, model, catalogue)  # no-op: the tiny tokenizer has them; ids fit the vocabulary
        rows = read_split(files.test)
        rows = rows.head(args.limit) if args.limit else rows
        lengths = [len(ids) for ids in encode_prompts(tokenizer, split_prompts(rows))]
        steps = SidConstraint.from_catalogue(catalogue, tokenizer).max_new_tokens

        rate = matmul_rate(device, dtype, size=8192 if device == "cuda" else 1024)
        _sync(device)
        start = time.perf_counter()
        decode = DecodeSettings(num_beams=args.num_beams, batch_size=args.batch_size, limit=args.limit)
        scores = evaluate_model(model, tokenizer, files, catalogue, decode, split="test",
                                out_dir=Path(folder) / "eval").scores
        _sync(device)
        elapsed = time.perf_counter() - start

    executed, minimum = evaluation_flops(model.config, lengths, args.batch_size, args.num_beams, steps)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    lines = [
        f"{args.shape}, {dtype}, {name}: {len(rows)} test users x {args.num_beams} beams, batch {args.batch_size}, "
        f"prompt tokens mean {sum(lengths) / len(lengths):.0f} (max {max(lengths)}), {steps} new tokens",
        f"  total {elapsed:.1f} s = {len(rows) / elapsed:.1f} users/s (scoring included); invalid_all "
        f"{scores.invalid_all}",
        f"  measured {str(dtype).split('.')[-1]} matmul rate {rate / 1e12:.1f} TFLOP/s",
        f"  executed FLOPs {executed:.3e}: compute limit {executed / rate:.1f} s, {executed / rate / elapsed:.1%} of it "
        "reached",
        f"  minimum FLOPs {minimum:.3e} (one prefill per prompt): limit {minimum / rate:.1f} s, "
        f"{minimum / rate / elapsed:.1%} of it reached",
    ]
    print("\n".join(lines))
    if args.record:
        command = "python bench/bench_evaluate_gpu.py " + " ".join(argv if argv is not None else sys.argv[1:])
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        with open(RESULTS, "a", encoding="utf-8") as handle:
            handle.write(f"\n## Evaluation throughput ({stamp})\n\n`{command.strip()}`\n\n```\n"
                         + "\n".join(lines) + "\n```\n")


if __name__ == "__main__":
    main()
