"""One training loop for every learned baseline: seeded, early-stopped on valid NDCG@20, resumable exactly.

    result = train_recommender("sasrec", load_settings("sasrec"), locate(cat), Catalogue.load(files), out_dir)
    frame = rank_split(result.model, read_split(files.test), catalogue)        # minirec.recsys.rank

An epoch shuffles the train rows (``torch.randperm`` on the run's own generator) and steps through batches of
``batch_size``; the loss is the method's (:class:`~minirec.recsys.settings.RecSettings`): ``bce`` draws one
negative per row uniformly from the items other than its target (on the same generator), ``ce`` is softmax
cross-entropy over the catalogue, ``seq2seq`` is TIGER's token cross-entropy. Every ``eval_every`` epochs (and
after the last) the model is evaluated on valid:

- item-id models: the rank of the target item among all items' logits (ties: lower item id first), as
  upstream's ``evaluate_games`` ranks item logits; HR@10, HR@20, NDCG@10, NDCG@20;
- TIGER: the rank of the target SID among ``eval_beams`` constrained beams (absent: a miss).

The best evaluation by valid NDCG@20 (strictly better than all before; the first one always counts, which
fixes upstream's ``early_stop`` read before assignment, docs/upstream.md 8.1 L) is kept in memory and written to
``best.pt``; the run stops once more than ``patience`` evaluations in a row have not improved. Test is never
looked at here (upstream evaluates test at every epoch; only its selection uses valid).

After each evaluation ``checkpoint.pt`` is written atomically: model, optimizer, epoch, best state and metric,
the evaluation count since the best, the RNG states (torch's global one, which drives dropout, numpy's,
Python's and the run's generator) and the history. ``resume_from=<folder>`` reloads it and continues with the
next epoch, so an interrupted run and an uninterrupted one end with identical weights (same machine and
thread count). Progress goes to stderr: a tqdm bar on a terminal, otherwise one line per epoch.
"""

from __future__ import annotations

import copy
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from minirec.atomic import atomic_path
from minirec.data.catalogue import Catalogue, read_split
from minirec.data.layout import CategoryFiles
from minirec.logs import LOG_SECONDS
from minirec.recsys.sequences import Sequences
from minirec.recsys.settings import RecSettings, SettingsError, build

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
FORMAT = 1
SELECT = "NDCG@20"
TIGER_BATCH = 64  # histories per constrained beam search call
EpochCallback = Callable[[int, dict], None]


class ResumeError(RuntimeError):
    """A checkpoint that cannot continue this run (other method, settings or data)."""


@dataclass
class TrainResult:
    """What a run produced; ``model`` holds the best state, in eval mode."""

    method: str
    settings: RecSettings
    model: nn.Module
    history: list[dict]
    best_epoch: int
    best_metrics: dict
    epochs_run: int
    stopped_early: bool
    out_dir: Path
    train_rows: int = 0
    train_seconds: list[float] = field(default_factory=list)

    @property
    def seconds_per_epoch(self) -> float:
        """Mean training time of an epoch (evaluation excluded), over the epochs this process ran."""
        return float(np.mean(self.train_seconds)) if self.train_seconds else float("nan")

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT

    @property
    def best_path(self) -> Path:
        return self.out_dir / BEST


def num_items_of(catalogue: Catalogue) -> int:
    """The item count, checked to be ids ``0..N-1`` (the pad id is ``N``)."""
    items = sorted(catalogue.item_sid)
    if items != list(range(len(items))):
        raise ValueError("catalogue item ids are not 0..N-1; the id-based baselines need contiguous ids")
    return len(items)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch (global RNG: init and dropout); the returned generator drives the data."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def sample_negatives(targets: torch.Tensor, num_items: int, generator: torch.Generator) -> torch.Tensor:
    """One item per row, uniform over the ``num_items - 1`` items that are not the row's target."""
    draw = torch.randint(0, num_items - 1, targets.shape, generator=generator)
    return draw + (draw >= targets).long()


def bce_one_negative(logits: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Upstream's loss: mean BCE-with-logits over the B positive (label 1) and B negative (label 0) logits."""
    positive = logits.gather(1, targets.view(-1, 1))
    negative = logits.gather(1, negatives.view(-1, 1))
    scores = torch.cat([positive, negative])
    labels = torch.cat([torch.ones_like(positive), torch.zeros_like(negative)])
    return F.binary_cross_entropy_with_logits(scores, labels)


def ranks_of(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among its row's scores; ties put the lower item id first."""
    target = scores.gather(1, targets.view(-1, 1))
    ids = torch.arange(scores.shape[1], device=scores.device)
    ahead = (scores > target) | ((scores == target) & (ids < targets.view(-1, 1)))
    return ahead.sum(1)


def rank_metrics(ranks: torch.Tensor) -> dict[str, float]:
    """HR@K and NDCG@K (K = 10, 20) from 0-based ranks (a miss: any rank >= 20)."""
    ranks = ranks.double()
    out = {}
    for k in (10, 20):
        hit = ranks < k
        out[f"HR@{k}"] = float(hit.double().mean())
        out[f"NDCG@{k}"] = float((hit / torch.log2(ranks.clamp(max=k) + 2)).mean())
    return out


@torch.no_grad()
def evaluate(model: nn.Module, sequences: Sequences, settings: RecSettings, catalogue: Catalogue | None = None):
    """Valid metrics of ``model`` (see the module docstring); leaves the model in eval mode."""
    model.eval()
    sequences = sequences.to(next(model.parameters()).device)
    ranks = []
    step = TIGER_BATCH if settings.method == "tiger" else settings.eval_batch_size
    for start in range(0, len(sequences), step):
        batch = sequences.subset(slice(start, start + step))
        if settings.method == "tiger":
            sids, _ = model.beam_search(batch.history, batch.lengths, settings.eval_beams)
            target_sids = [catalogue.item_sid[int(t)] for t in batch.targets]
            ranks.append(torch.tensor([row.index(t) if t in row else settings.eval_beams + 20
                                       for row, t in zip(sids, target_sids)]))
        else:
            ranks.append(ranks_of(model.scores(batch.history, batch.lengths), batch.targets).cpu())
    return rank_metrics(torch.cat(ranks))


def make_optimizer(model: nn.Module, settings: RecSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    # Upstream: Adam(lr, eps=1e-8, weight_decay=l2_decay), an L2 term in the gradient.
    return torch.optim.Adam(model.parameters(), lr=settings.lr, eps=1e-8, weight_decay=settings.weight_decay)


def batch_loss(model: nn.Module, batch: Sequences, settings: RecSettings, generator: torch.Generator) -> torch.Tensor:
    if settings.loss == "seq2seq":
        return model.loss(batch.history, batch.lengths, batch.targets)
    logits = model.scores(batch.history, batch.lengths)
    if settings.loss == "ce":
        return F.cross_entropy(logits, batch.targets)
    # Negatives come from the run's (CPU) generator wherever the model lives, so a run draws the same ones.
    negatives = sample_negatives(batch.targets.cpu(), batch.num_items, generator).to(batch.targets.device)
    return bce_one_negative(logits, batch.targets, negatives)


def _rng_state(generator: torch.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "generator": generator.get_state()}


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    generator.set_state(state["generator"])


def _save(path: Path, payload: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class _Progress:
    """A tqdm bar over epochs when stderr is a terminal, else a line for the first epoch and then one every
    ``LOG_SECONDS`` (the run's summary line follows; every epoch's figures are MLflow metrics)."""

    def __init__(self, method: str, first: int, last: int, enabled: bool = True):
        self.method, self.last, self.enabled = method, last, enabled
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=last, initial=first - 1, desc=method, unit="epoch", file=sys.stderr)
        self.spent: list[float] = []
        self.printed = time.monotonic()

    def update(self, epoch: int, record: dict) -> None:
        if not self.enabled:
            return
        self.spent.append(record["seconds"] + record.get("eval_seconds", 0.0))
        eta = float(np.mean(self.spent)) * (self.last - epoch)
        valid = (f" valid NDCG@20 {record['valid_NDCG@20']:.4f} HR@10 {record['valid_HR@10']:.4f}"
                 if "valid_NDCG@20" in record else "")
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {record['loss']:.4f}{valid}", refresh=False)
            self.bar.update(1)
        elif len(self.spent) == 1 or time.monotonic() - self.printed >= LOG_SECONDS:
            self.printed = time.monotonic()
            print(f"{self.method} epoch {epoch}/{self.last} loss {record['loss']:.4f}{valid} "
                  f"{record['seconds']:.1f}s ETA <= {_clock(eta)}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _frames(files: CategoryFiles | None, train: pd.DataFrame | None, valid: pd.DataFrame | None,
            settings: RecSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    if train is None or valid is None:
        if files is None:
            raise ValueError("pass the category's files or both the train and valid frames")
        train = read_split(files.train) if train is None else train
        valid = read_split(files.valid) if valid is None else valid
    if settings.train_rows:
        train = train.head(settings.train_rows)
    if settings.valid_rows:
        valid = valid.head(settings.valid_rows)
    return train, valid


def train_recommender(
    method: str,
    settings: RecSettings,
    files: CategoryFiles | None,
    catalogue: Catalogue,
    out_dir: str | Path,
    resume_from: str | Path | None = None,
    on_epoch: EpochCallback | None = None,
    train: pd.DataFrame | None = None,
    valid: pd.DataFrame | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> TrainResult:
    """Train ``method`` on the train split, select on valid, checkpoint to ``out_dir`` (see module docstring).

    ``on_epoch(epoch, metrics)`` is called after every epoch with ``loss``, ``seconds`` (training time) and,
    after an evaluation, ``valid_HR@10``, ``valid_NDCG@20``, ... and ``best_valid_NDCG@20``; an exception it
    raises ends the run (the checkpoint of that epoch is already written). ``train`` / ``valid``: frames to
    use instead of reading ``files``. ``device``: where the model and the batches live (data order and BCE
    negatives still come from the run's CPU generator; an exact resume is checked on CPU only, since CUDA's
    dropout RNG is not in the checkpoint).
    """
    if settings.method != method:
        raise SettingsError(f"settings are for {settings.method}, not {method}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train, valid = _frames(files, train, valid, settings)
    num_items = num_items_of(catalogue)
    train_seq = Sequences.from_frame(train, num_items, settings.max_len)
    valid_seq = Sequences.from_frame(valid, num_items, settings.max_len)

    train_seq = train_seq.to(device)
    generator = seed_everything(settings.seed)
    model = build(method, num_items, settings, catalogue).to(device)
    optimizer = make_optimizer(model, settings)
    history: list[dict] = []
    best_state, best_metrics, best_epoch, best_value, bad_evals, start = None, {}, 0, -math.inf, 0, 1

    if resume_from is not None:
        state = torch.load(Path(resume_from) / CHECKPOINT, map_location="cpu", weights_only=False)
        if state.get("format") != FORMAT or state.get("method") != method:
            raise ResumeError(f"{resume_from}: a checkpoint of {state.get('method')!r}, not {method!r}")
        saved = RecSettings(**state["settings"])
        if saved.run_key() != settings.run_key():
            differ = {k: (v, settings.run_key()[k]) for k, v in saved.run_key().items() if settings.run_key()[k] != v}
            raise ResumeError(f"{resume_from}: settings differ from the checkpoint's (saved, given): {differ}")
        if state["train_rows"] != len(train_seq) or state["num_items"] != num_items:
            raise ResumeError(f"{resume_from}: trained on {state['train_rows']} rows of {state['num_items']} items, "
                              f"not {len(train_seq)} of {num_items}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"], generator)
        history, best_state, best_metrics = state["history"], state["best_state"], state["best_metrics"]
        best_epoch, best_value, bad_evals = state["best_epoch"], state["best_value"], state["bad_evals"]
        start = state["epoch"] + 1

    progress_bar = _Progress(method, start, settings.epochs, enabled=progress)
    train_seconds: list[float] = []
    stopped_early = bad_evals > settings.patience
    epoch = start - 1
    try:
        for epoch in range(start, settings.epochs + 1):
            if stopped_early:  # a resumed run that had already stopped
                epoch -= 1
                break
            began = time.perf_counter()
            model.train()
            order = torch.randperm(len(train_seq), generator=generator).to(device)
            total, count = 0.0, 0
            for index in order.split(settings.batch_size):
                batch = train_seq.subset(index)
                optimizer.zero_grad()
                loss = batch_loss(model, batch, settings, generator)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(index)
                count += len(index)
            seconds = time.perf_counter() - began
            train_seconds.append(seconds)
            record = {"epoch": epoch, "loss": total / max(count, 1), "seconds": seconds}

            if epoch % settings.eval_every == 0 or epoch == settings.epochs:
                began = time.perf_counter()
                metrics = evaluate(model, valid_seq, settings, catalogue)
                record["eval_seconds"] = time.perf_counter() - began
                record.update({f"valid_{name}": value for name, value in metrics.items()})
                if metrics[SELECT] > best_value:
                    best_value, best_epoch, best_metrics, bad_evals = metrics[SELECT], epoch, metrics, 0
                    best_state = copy.deepcopy(model.state_dict())
                    _save(out_dir / BEST, {"format": FORMAT, "method": method, "settings": settings.to_dict(),
                                           "num_items": num_items, "epoch": epoch, "metrics": metrics,
                                           "state_dict": best_state})
                else:
                    bad_evals += 1
                record[f"best_valid_{SELECT}"] = best_value
                history.append(record)
                stopped_early = bad_evals > settings.patience
                _save(out_dir / CHECKPOINT, {
                    "format": FORMAT, "method": method, "settings": settings.to_dict(), "epoch": epoch,
                    "num_items": num_items, "train_rows": len(train_seq),
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "best_state": best_state, "best_metrics": best_metrics, "best_epoch": best_epoch,
                    "best_value": best_value, "bad_evals": bad_evals, "history": history,
                    "rng": _rng_state(generator),
                })
            else:
                history.append(record)
            progress_bar.update(epoch, record)
            if on_epoch is not None:
                on_epoch(epoch, dict(record))
            if stopped_early:
                break
    finally:
        progress_bar.close()

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(method=method, settings=settings, model=model, history=history, best_epoch=best_epoch,
                       best_metrics=best_metrics, epochs_run=epoch if history else start - 1,
                       stopped_early=stopped_early, out_dir=out_dir, train_rows=len(train_seq),
                       train_seconds=train_seconds)


def load_model(path: str | Path, catalogue: Catalogue) -> nn.Module:
    """The model saved in ``best.pt`` (a file, or the run folder holding it), in eval mode."""
    path = Path(path)
    if path.is_dir():
        path = path / BEST
    state = torch.load(path, map_location="cpu", weights_only=False)
    settings = RecSettings(**state["settings"])
    model = build(state["method"], state["num_items"], settings, catalogue)
    model.load_state_dict(state["state_dict"])
    return model.eval()
