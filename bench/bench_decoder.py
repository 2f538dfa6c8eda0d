"""One-prefill SID beam search (:mod:`minirec.sid_decoder`) against ``generate_sid_beams``, and the exact top-k.

    .venv/bin/python bench/bench_decoder.py [--users 96 --batch-size 16 --beams 50,16 --rounds 3] [--record]
    python bench/bench_decoder.py --device cuda --shape qwen2.5-1.5b --users 0 --batch-sizes 8,16,32,64 --record

CPU (``--device cpu --shape tiny``, the default): the tiny Industrial model, trained for 60 AdamW steps as in
``tests/test_sid_decoder.py`` (``--untrained`` keeps the random one, whose near-uniform scores tie everywhere), the
first ``--users`` test prompts in batches of ``--batch-size``. For each beam width, both decoders decode every batch
in each round, interleaved (their order alternates), so load from other processes hits them alike; the table gives
users/s from the median round in process CPU seconds and in wall seconds, the per-round spread of the ratio, the
share of prompts whose ranked lists are identical (tokens and float32 scores), and the cost of
:func:`minirec.sid_decoder.exact_top_k` per user relative to the new decoder at the widest beam, with the beam recall.

GPU (``--device cuda``; ``--shape qwen2.5-1.5b`` builds Qwen2.5-1.5B's shape from a config with random bf16 weights,
vocabulary 151,665 + the SID tokens, as an SFT checkpoint has it): the whole test set (``--users 0``), sorted by
prompt length, for each batch size of ``--batch-sizes``: users/s, total time, peak memory, and the share of a compute
limit reached (the FLOPs of the prefill and decode forwards divided by a bf16 matmul rate measured in the same run);
generate on the first ``--generate-users`` prompts (same batches) for the speed ratio. Random weights give
near-uniform scores, so the identical-list share means little there. Prompt tokens come from the tiny model's
tokenizer, built locally as ``bench_evaluate_gpu.py`` does (nothing is downloaded); its shape table, matmul rate
and FLOP count are repeated here so this script does not depend on that one.

Needs torch, transformers and pandas (``minirec.constraint`` imports ``minirec.data``); no mlflow, trl or datasets.
``--record`` appends a dated section to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from minirec import prompts
from minirec.constraint import SidConstraint
from minirec.data import Catalogue, locate, read_split
from minirec.evaluate import encode_prompts, left_pad, split_prompts
from minirec.generation import beam_generation_config, generate_sid_beams
from minirec.models import load_model_and_tokenizer
from minirec.sid_decoder import beam_recall, exact_top_k, sid_beam_search
from minirec.tiny_model import build_tiny_model

CATEGORY = "Industrial_and_Scientific"
RESULTS = Path(__file__).with_name("RESULTS.md")
QWEN_TOKENIZER_LENGTH = 151665  # Qwen2.5's tokenizer before the SID tokens are added
# As bench_evaluate_gpu.py builds them: Qwen2.5-1.5B's config.json, and the tiny model's architecture.
SHAPES = {
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, max_position_embeddings=32768,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=True),
    "tiny": None,
}


def matmul_rate(device, dtype, size: int = 8192, repeats: int = 20) -> float:
    """Measured dense matmul FLOP/s for ``dtype`` on ``device`` (as in bench_evaluate_gpu.py)."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def forward_flops(config, tokens: int, context: float, logits_rows: int) -> float:
    """Matmul FLOPs of one forward over ``tokens`` new tokens attending to ``context`` tokens on average, with the
    vocabulary head on ``logits_rows`` rows (as in bench_evaluate_gpu.py): about 2 x parameters x tokens."""
    head_dim = config.hidden_size // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    hidden = config.hidden_size
    per_layer = hidden * (2 * hidden + 2 * kv) + 3 * hidden * config.intermediate_size
    dense = 2 * tokens * config.num_hidden_layers * per_layer
    attention = 4 * tokens * context * config.num_hidden_layers * config.hidden_size
    return dense + attention + 2 * logits_rows * config.hidden_size * config.vocab_size


def train_briefly(model, tokenizer, files, steps: int = 60, batch: int = 32, seed: int = 0) -> None:
    """Plain next-token loss on the SID, newline and EOS of test-style prompts of random train rows (AdamW 3e-3):
    the recipe of ``tests/test_sid_decoder.py`` (3-token targets here), ~10 s on a CPU core."""
    from minirec.sft.data import encode_prompts as encode_sft

    frame = read_split(files.train)
    rows = random.Random(seed).sample(range(len(frame)), steps * batch)
    samples = [prompts.test_prompt(frame["history_item_sid_list"].iat[row], frame["item_sid"].iat[row]) for row in rows]
    encoded = encode_sft(tokenizer, samples, cutoff_len=512)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        lines = range(step * batch, (step + 1) * batch)
        width = max(len(encoded["input_ids"][line]) for line in lines)
        ids = torch.full((batch, width), tokenizer.eos_token_id)
        labels = torch.full((batch, width), -100)
        mask = torch.zeros(batch, width, dtype=torch.long)
        for row, line in enumerate(lines):
            n = len(encoded["input_ids"][line])
            ids[row, :n] = torch.tensor(encoded["input_ids"][line])
            labels[row, :n] = torch.tensor(encoded["labels"][line])
            mask[row, :n] = 1
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
        targets = labels[:, 1:]
        supervised = targets != -100
        loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[supervised]), targets[supervised])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def build(args, folder: Path):
    """(model, tokenizer, description) for ``--shape`` on ``--device``."""
    files = locate(CATEGORY)
    model, tokenizer = load_model_and_tokenizer(build_tiny_model(CATEGORY, folder / "tiny"))
    if args.shape == "tiny":
        if not args.untrained:
            train_briefly(model, tokenizer, files)
        description = "tiny (untrained)" if args.untrained else "tiny (trained 60 steps)"
        return model.to(args.device).eval(), tokenizer, description
    from transformers import Qwen2Config, Qwen2ForCausalLM

    shape = SHAPES[args.shape] | {"vocab_size": QWEN_TOKENIZER_LENGTH + len(tokenizer) - 4096}
    if args.layers:
        shape["num_hidden_layers"] = args.layers
    eos = tokenizer.eos_token_id
    config = Qwen2Config(**shape, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    torch.manual_seed(0)
    with torch.device(args.device):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16).eval()
    model.generation_config.update(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    layers = f", {args.layers} layers only" if args.layers else ""
    return model, tokenizer, f"{args.shape} (random bf16 weights, vocabulary {shape['vocab_size']}{layers})"


def batches(encoded: list[list[int]], size: int, by_length: bool) -> list[list[list[int]]]:
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i])) if by_length else range(len(encoded))
    ordered = [encoded[i] for i in order]
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def decode_all(decoder, model, constraint, padded, num_beams, eos, device):
    """Run one decoder over every batch: (wall s, process CPU s, [(tokens, scores)] per batch)."""
    outputs = []
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for input_ids, attention_mask in padded:
        if decoder == "generate":
            config = beam_generation_config(num_beams, constraint.max_new_tokens, eos, eos)
            outputs.append(generate_sid_beams(model, input_ids, attention_mask, constraint, config))
        else:
            outputs.append(tuple(sid_beam_search(model, input_ids, attention_mask, constraint, num_beams,
                                                 pad_token_id=eos)))
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu, outputs


def identical_share(first, second, num_beams: int) -> tuple[float, float]:
    """(share of prompts with identical ranked tokens and scores, largest rank-wise score difference)."""
    same = total = 0
    largest = 0.0
    for (tokens_a, scores_a), (tokens_b, scores_b) in zip(first, second):
        prompts_in_batch = scores_a.shape[0] // num_beams
        largest = max(largest, float((scores_a.double() - scores_b.double()).abs().max()))
        for p in range(prompts_in_batch):
            rows = slice(p * num_beams, (p + 1) * num_beams)
            same += (tokens_a.shape == tokens_b.shape and torch.equal(tokens_a[rows], tokens_b[rows])
                     and torch.equal(scores_a[rows], scores_b[rows]))
            total += 1
    return same / total, largest


def _spread(values) -> str:
    values = sorted(values)
    return f"{values[0]:.2f} / {statistics.median(values):.2f} / {values[-1]:.2f}"


def _ranked(tokens: torch.Tensor, num_beams: int, eos: int) -> list[list[tuple[int, ...]]]:
    rows = [tuple(row[:row.index(eos) + 1]) if eos in row else tuple(row) for row in tokens.tolist()]
    return [rows[i:i + num_beams] for i in range(0, len(rows), num_beams)]


def cpu_report(args, model, tokenizer, constraint, encoded) -> list[str]:
    eos = tokenizer.eos_token_id
    padded = [left_pad(batch, eos, args.device) for batch in batches(encoded, args.batch_size, by_length=False)]
    users = len(encoded)
    lines = [f"{users} Industrial test users (first rows), batch {args.batch_size}, {torch.get_num_threads()} torch "
             f"thread(s), {args.rounds} interleaved rounds; users/s from the median round, CPU (process) / wall:",
             f"  {'beams':>5}  {'generate_sid_beams':>20}  {'sid_beam_search':>20}  {'ratio CPU / wall':>16}  "
             f"{'per-round CPU ratio min/med/max':>32}  identical lists"]
    ours_cpu_per_user = {}
    for num_beams in args.beams:
        decode_all("ours", model, constraint, padded[:1], num_beams, eos, args.device)  # warm-up
        times = {"generate": [], "ours": []}
        outputs = {}
        for round_ in range(args.rounds):
            for decoder in (("generate", "ours") if round_ % 2 == 0 else ("ours", "generate")):
                wall, cpu, outputs[decoder] = decode_all(decoder, model, constraint, padded, num_beams, eos,
                                                         args.device)
                times[decoder].append((cpu, wall))
        median = {name: [statistics.median(t[i] for t in times[name]) for i in (0, 1)] for name in times}
        rate = {name: [users / median[name][i] for i in (0, 1)] for name in times}
        per_round = [g[0] / o[0] for g, o in zip(times["generate"], times["ours"])]
        same, largest = identical_share(outputs["generate"], outputs["ours"], num_beams)
        ours_cpu_per_user[num_beams] = median["ours"][0] / users
        lines.append(
            f"  {num_beams:>5}  {rate['generate'][0]:8.1f} / {rate['generate'][1]:6.1f} u/s  "
            f"{rate['ours'][0]:8.1f} / {rate['ours'][1]:6.1f} u/s  "
            f"{rate['ours'][0] / rate['generate'][0]:6.2f}x / {rate['ours'][1] / rate['generate'][1]:5.2f}x  "
            f"{_spread(per_round):>32}  {100 * same:.1f}% (max score diff {largest:.1e})")
    if args.exact_users:
        widest = max(args.beams)
        exact_padded = [left_pad(batch, eos, args.device)
                        for batch in batches(encoded[:args.exact_users], args.batch_size, by_length=False)]
        cpu = time.process_time()
        wall = time.perf_counter()
        exact = [exact_top_k(model, ids, mask, constraint, widest) for ids, mask in exact_padded]
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        beams = [sid_beam_search(model, ids, mask, constraint, widest) for ids, mask in exact_padded]
        exact_rows = [row for result in exact for row in _ranked(result.tokens, widest, eos)]
        beam_rows = [row for result in beams for row in _ranked(result.tokens, widest, eos)]
        recall = {k: beam_recall(beam_rows, exact_rows, k) for k in (1, 10, widest)}
        bound = all(float((e.scores.view(-1, widest) - b.scores.view(-1, widest)).min()) >= -1e-5
                    for e, b in zip(exact, beams))
        per_user = cpu / args.exact_users
        lines.append(
            f"  exact_top_k over all {constraint.num_sids} SIDs, {args.exact_users} users: {per_user:.2f} CPU s / "
            f"{wall / args.exact_users:.2f} wall s per user = {per_user / ours_cpu_per_user[widest]:.0f}x "
            f"the CPU cost of sid_beam_search at {widest} beams; beam_recall@1/10/{widest} = "
            + " / ".join(f"{recall[k]:.3f}" for k in recall)
            + f"; exact k-th score >= beam k-th score at every rank: {'yes' if bound else 'NO'}")
    return lines


def gpu_report(args, model, tokenizer, constraint, encoded) -> list[str]:
    eos, device = tokenizer.eos_token_id, args.device
    dtype = next(model.parameters()).dtype
    rate = matmul_rate(device, dtype, size=8192 if torch.device(device).type == "cuda" else 1024)
    steps = constraint.max_new_tokens
    lengths = [len(ids) for ids in encoded]
    name = torch.cuda.get_device_name(0) if torch.device(device).type == "cuda" else "CPU"
    mean = sum(lengths) / len(lengths)
    lines = [f"{name}: {len(encoded)} test users sorted by prompt length (mean {mean:.0f} tokens, "
             f"max {max(lengths)}), {steps} new tokens; measured {str(dtype).split('.')[-1]} matmul rate "
             f"{rate / 1e12:.2f} TFLOP/s",
             f"  {'beams':>5} {'batch':>5}  {'users/s':>8}  {'total s':>8}  {'peak GiB':>8}  {'FLOPs':>9}  "
             f"{'of compute limit':>16}  generate users/s (first N)  ratio  identical"]
    for num_beams in args.beams:
        for size in args.batch_sizes:
            padded = [left_pad(batch, eos, device) for batch in batches(encoded, size, by_length=True)]
            decode_all("ours", model, constraint, padded[:1], num_beams, eos, device)  # warm-up
            if torch.device(device).type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            wall, _, ours = decode_all("ours", model, constraint, padded, num_beams, eos, device)
            peak = torch.cuda.max_memory_allocated() / 2**30 if torch.device(device).type == "cuda" else float("nan")
            flops = 0.0
            for input_ids, _ in padded:
                rows, width = input_ids.shape
                flops += forward_flops(model.config, rows * width, width / 2, rows)  # one prefill per prompt
                flops += sum(forward_flops(model.config, rows * num_beams, width + step, rows * num_beams)
                             for step in range(1, steps))
            cell = f"{'-':>26}  {'-':>5}  {'-':>9}"
            if args.generate_users:
                count = sum(ids.shape[0] for ids, _ in padded[:max(1, args.generate_users // size)])
                subset = padded[:max(1, args.generate_users // size)]
                gen_wall, _, generated = decode_all("generate", model, constraint, subset, num_beams, eos, device)
                ours_wall, _, _ = decode_all("ours", model, constraint, subset, num_beams, eos, device)
                same, _ = identical_share(generated, ours[:len(subset)], num_beams)
                cell = (f"{count / gen_wall:12.1f} ({count:>5} users)  {gen_wall / ours_wall:4.1f}x  "
                        f"{100 * same:8.1f}%")
            lines.append(f"  {num_beams:>5} {size:>5}  {len(encoded) / wall:8.1f}  {wall:8.1f}  {peak:8.2f}  "
                         f"{flops:9.2e}  {flops / rate / wall:16.1%}  {cell}")
    return lines


def _code_version() -> str:
    """Short commit, with ``+dirty`` when the code measured (minirec/, this script) differs from it."""

    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=RESULTS.parent.parent).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--", "minirec", "bench/bench_decoder.py")
    return commit + ("+dirty" if changed else "")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", default="tiny", choices=SHAPES)
    parser.add_argument("--untrained", action="store_true", help="tiny: keep the random weights")
    parser.add_argument("--users", type=int, default=None, help="first N test rows (0: all 4,533; default 96 on "
                        "CPU, all on a GPU)")
    parser.add_argument("--batch-size", "--batch_size", type=int, default=16, help="CPU comparison batch size")
    parser.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[8, 16, 32, 64],
                        help="GPU sweep")
    parser.add_argument("--beams", type=lambda s: [int(x) for x in s.split(",")], default=[50, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the machine is shared)")
    parser.add_argument("--exact-users", type=int, default=16, help="CPU: users for the exact top-k (0: skip)")
    parser.add_argument("--generate-users", type=int, default=256, help="GPU: users decoded by generate too")
    parser.add_argument("--layers", type=int, default=0, help="override the Qwen shape's layer count (smoke tests)")
    parser.add_argument("--sweep", action="store_true", help="the batch-size sweep report even for the tiny model "
                        "on CPU (the default on a GPU or for the Qwen shape)")
    parser.add_argument("--record", action="store_true", help="append the result to bench/RESULTS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    on_cpu = torch.device(args.device).type == "cpu" and args.shape == "tiny" and not args.sweep
    users = args.users if args.users is not None else (96 if on_cpu else 0)

    files = locate(CATEGORY)
    catalogue = Catalogue.load(files)
    with tempfile.TemporaryDirectory() as folder:
        model, tokenizer, description = build(args, Path(folder))
    rows = read_split(files.test)
    rows = rows.head(users) if users else rows
    encoded = encode_prompts(tokenizer, split_prompts(rows))
    constraint = SidConstraint.from_catalogue(catalogue, tokenizer).to(args.device)
    with torch.inference_mode():
        lines = [f"model: {description}"]
        lines += (cpu_report if on_cpu else gpu_report)(args, model, tokenizer, constraint, encoded)
    print("\n".join(lines))
    if args.record:
        command = "python bench/bench_decoder.py " + " ".join(argv if argv is not None else sys.argv[1:])
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        machine = f"{platform.machine()} {args.device}, code {_code_version()}"
        RESULTS.read_text(encoding="utf-8")  # other people append too: only ever append, never rewrite
        with open(RESULTS, "a", encoding="utf-8") as handle:
            handle.write(f"\n## SID decoder: one prefill per prompt vs generate ({stamp})\n\n`{command.strip()}` on "
                         f"{machine} (machine shared with other work; decoders interleaved)\n\n```\n"
                         + "\n".join(lines) + "\n```\n")


if __name__ == "__main__":
    main()
