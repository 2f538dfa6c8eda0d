"""``python -m minirec.prompts dump``: the nine tasks, upstream's dataset order, and profiles that differ only where
the README's deviation table says (docs/upstream-profiles.md)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from conftest import INDUSTRIAL
from minirec.data import read_split
from minirec.prompts_dump import DUMP_TASKS, dump_prompts

COMMAND = ["-m", "minirec.prompts", "dump", "--category", INDUSTRIAL, "--split", "valid", "--rows", "40",
           "--items", "80"]


def run_dump(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run([sys.executable, *COMMAND, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd)


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    """The issue's command for paper-release (through the real command line), and none and 2026-02 in process."""
    out = tmp_path_factory.mktemp("dump") / "paper-release.json"
    out.write_text("an older file\n")
    done = run_dump("--upstream", "paper-release", "--out", out)
    assert done.returncode == 0, done.stderr
    assert "rl_title_history_to_sid" in done.stderr and "upstream raises there" in done.stderr  # said, not silent
    return {"paper-release": json.loads(out.read_text()), "folder": out.parent,
            "none": dump_prompts(INDUSTRIAL, "valid", 40, 80, "none"),
            "2026-02": dump_prompts(INDUSTRIAL, "valid", 40, 80, "2026-02")}


def test_the_command_writes_the_nine_tasks_atomically(dumps):
    paper = dumps["paper-release"]
    assert list(paper) == list(DUMP_TASKS)
    for task in DUMP_TASKS:
        field = "completion" if task.startswith("rl_") else "target"
        assert paper[task] and all(set(entry) == {"prompt", field} for entry in paper[task]), task
    split_tasks = [t for t in DUMP_TASKS if t not in ("sft_item_alignment", "rl_title_to_sid")]
    assert all(len(paper[task]) == 40 for task in split_tasks)
    assert sorted(p.name for p in dumps["folder"].iterdir()) == ["paper-release.json"]  # no staging file left


def test_none_differs_from_paper_release_only_where_the_deviation_table_says(dumps):
    """README deviation table: the SFT alignment answer leak (8.1 A), the RL title/description answer leak (8.1 B) and
    the empty-description RL prompt are prompt differences; the 3-token cut (8.1 I) changes nothing for Industrial's
    3-token SIDs; every other row of the table is about training, masking or decoding, not strings."""
    paper, none = dumps["paper-release"], dumps["none"]
    differing = {task for task in DUMP_TASKS if paper[task] != none[task]}
    assert differing == {"sft_item_alignment", "rl_title_to_sid"}
    for plain, leaky in zip(none["sft_item_alignment"], paper["sft_item_alignment"]):
        assert leaky["prompt"] == plain["prompt"] + plain["target"][:-1] and leaky["target"] == plain["target"]
    leaked = [entry for entry in paper["rl_title_to_sid"] if 'described as follows: "".' not in entry["prompt"]]
    assert len(leaked) == len(none["rl_title_to_sid"]) == len(paper["rl_title_to_sid"]) - 1
    for plain, leaky in zip(none["rl_title_to_sid"], leaked):
        assert leaky["prompt"] == plain["prompt"] + plain["completion"][:-1]


def test_2026_02_differs_from_none_by_its_three_sft_tasks_and_the_empty_description(dumps):
    current, none = dumps["2026-02"], dumps["none"]
    differing = {task for task in DUMP_TASKS if current[task] != none[task]}
    assert differing == {"sft_title_history_to_title", "sft_title_history_to_sid", "rl_title_to_sid"}
    assert current["sft_title_history_to_title"] == current["sft_title_history_to_sid"] == []
    extra = [entry for entry in current["rl_title_to_sid"] if entry not in none["rl_title_to_sid"]]
    assert len(extra) == 1 and extra[0]["prompt"].endswith('described as follows: "". Which item is it describing?'
                                                           "\n\n### Response:\n")
    assert current["sft_item_alignment"] == none["sft_item_alignment"]  # leak-free since 2025-12-01


def test_entries_are_in_upstreams_dataset_order(dumps, industrial_files):
    paper = dumps["paper-release"]
    frame = read_split(industrial_files.valid)
    # SFTData: one instruction per row, drawn with random.randint(0, 10) after random.seed(42), in row order.
    from minirec.prompts import TITLE_HISTORY_INSTRUCTIONS, category_text

    rng = random.Random(42)
    for entry in paper["sft_title_history_to_title"]:
        instruction = TITLE_HISTORY_INSTRUCTIONS[rng.randint(0, 10)].format(c=category_text(INDUSTRIAL))
        assert f"### Instruction:\n{instruction}\n \n" in entry["prompt"]
    # RLSeqTitle2SidDataset: DataFrame.sample(random_state=0) order (every row of the smaller valid split).
    drawn = frame.sample(len(frame), random_state=0).head(40)
    assert [entry["completion"] for entry in paper["rl_title_history_to_sid"]] == [f"{s}\n" for s in drawn["item_sid"]]
    # SidSFTDataset and the test prompt: file order.
    assert [entry["target"] for entry in paper["sft_sid_history_to_sid"]] == [f"{s}\n" for s in frame["item_sid"][:40]]
    assert all(entry["prompt"].startswith("Below is an instruction") for entry in paper["eval_test_prompt"])
    # SidItemFeatDataset: every sid->title sample, then every title->sid sample.
    kinds = ["title" if "Which item has the title" in entry["prompt"] else "sid"
             for entry in paper["sft_item_alignment"]]
    assert kinds == sorted(kinds, key=lambda kind: kind == "title") and {"sid", "title"} == set(kinds)
    first = paper["sft_item_alignment"][0]
    assert first["target"] == "SUPCO SPP6 Relay/Capacitor Hard Start Kit with 500% Increase Starting Torque\n"
    assert first["prompt"].endswith('"<a_236><b_231><c_226>"?\n\n### Response:\n' + first["target"][:-1])


def test_a_bad_switch_is_one_line_and_exit_status_2(tmp_path):
    done = run_dump("--upstream", "none", "--quirks", "alignment", "--out", tmp_path / "x.json")
    assert done.returncode == 2
    assert "error: quirks: unknown switch 'alignment'" in done.stderr and not (tmp_path / "x.json").exists()
