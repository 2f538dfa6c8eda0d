"""Library choice for the SASRec baseline: our upstream-faithful SASRec vs cornac 3.0.1's, same data, same epochs.

    .venv/bin/python bench/bench_recsys_library.py --cornac-python /tmp/cornac-venv/bin/python \
        [--epochs 70 --threads 1 --cornac-loss bce,ce] [--record]

cornac must live in its own throwaway venv (never in the project's), for example::

    python3.11 -m venv /tmp/cornac-venv && /tmp/cornac-venv/bin/pip install torch==2.13.0 cornac==3.0.1

One run measures both, one after the other, on Industrial's bundled (partial) train split:

- ours: :func:`minirec.recsys.train_recommender` with ``configs/baselines/sasrec.yaml`` (upstream's settings),
  ``--epochs`` epochs and one valid evaluation at the end (no early stop), then :func:`rank_split` on test;
- cornac: ``cornac.models.SASRec`` with the same hyper-parameters where its API has them (embedding 32, one
  block, one head, dropout 0.3, histories of 10, batch 1,024, lr 1e-3, seed 1) and its own defaults elsewhere
  (2,048 popularity-sampled negatives per batch shared with the in-batch ones, Adam betas 0.9/0.98, no weight
  decay, tied dot-product output), fitted for ``--epochs`` epochs in a subprocess run by ``--cornac-python``,
  once per ``--cornac-loss``: ``bce`` (the kind of loss upstream uses) and ``ce`` (cornac's default). cornac trains on sessions and makes a sample of every prefix, so it gets each user's
  longest train rows as sessions (every train row is one of their prefixes; windowed sample rows add a few
  prefixes of their own): its epoch holds more samples, reported beside the time.

Both sides' test rankings go through the same code: the (rows x items) score matrix -> 50 distinct SIDs
(:func:`minirec.recsys.rank_scores`) -> :func:`minirec.score.score_predictions`. Seconds per epoch are training
only (no evaluation); cornac's is its ``fit`` time divided by the epochs. ``--record`` appends a section to
``bench/RESULTS.md``; when cornac cannot be run, the section says what failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

CATEGORY = "Industrial_and_Scientific"
RESULTS = Path(__file__).with_name("RESULTS.md")
CORNAC = dict(embedding_dim=32, num_blocks=1, num_heads=1, dropout=0.3, max_len=10, batch_size=1024,
              learning_rate=1e-3, seed=1)


# -- the cornac side: runs under the other venv's python, imports neither minirec nor pandas ------------------------

def cornac_worker(folder: Path) -> None:
    from collections import OrderedDict

    import numpy as np
    import torch
    from cornac.data import SequentialDataset
    from cornac.models import SASRec

    job = json.loads((folder / "job.json").read_text())
    num_items, epochs = job["num_items"], job["epochs"]
    torch.set_num_threads(job["threads"])
    data = [(f"s{index}", item, position) for index, session in enumerate(job["sessions"])
            for position, item in enumerate(session)]
    item_map = OrderedDict((item, item) for item in range(num_items))  # cornac's index == our item id
    train_set = SequentialDataset.build(data, fmt="SIT", global_iid_map=item_map, seed=CORNAC["seed"])
    assert train_set.num_items == num_items and all(train_set.iid_map[i] == i for i in range(num_items))
    model = SASRec(n_epochs=epochs, verbose=False, loss=job["loss"], **CORNAC)
    began = time.perf_counter()
    model.fit(train_set)
    fit_seconds = time.perf_counter() - began
    # cornac's score() left-pads one history at a time; the same encoding, batched.
    net, pad, width = model.model, model.pad_idx, CORNAC["max_len"]
    net.eval()
    rows = []
    for history in job["test_histories"]:
        history = history[-width:]
        rows.append([pad] * (width - len(history)) + history)
    scores = np.empty((len(rows), num_items), dtype=np.float32)
    with torch.no_grad():
        items = net.item_emb(torch.arange(num_items))
        biases = net.item_biases(torch.arange(num_items)) if hasattr(net, "item_biases") else None
        for start in range(0, len(rows), 1024):
            hidden = net._encode(torch.tensor(rows[start:start + 1024]))
            scores[start:start + 1024] = net._score_items(hidden, items, biases).numpy()
    np.save(folder / "scores.npy", scores)
    triples = sum(len(session) - 1 for session in job["sessions"])
    (folder / "result.json").write_text(json.dumps({
        "fit_seconds": fit_seconds, "seconds_per_epoch": fit_seconds / epochs, "train_samples": triples,
        "cornac": __import__("cornac").__version__, "torch": torch.__version__,
        "parameters": sum(p.numel() for p in net.parameters())}))


# -- the parent: our side, the subprocess, scoring ----------------------------------------------------------------

def sessions_of(train) -> list[list[int]]:
    """Each user's train rows (history + target) that are no prefix of a longer row of the same user."""
    by_user: dict[str, set[tuple[int, ...]]] = {}
    for user, history, target in zip(train["user_id"], train["history_item_id_list"], train["item_id"]):
        by_user.setdefault(user, set()).add(tuple(int(i) for i in history) + (int(target),))
    sessions = []
    for user in sorted(by_user):
        rows = by_user[user]
        prefixes = {row[:cut] for row in rows for cut in range(1, len(row))}
        sessions.extend(list(row) for row in sorted(rows) if row not in prefixes)
    return sessions


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cornac-python", default="/tmp/cornac-venv/bin/python")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads on both sides (0: torch's default)")
    parser.add_argument("--cornac-loss", default="bce,ce",
                        help="cornac losses to run, comma-separated: bce is upstream's kind, ce cornac's default")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--cornac-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cornac_worker:
        cornac_worker(args.cornac_worker)
        return 0

    import numpy as np
    import torch

    from minirec.data import Catalogue, locate, read_split
    from minirec.recsys import load_settings, rank_scores, rank_split, train_recommender
    from minirec.recsys.rank import SidTable
    from minirec.score import score_predictions

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    files = locate(CATEGORY)
    catalogue = Catalogue.load(files)
    train, test = read_split(files.train), read_split(files.test)
    num_items = len(catalogue.item_sid)
    load_before = os.getloadavg()
    lines = [f"Industrial partial train ({len(train):,} rows), test {len(test):,} rows, {args.epochs} epochs each, "
             f"{threads} torch thread(s); test HR@10 / NDCG@10 of 50 distinct SIDs (score_predictions)"]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        settings = load_settings("sasrec", overrides={"epochs": args.epochs, "eval_every": args.epochs})
        began = time.perf_counter()
        ours = train_recommender("sasrec", settings, files, catalogue, tmp / "ours", progress=False)
        ours_total = time.perf_counter() - began
        ours_scores = score_predictions(rank_split(ours.model, test, catalogue), catalogue, n_boot=200)
        params = sum(p.numel() for p in ours.model.parameters())
        lines.append(f"  ours    (minirec.recsys.sasrec)  {ours.seconds_per_epoch:7.2f} s/epoch over {len(train):,} "
                     f"samples ({1000 * ours.seconds_per_epoch / len(train):.3f} s per 1k)  test HR@10 "
                     f"{ours_scores['HR@10']:.4f} NDCG@10 {ours_scores['NDCG@10']:.4f}  ({params:,} parameters; "
                     f"{ours_total:.0f} s with the final valid evaluation)")

        sessions = sessions_of(train)
        for loss in [part.strip() for part in args.cornac_loss.split(",") if part.strip()]:
            job = tmp / f"cornac-{loss}"
            job.mkdir()
            (job / "job.json").write_text(json.dumps({
                "num_items": num_items, "epochs": args.epochs, "loss": loss, "threads": threads, "sessions": sessions,
                "test_histories": [[int(i) for i in h] for h in test["history_item_id_list"]]}))
            command = [args.cornac_python, str(Path(__file__).resolve()), "--cornac-worker", str(job)]
            began = time.perf_counter()
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=3 * 3600)
                failure = None if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()[-2000:]}"
            except (OSError, subprocess.TimeoutExpired) as error:
                failure = f"{type(error).__name__}: {error}"
            cornac_wall = time.perf_counter() - began
            if failure is None:
                result = json.loads((job / "result.json").read_text())
                scores = torch.from_numpy(np.load(job / "scores.npy"))
                predict, values = rank_scores(scores, SidTable.of(catalogue), 50)
                import pandas as pd

                frame = pd.DataFrame({"row": range(len(test)), "user_id": test["user_id"].to_numpy(),
                                      "target": test["item_sid"].to_numpy(), "predict": predict, "scores": values})
                theirs = score_predictions(frame, catalogue, n_boot=200)
                lines.append(
                    f"  cornac  {result['cornac']} SASRec {loss:<4}      {result['seconds_per_epoch']:7.2f} s/epoch over "
                    f"{result['train_samples']:,} samples ({1000 * result['seconds_per_epoch'] / result['train_samples']:.3f}"
                    f" s per 1k)  test HR@10 {theirs['HR@10']:.4f} NDCG@10 {theirs['NDCG@10']:.4f}  "
                    f"({result['parameters']:,} parameters; subprocess {cornac_wall:.0f} s)")
                lines.append(f"  cornac {loss} / ours, seconds per epoch: {result['seconds_per_epoch'] / ours.seconds_per_epoch:.1f}x; "
                             f"per 1k samples: {(result['seconds_per_epoch'] / result['train_samples']) / (ours.seconds_per_epoch / len(train)):.1f}x")
            else:
                lines.append(f"  cornac {loss}: could not be run ({' '.join(command[:2])} ...): {failure}")
    load_after = os.getloadavg()
    lines.append(f"  load average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    report = "\n".join(lines)
    print(report)
    if args.record:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        command = (f"python bench/bench_recsys_library.py --cornac-python {args.cornac_python} --epochs {args.epochs} "
                   f"--threads {args.threads} --cornac-loss {args.cornac_loss}")
        section = (f"\n## SASRec library choice: ours vs cornac ({stamp})\n\n`{command} --record` on "
                   f"{platform.machine()} CPU, {threads} torch thread(s) (machine shared with other work)\n\n"
                   f"```\n{report}\n```\n")
        with RESULTS.open("a", encoding="utf-8") as out:  # append only: others append too
            out.write(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
