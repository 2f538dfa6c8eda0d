"""Evaluate a model: constrained beam search over a split's prompts, then HR@K / NDCG@K with the scorer.

    python -m minirec.evaluate --model REF --category Industrial_and_Scientific [--split test --num_beams 50]
    python -m minirec.evaluate --model REF --category Industrial_and_Scientific --num_gpus 8
    mlflow run . -e evaluate -P model=REF -P category=Industrial_and_Scientific --env-manager local

Upstream (docs/upstream.md 6.1-6.4): the test prompt is ``PRE + BODY`` tokenised in two pieces and left-padded
with EOS, decoded with 50 constrained beams (``length_penalty=0``), written as ``{input, output, predict}``
JSON and scored by calc.py. Here the same, with three changes: the generation config is explicit and isolated
from the checkpoint's defaults (8.1 G), the constraint fails closed (8.1 F), and the work is written in
atomic shards so an interrupted evaluation resumes where it stopped with an identical result.

This module is the library (:func:`evaluate_model`, also behind SFT's final evaluation and GRPO's validation
ranking); :mod:`minirec.evaluate.recipe` is the stage. Several processes: each (``accelerate``'s
``PartialState``) takes a contiguous block of shards; the main process merges them in split order after a
barrier (the output folder must be shared by the processes).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch

from minirec import prompts
from minirec.atomic import atomic_path, write_json
from minirec.constraint import SidConstraint
from minirec.data import Catalogue, CategoryFiles, read_split, sha256_of
from minirec.decoding import DecodeSettings
from minirec.errors import UserError
from minirec.generation import effective_generation_config, left_pad

__all__ = ["DecodeSettings", "Evaluation", "ShardMismatchError", "decode_beams", "encode_prompts", "evaluate_model", "left_pad",
           "split_prompts"]

SHARD_BATCHES = 4  # batches per shard: an interruption loses at most this much work


class ShardMismatchError(UserError):
    """The output folder holds shards of a different evaluation."""


def split_prompts(frame: pd.DataFrame, phrasing: str = "test") -> list[prompts.Prompt]:
    """The evaluation prompt of every row (docs/upstream.md 6.2; ``phrasing="sft"`` uses the SFT task-1 sentence)."""
    return [prompts.test_prompt(history, target, phrasing)
            for history, target in zip(frame["history_item_sid_list"], frame["item_sid"])]


def encode_prompts(tokenizer, samples: Sequence[prompts.Prompt]) -> list[list[int]]:
    """``[BOS] + enc(preamble) + enc(body)``, each piece tokenised on its own as upstream does (docs/upstream.md 4.2, 6.2)."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    preambles = tokenizer([s.preamble for s in samples], add_special_tokens=False).input_ids
    bodies = tokenizer([s.body for s in samples], add_special_tokens=False).input_ids
    return [bos + pre + body for pre, body in zip(preambles, bodies)]


def model_checksum(model) -> str:
    """A cheap fingerprint of the weights (sum and sum of squares per tensor), to refuse mixing models' shards."""
    with torch.no_grad():
        sums = [(p.double().sum().item(), p.double().square().sum().item()) for p in model.parameters()]
    return hashlib.sha256(json.dumps(sums).encode()).hexdigest()[:16]


def settings_manifest(files: CategoryFiles, split: str, decode: DecodeSettings) -> dict:
    """The part of a shard manifest that the settings decide: what the evaluate stage checks before its run
    exists (:meth:`ShardStore.check_folder`); the rest needs the model."""
    return {"split": split, "split_sha256": sha256_of(files.split(split)), "num_beams": decode.num_beams,
            "batch_size": decode.batch_size, "prompt": decode.prompt, "decoder": decode.decoder,
            **({"masking": decode.masking} if decode.masking != "strict" else {})}


class ShardStore:
    """``out_dir/shards/NNNNN.parquet`` plus ``manifest.json``: what is done, and of which evaluation."""

    def __init__(self, out_dir: str | os.PathLike, manifest: dict):
        self.folder = Path(out_dir) / "shards"
        self.manifest = manifest

    def open(self) -> "ShardStore":
        path = self.folder / "manifest.json"
        if path.exists():
            stored = json.loads(path.read_text(encoding="utf-8"))
            self._refuse_other(stored, self.manifest, stored.keys() | self.manifest.keys())
        else:
            write_json(path, self.manifest)
        return self

    @classmethod
    def check_folder(cls, out_dir: str | os.PathLike, expected: dict) -> None:
        """Before any run exists: refuse a folder whose shards were written with other values of ``expected``
        (the settings' part of the manifest; the whole of it, model checksum included, is compared again by
        :meth:`open` once the model is loaded)."""
        store = cls(out_dir, expected)
        path = store.folder / "manifest.json"
        if path.exists():
            store._refuse_other(json.loads(path.read_text(encoding="utf-8")), expected, expected.keys())

    def _refuse_other(self, stored: dict, manifest: dict, keys) -> None:
        differing = sorted(key for key in keys if stored.get(key) != manifest.get(key))
        if differing:
            raise ShardMismatchError(f"{self.folder} holds shards of another evaluation (differs in: "
                                     f"{', '.join(differing)}); use another output folder or delete that one")

    def path(self, index: int) -> Path:
        return self.folder / f"{index:05d}.parquet"

    def done(self, index: int) -> bool:
        return self.path(index).exists()

    def write(self, index: int, frame: pd.DataFrame) -> None:
        with atomic_path(self.path(index)) as tmp:
            frame.to_parquet(tmp, index=False)

    def read(self, count: int) -> pd.DataFrame:
        missing = [i for i in range(count) if not self.done(i)]
        if missing:
            raise FileNotFoundError(f"{self.folder}: shards {missing[:5]} missing after all processes finished")
        return pd.concat([pd.read_parquet(self.path(i)) for i in range(count)], ignore_index=True)


def decode_beams(tokenizer, generated: torch.Tensor, scores: torch.Tensor, num_beams: int):
    """Ranked SID strings and scores per prompt (upstream strips the decoded text, docs/upstream.md 6.3)."""
    texts = [text.strip() for text in tokenizer.batch_decode(generated, skip_special_tokens=True)]
    values = scores.double().cpu().tolist()
    return ([texts[i:i + num_beams] for i in range(0, len(texts), num_beams)],
            [values[i:i + num_beams] for i in range(0, len(values), num_beams)])


@dataclass
class Evaluation:
    """What :func:`evaluate_model` produced: the beams (every process), the scores (main process, else
    ``None``), and the decoding actually used (settings, effective generation config, grammar size)."""

    beams: pd.DataFrame
    scores: "Scores | None"  # noqa: F821
    decode: DecodeSettings
    generation_config: "GenerationConfig"  # noqa: F821
    constraint_sids: int
    max_new_tokens: int
    processes: int = 1
    recall: dict = None  # beam_recall@K over the first decode.recall_rows rows (empty: not measured)

    def params(self) -> dict[str, str]:
        """What a run logs about the decoding: the settings, the grammar and every effective generation field."""
        generation = {f"generation.{key}": str(value) for key, value in self.generation_config.to_diff_dict().items()
                      if key != "transformers_version"}
        return {**self.decode.as_params(), "constraint_sids": str(self.constraint_sids),
                "max_new_tokens": str(self.max_new_tokens), "processes": str(self.processes), **generation}


def evaluate_model(model, tokenizer, files: CategoryFiles, catalogue: Catalogue, decode: DecodeSettings, *,
                   out_dir: str | os.PathLike, split: str = "valid", seed: int = 0,
                   on_shard: Callable[[int], None] | None = None, progress: bool = True) -> Evaluation:
    """Decode ``split`` (its first ``decode.limit`` rows, all when 0) with constrained beam search and score it.

    Writes ``out_dir/shards``, ``beams.parquet`` and ``predictions.json`` (upstream's format); logs nothing to
    MLflow. ``on_shard`` is called with each shard index once that shard is on disk. The beam frame has
    ``row, user_id, target, predict, scores, prompt``.
    """
    from transformers import set_seed

    from minirec.beams import write_beams, write_upstream_json
    from minirec.devices import process_state
    from minirec.score import score_predictions

    state = process_state(model.device.type)
    set_seed(seed)
    rows = read_split(files.split(split))
    rows = rows.head(decode.limit) if decode.limit else rows
    samples = split_prompts(rows, decode.prompt)
    constraint = SidConstraint.from_catalogue(catalogue, tokenizer, masking=decode.masking).to(model.device)
    decode.check_catalogue(constraint.num_sids)
    config = decode.generation_config(constraint, tokenizer)
    effective = effective_generation_config(model, config)

    shard_rows = decode.batch_size * SHARD_BATCHES
    shard_count = math.ceil(len(rows) / shard_rows)
    store = ShardStore(out_dir, {
        **settings_manifest(files, split, decode), "rows": len(rows), "shard_rows": shard_rows,
        "tokenizer_length": len(tokenizer), "model_checksum": model_checksum(model),
        "generation_config": config.to_diff_dict(),
    })
    if state.is_main_process:  # writes the manifest, or refuses a folder holding another evaluation's shards
        store.open()
    state.wait_for_everyone()
    if not state.is_main_process:
        store.open()

    per_process = math.ceil(shard_count / state.num_processes)
    mine = range(state.process_index * per_process, min(shard_count, (state.process_index + 1) * per_process))
    todo = [index for index in mine if not store.done(index)]
    _decode_shards(model, tokenizer, constraint, config, decode, rows, samples, store, todo, shard_rows,
                   on_shard, progress and state.is_local_main_process)
    state.wait_for_everyone()

    beams = store.read(shard_count)
    scores = None
    if state.is_main_process:
        write_beams(Path(out_dir) / "beams.parquet", beams)
        write_upstream_json(Path(out_dir) / "predictions.json", beams)
        scores = score_predictions(beams, catalogue, seed=seed)
    recall = beam_recall_at(model, tokenizer, constraint, beams, samples, decode) if state.is_main_process else {}
    return Evaluation(beams, scores, decode, effective, constraint.num_sids, constraint.max_new_tokens,
                      state.num_processes, recall)


RECALL_KS = (1, 10, 50)


def beam_recall_at(model, tokenizer, constraint, beams: pd.DataFrame, samples, decode: DecodeSettings) -> dict:
    """``beam_recall@K``: over the first ``decode.recall_rows`` rows, the share of the true top-K SIDs (every
    catalogue SID scored, :func:`minirec.sid_decoder.exact_top_k`) that the decoding returned. No MiniOneRec
    implementation measures how much its beam search misses; 1.0 means nothing was pruned away."""
    rows = min(decode.recall_rows, len(beams))
    if rows == 0 or decode.decoder == "exact":
        return {}
    from minirec.sid_decoder import beam_recall, exact_top_k

    encoded = encode_prompts(tokenizer, samples[:rows])
    exact = []
    for begin in range(0, rows, decode.batch_size):
        input_ids, attention_mask = left_pad(encoded[begin:begin + decode.batch_size], tokenizer.eos_token_id,
                                             model.device)
        generated, _ = exact_top_k(model, input_ids, attention_mask, constraint, decode.num_beams,
                                   pad_token_id=tokenizer.eos_token_id)
        texts = [text.strip() for text in tokenizer.batch_decode(generated, skip_special_tokens=True)]
        exact += [texts[i:i + decode.num_beams] for i in range(0, len(texts), decode.num_beams)]
    found = [list(predict) for predict in beams["predict"].iloc[:rows]]
    recall = {f"beam_recall@{k}": beam_recall(found, exact, k) for k in RECALL_KS if k <= decode.num_beams}
    return {**recall, "beam_recall_rows": rows}


def _decode_shards(model, tokenizer, constraint, config, decode, rows, samples, store, todo, shard_rows,
                   on_shard, show_progress):
    from minirec.logs import progress

    encoded = encode_prompts(tokenizer, samples)
    total = sum(len(range(i * shard_rows, min(len(rows), (i + 1) * shard_rows))) for i in todo)
    with progress(total, f"{decode.decoder} beam search, {decode.num_beams} beams", "user", "evaluate",
                  enabled=show_progress) as bar:
        for index in todo:
            start, stop = index * shard_rows, min(len(rows), (index + 1) * shard_rows)
            predict, scores = [], []
            for begin in range(start, stop, decode.batch_size):
                end = min(stop, begin + decode.batch_size)
                input_ids, attention_mask = left_pad(encoded[begin:end], tokenizer.eos_token_id, model.device)
                generated, beam_scores = decode.rank(model, input_ids, attention_mask, constraint, config)
                texts, values = decode_beams(tokenizer, generated, beam_scores, config.num_return_sequences)
                predict += texts
                scores += values
                bar.update(end - begin)
            store.write(index, pd.DataFrame({
                "row": pd.Series(range(start, stop), dtype="int64"),
                "user_id": rows["user_id"].iloc[start:stop].tolist(),
                "target": rows["item_sid"].iloc[start:stop].tolist(),
                "predict": predict,
                "scores": scores,
                "prompt": [samples[i].text for i in range(start, stop)],
            }))
            if on_shard is not None:
                on_shard(index)

