"""``python -m minirec.prompts dump``: the exact prompt and target strings a profile trains, evaluates and rolls out.

    python -m minirec.prompts dump --category Industrial_and_Scientific --split valid --rows 40 --items 80 \\
        --upstream paper-release --out prompts-paper-release.json
    python -m minirec.prompts dump --category Office_Products --split train --upstream none --quirks alignment_leak \\
        --out prompts.json

Writes one JSON object (atomically, :mod:`minirec.atomic`) ``{task: [{"prompt": ..., "target": ...}, ...]}``, with
``"completion"`` instead of ``"target"`` for the RL tasks (their dataset column), for these tasks:

| task | upstream class (docs/upstream.md) | rows shown |
| --- | --- | --- |
| ``sft_sid_history_to_sid`` | ``SidSFTDataset`` (4.3, task 1) | first N rows of the split |
| ``sft_sid_history_to_title`` | ``FusionSeqRecDataset`` (task 3) | first N rows |
| ``sft_title_history_to_sid`` | ``TitleHistory2SidSFTDataset`` (task 5) | first N rows |
| ``sft_title_history_to_title`` | ``SFTData`` (task 4), instructions drawn in row order | first N rows |
| ``sft_item_alignment`` | ``SidItemFeatDataset`` (task 2): sid->title rows, then title->sid rows | the first M items |
| ``eval_test_prompt`` | ``EvalSidDataset(test=True)`` (6.2) | first N rows |
| ``rl_sid_history`` | ``SidDataset`` (5.3) | first N rows |
| ``rl_title_to_sid`` | ``RLTitle2SidDataset``: title->SID rows, then description->SID rows | the first M items |
| ``rl_title_history_to_sid`` | ``RLSeqTitle2SidDataset(sample=10000)``, in its sampled order | first N sampled rows |

Each list is in upstream's dataset order. A split-based task shows the first N entries of the dataset built on the
whole split (so the task-4 instruction draws and the title-history sample are upstream's). An item-based task
(alignment) shows the entries whose key one of the first M items of ``index.json`` put in place, in upstream's
order and with the strings of the whole catalogue (a SID or title shared by several items names the last one, as
upstream's dicts do). ``prompt`` is the whole prompt (SFT and evaluation: the preamble and the body, which upstream
tokenises separately, joined); ``target`` / ``completion`` excludes the EOS that SFT appends.

The profile decides the strings (``--upstream``, ``--quirks``: :mod:`minirec.upstream`). A task the profile does
not train is an empty list (``2026-02``'s SFT tasks 4 and 5). The title-history draw on a split with fewer than
10,000 rows (every valid and test split, Office's partial train) is one upstream cannot make: upstream raises there
(``rl_sample_raises``); the dump shows the harness's fallback, every row in the seeded order of ``sample(len,
random_state=0)``, and says so on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from minirec import prompts
from minirec.errors import UserError

DUMP_TASKS = ("sft_sid_history_to_sid", "sft_sid_history_to_title", "sft_title_history_to_sid",
              "sft_title_history_to_title", "sft_item_alignment", "eval_test_prompt", "rl_sid_history",
              "rl_title_to_sid", "rl_title_history_to_sid")
SFT_TASK_OF = {"sft_sid_history_to_sid": "sid_history", "sft_sid_history_to_title": "sid_history_to_title",
               "sft_title_history_to_sid": "title_history_to_sid",
               "sft_title_history_to_title": "title_history_to_title",
               "sft_item_alignment": "item_alignment"}


def _sft(samples: Sequence[prompts.Prompt]) -> list[dict]:
    return [{"prompt": sample.text, "target": sample.target} for sample in samples]


def _rl(rows: Sequence[dict]) -> list[dict]:
    return [{"prompt": row["prompt"], "completion": row["target"]} for row in rows]


def dump_prompts(category: str, split: str = "valid", rows: int = 40, items: int = 80, upstream: str = "none",
                 quirks: Sequence[str] = (), data_dir: str | None = None, notices: list[str] | None = None) -> dict:
    """The nine tasks' ``{task: [entries]}`` for a profile (see the module docstring); ``notices`` collects what
    the dump could not show as upstream would have it."""
    from minirec.data import Catalogue, locate, read_split
    from minirec.grpo.data import (TITLE_HISTORY_SAMPLE, RlPromptOptions, alignment_rows, sid_history_rows,
                                   title_history_rows, title_history_shortfall)
    from minirec.sft.data import TASKS, TaskOptions, alignment_prompts, task_prompts, trained_tasks
    from minirec.upstream import resolve_quirks

    notices = [] if notices is None else notices
    on = resolve_quirks(upstream, quirks)
    files = locate(category, data_dir or None)
    catalogue = Catalogue.load(files)
    path = files.split(split)
    frame = read_split(path)
    head = frame.head(rows)
    options = TaskOptions.from_quirks(category, on)
    trained = trained_tasks(TASKS, on)
    out: dict[str, list[dict]] = {}
    for name, task in SFT_TASK_OF.items():
        if task not in trained:
            out[name] = []
            notices.append(f"{name}: not trained under this profile (sft_three_tasks)")
        elif task == "item_alignment":
            out[name] = _sft(alignment_prompts(catalogue, options, items=items))
        else:
            out[name] = _sft(task_prompts(task, head, path, catalogue, options))
    out["eval_test_prompt"] = _sft([prompts.test_prompt(history, target)
                                    for history, target in zip(head["history_item_sid_list"], head["item_sid"])])
    out["rl_sid_history"] = _rl(sid_history_rows(head, path))
    out["rl_title_to_sid"] = _rl(alignment_rows(catalogue, options=RlPromptOptions.from_quirks(on), items=items))
    shortfall = title_history_shortfall(len(frame), TITLE_HISTORY_SAMPLE, path, raises=False)
    if shortfall:
        raising = "rl_sample_raises" in on
        note = "; this profile's upstream raises there, so these rows are the fallback's" if raising else ""
        notices.append(shortfall.replace("title_history_to_sid:", "rl_title_history_to_sid:", 1) + note)
    drawn = title_history_rows(frame, path, min(TITLE_HISTORY_SAMPLE, len(frame)))
    out["rl_title_history_to_sid"] = _rl(drawn[:rows])
    return {task: out[task] for task in DUMP_TASKS}


def build_parser() -> argparse.ArgumentParser:
    from minirec.data import CATEGORIES
    from minirec.upstream import PROFILE_NAMES, SWITCHES

    parser = argparse.ArgumentParser(prog="python -m minirec.prompts",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    dump = commands.add_parser("dump", help="write the prompt and target strings of a profile as JSON",
                               description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dump.add_argument("--category", required=True, choices=CATEGORIES)
    dump.add_argument("--split", default="valid", choices=("train", "valid", "test"),
                      help="the split of the split-based tasks (default: valid)")
    dump.add_argument("--rows", type=int, default=40, help="first N rows of the split-based tasks (default: 40)")
    dump.add_argument("--items", type=int, default=80, help="first M items of the alignment tasks (default: 80)")
    dump.add_argument("--upstream", default="none", choices=PROFILE_NAMES, help="the profile (default: none)")
    dump.add_argument("--quirks", default="", help=f"switches on (name) or off (no_name) on top of the profile, "
                                                   f"comma-separated: {', '.join(SWITCHES)}")
    dump.add_argument("--data_dir", "--data-dir", default="", help="data directory (default: the bundled data)")
    dump.add_argument("--out", "--output", required=True, help="the JSON file to write (replaced atomically)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from minirec.atomic import write_json

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.rows < 0 or args.items < 0:
        print("python -m minirec.prompts dump: error: --rows and --items must be >= 0", file=sys.stderr)
        return 2
    notices: list[str] = []
    try:
        quirks = [part.strip() for part in args.quirks.split(",") if part.strip()]
        dumped = dump_prompts(args.category, args.split, args.rows, args.items, args.upstream, quirks,
                              args.data_dir or None, notices)
    except UserError as error:
        print(f"python -m minirec.prompts dump: error: {error}", file=sys.stderr)
        return 2
    for notice in notices:
        print(f"[prompts] note: {notice}", file=sys.stderr)
    path = write_json(Path(args.out), dumped)
    print(f"[prompts] {args.upstream} {args.category} {args.split}: "
          + ", ".join(f"{task} {len(entries)}" for task, entries in dumped.items()) + f"; written to {path}")
    return 0
