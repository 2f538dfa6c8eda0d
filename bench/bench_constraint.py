"""Cost of constrained decoding on CPU: our tensor constraint vs none vs upstream's per-beam Python processor.

    .venv/bin/python bench/bench_constraint.py [--rounds 5 --batch-size 16 --num-beams 50] [--record]

Same tiny model, same Industrial test prompts, 50 beams, batch 16. The three variants run interleaved
(A, B, C, A, B, C, ...) so that load from other processes hits them alike; the report gives medians and the
ratios measured in this one run. Processor time is the time spent inside the processor's ``__call__`` alone.

The upstream variant reimplements ``ConstrainedLogitsProcessor`` (``LogitProcessor.py``, docs/upstream.md 6.3)
and its prefix table (``evaluate.py:61-69``) as written: hashed prefixes in a dict, a Python loop over every
beam of every prompt, ``.tolist()`` per beam, a -1e6 mask, and a missing key leaving the row unmasked.
Our processor's time includes its after-generation ``check()`` (the dead-row count it defers to the end).
``--record`` appends the result to ``bench/RESULTS.md``. Besides the medians it prints the per-round ratios and
each decoding step's processor time, since upstream's Python loop varies from run to run far more than ours.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from minirec.constraint import SidConstraint
from minirec.data import Catalogue, locate, read_split
from minirec.evaluate import encode_prompts, left_pad, split_prompts
from minirec.generation import beam_generation_config, isolated_generation_config
from minirec.models import load_model_and_tokenizer
from minirec.tiny_model import build_tiny_model

CATEGORY = "Industrial_and_Scientific"
RESULTS = Path(__file__).with_name("RESULTS.md")


class UpstreamConstrainedLogitsProcessor(LogitsProcessor):
    """Upstream's processor, kept as it is (fail-open ``continue`` included)."""

    def __init__(self, prefix_allowed_tokens_fn, num_beams: int, prefix_index: int):
        self._prefix_allowed_tokens_fn = prefix_allowed_tokens_fn
        self._num_beams = num_beams
        self.prefix_index = prefix_index
        self.count = 0

    def __call__(self, input_ids, scores):
        scores = torch.nn.functional.log_softmax(scores, dim=-1)
        mask = torch.full_like(scores, -1000000)
        for batch_id, beam_sent in enumerate(input_ids.view(-1, self._num_beams, input_ids.shape[-1])):
            for beam_id, sent in enumerate(beam_sent):
                hash_key = sent[-self.prefix_index:] if self.count == 0 else sent[-self.count:]
                prefix_allowed_tokens = self._prefix_allowed_tokens_fn(batch_id, hash_key.tolist())
                if len(prefix_allowed_tokens) == 0:
                    continue
                mask[batch_id * self._num_beams + beam_id, prefix_allowed_tokens] = 0
        self.count += 1
        return scores + mask


def get_hash(x):
    """Upstream's key function, as written."""
    x = [str(_) for _ in x]
    return '-'.join(x)


def upstream_prefix_table(tokenizer, catalogue: Catalogue) -> tuple[dict, int]:
    """``get_hash(ids) -> allowed ids`` over ``"### Response:\\n{sid}\\n" + EOS`` (evaluate.py:61-69): sets of
    allowed ids turned into lists, as upstream does."""
    prefix_index = len(tokenizer("### Response:\n", add_special_tokens=False).input_ids)
    table = defaultdict(set)
    for sid, _, _ in catalogue.info_lines:
        ids = tokenizer(f"### Response:\n{sid}\n", add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        for i in range(prefix_index, len(ids)):
            key = ids[:i] if i == prefix_index else ids[prefix_index:i]
            table[get_hash(key)].add(ids[i])
    return {key: list(values) for key, values in table.items()}, prefix_index


def upstream_allowed_fn(hash_dict):
    """Upstream's ``prefix_allowed_tokens_fn`` (evaluate.py), as written."""
    def prefix_allowed_tokens_fn(batch_id, input_ids):
        hash_number = get_hash(input_ids)
        if hash_number in hash_dict:
            return hash_dict[hash_number]
        return []
    return prefix_allowed_tokens_fn


class Timed(LogitsProcessor):
    """Adds up the wall time and the CPU time of this thread spent in the wrapped processor's calls.

    On a loaded machine the wall time of millisecond calls is mostly waiting for a core; the thread's CPU time
    is the work itself.
    """

    def __init__(self, inner):
        self.inner, self.wall, self.cpu, self.steps = inner, 0.0, 0.0, []

    def __call__(self, input_ids, scores):
        wall, cpu = time.perf_counter(), time.thread_time()
        out = self.inner(input_ids, scores)
        self.wall += time.perf_counter() - wall
        self.steps.append(time.thread_time() - cpu)
        self.cpu += self.steps[-1]
        return out


def run_variant(name, model, batch, config, constraint, upstream_table):
    processors = LogitsProcessorList()
    timed = None
    if name == "ours":
        timed = Timed(constraint.logits_processor())
    elif name == "upstream":
        table, prefix_index = upstream_table
        timed = Timed(UpstreamConstrainedLogitsProcessor(upstream_allowed_fn(table),
                                                         config.num_beams, prefix_index))
    if timed is not None:
        processors.append(timed)
    wall, cpu = time.perf_counter(), time.process_time()
    with isolated_generation_config(model, config), torch.inference_mode():
        output = model.generate(*batch[:1], attention_mask=batch[1], generation_config=config,
                                logits_processor=processors)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if name == "ours":  # its dead-row count is read after generation: that is constraint time too
        started, cpu_started = time.perf_counter(), time.thread_time()
        timed.inner.check()
        timed.wall += time.perf_counter() - started
        timed.steps.append(time.thread_time() - cpu_started)  # the last entry is check()
        timed.cpu += timed.steps[-1]
    inside = (timed.wall, timed.cpu, timed.steps) if timed else (0.0, 0.0, [])
    return (wall, cpu), inside, output.sequences


def _ranked_sids(tokenizer, sequences, prompt_length, num_beams) -> list[list[str]]:
    texts = [t.strip() for t in tokenizer.batch_decode(sequences[:, prompt_length:], skip_special_tokens=True)]
    return [texts[i:i + num_beams] for i in range(0, len(texts), num_beams)]


def _spread(values: list[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def _rounds(times: list[tuple], digits: int = 1) -> str:
    return " ".join(f"{1000 * cpu:.{digits}f}" for _, cpu, _ in times)


def _per_step(times: list[tuple]) -> str:
    """Median CPU ms of each call, over rounds (rounds with a different number of calls are left out)."""
    steps = [t[2] for t in times]
    common = statistics.mode(len(s) for s in steps)
    return " ".join(f"{1000 * statistics.median(s[i] for s in steps if len(s) == common):.2f}" for i in range(common))


def _code_version() -> str:
    """Short commit of the working tree, with ``+dirty`` when tracked files other than RESULTS.md differ from it."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=RESULTS.parent.parent).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/RESULTS.md")
    return commit + ("+dirty" if changed else "")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", "--batch_size", type=int, default=16)
    parser.add_argument("--num-beams", "--num_beams", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared machine more threads mostly wait on each other)")
    parser.add_argument("--record", action="store_true", help="append the result to bench/RESULTS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    files = locate(CATEGORY)
    catalogue = Catalogue.load(files)
    with tempfile.TemporaryDirectory() as folder:
        model, tokenizer = load_model_and_tokenizer(build_tiny_model(CATEGORY, Path(folder) / "tiny"))
    rows = read_split(files.test).head(args.batch_size)
    batch = left_pad(encode_prompts(tokenizer, split_prompts(rows)), tokenizer.eos_token_id, "cpu")
    constraint = SidConstraint.from_catalogue(catalogue, tokenizer)
    upstream_table = upstream_prefix_table(tokenizer, catalogue)
    config = beam_generation_config(args.num_beams, constraint.max_new_tokens, tokenizer.eos_token_id,
                                    tokenizer.eos_token_id)

    variants = ("ours", "none", "upstream")
    run_variant("ours", model, batch, config, constraint, upstream_table)  # warm-up
    totals, processor_times, outputs = defaultdict(list), defaultdict(list), {}
    for _ in range(args.rounds):
        for name in variants:
            total, inside, sequences = run_variant(name, model, batch, config, constraint, upstream_table)
            totals[name].append(total)
            processor_times[name].append(inside)
            outputs[name] = sequences
    call = {name: [statistics.median(t[i] for t in totals[name]) for i in (0, 1)] for name in variants}
    inside = {name: [statistics.median(t[i] for t in processor_times[name]) for i in (0, 1)]
              for name in ("ours", "upstream")}
    ranked = {name: _ranked_sids(tokenizer, outputs[name], batch[0].shape[1], args.num_beams) for name in outputs}
    shared = statistics.mean(len(set(a) & set(b)) / args.num_beams for a, b in zip(ranked["ours"], ranked["upstream"]))

    def overhead(name, i):
        return f"{100 * (call[name][i] / call['none'][i] - 1):+.1f}%"

    lines = [f"generate call, {args.batch_size} prompts x {args.num_beams} beams, {args.threads} thread(s), "
             f"median of {args.rounds} interleaved rounds (wall s / process CPU s):"]
    lines += [f"  {label:<34} {call[name][0]:7.3f} / {call[name][1]:7.3f}" for name, label in (
        ("ours", "ours (tensor constraint)"), ("none", "no constraint"), ("upstream", "upstream per-beam processor"))]
    lines += [
        f"  overhead over unconstrained, wall / CPU: ours {overhead('ours', 0)} / {overhead('ours', 1)} "
        f"(goal <= +10%); upstream {overhead('upstream', 0)} / {overhead('upstream', 1)}",
        f"  processor alone per generate call, wall / CPU: ours {1000 * inside['ours'][0]:.2f} / "
        f"{1000 * inside['ours'][1]:.2f} ms; upstream {1000 * inside['upstream'][0]:.1f} / "
        f"{1000 * inside['upstream'][1]:.1f} ms",
        f"  ours is {inside['upstream'][0] / inside['ours'][0]:.0f}x (wall) / "
        f"{inside['upstream'][1] / inside['ours'][1]:.0f}x (CPU) faster than upstream's processor (goal >= 50x)",
        "  per-round CPU-time ratio, min / median / max: " + " / ".join(
            f"{ratio:.0f}x" for ratio in _spread([u[1] / o[1] for u, o in zip(processor_times["upstream"],
                                                                               processor_times["ours"])])),
        "  per-round processor CPU ms, ours: " + _rounds(processor_times["ours"], 2) + "; upstream: "
        + _rounds(processor_times["upstream"]),
        "  per decoding step, median CPU ms, ours: " + _per_step(processor_times["ours"]) + " (last: check()); "
        "upstream: " + _per_step(processor_times["upstream"]),
        f"  SIDs shared by ours and upstream's top {args.num_beams}: {100 * shared:.0f}% on average (the untrained "
        "model's near-uniform scores make near-ties that upstream's second log_softmax rounds differently)",
    ]
    print("\n".join(lines))
    if args.record:
        command = "python bench/bench_constraint.py " + " ".join(argv if argv is not None else sys.argv[1:])
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        machine = f"{platform.machine()} CPU, {torch.get_num_threads()} torch thread(s), code {_code_version()}"
        with open(RESULTS, "a", encoding="utf-8") as handle:
            handle.write(f"\n## Constraint cost on CPU ({stamp})\n\n`{command.strip()}` on {machine} (machine "
                         "shared with other work; variants interleaved)\n\n```\n" + "\n".join(lines) + "\n```\n")


if __name__ == "__main__":
    main()
