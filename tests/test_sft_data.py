"""The SFT sets: template wording against docs/upstream.md 4.3, sample counts, masking, truncation, shuffling.

Expected strings are copied from docs/upstream.md section 4.3 (``␠`` there is the trailing space written here).
"""

from __future__ import annotations

import json
import random

import pytest

from minirec.data import Catalogue, read_split
from minirec.sft.data import (
    IGNORE_INDEX,
    SFTDataError,
    TaskOptions,
    alignment_prompts,
    build_datasets,
    encode_prompts,
    sid_history_prompts,
    task_prompts,
)

from conftest import INDUSTRIAL

# docs/upstream.md 4.3: PRE(instr) and BODY(inp, out)
PRE = ("Below is an instruction that describes a task, paired with an input that provides further context. "
       "Write a response that appropriately completes the request. \n\n### Instruction:\n{instr}\n\n")
BODY = "### User Input: \n{inp}\n\n### Response:\n{out}"
CATEGORY = "industrial and scientific items"
TITLE_TEMPLATES = [
    "Given a list of {c} the user recetenly enjoy, please write a new {c} that the user may bought",
    "Considering the {c} that has recently captured the user's interest, kindly create a compilation of other {c} that the user might have played prior to this.",
    "Based on the user's current gaming preference, please draft a list of potential {c} they may have experienced beforehand.",
    "Reflecting on the {c} the user has taken pleasure in recently, we request that you formulate a list of {c} that may have preceded the user's current enjoyment.",
    "In light of the recent gaming enjoyment expressed by the user, please assemble a list of {c} that could potentially include past titles the user has engaged with.",
    "Taking into account the {c} that has lately provided enjoyment to the user, please put together an inventory of {c} the user might have explored previously.",
    "Given the user's newfound enjoyment of a particular {c}, would you kindly generate a roster of other {c} that might resonate with their past gaming experiences?",
    "In response to the user's recent fondness for a specific {c}, we seek your assistance in listing possible {c} the user may have delighted in earlier.",
    "With respect to the {c} currently enjoyed by the user, please compile a suggestive list of {c} they may have played in the past.",
    "Bearing in mind the {c} that the user has recently been enthralled by, please construct a catalog of other {c} that the user potentially partook in beforehand.",
    "In relation to the user's recent entertainment with a given {c}, it would be appreciated if you could curate a list of {c} that might form part of the user's previous gaming history.",
]


@pytest.fixture(scope="module")
def catalogue(industrial_files):
    return Catalogue.load(industrial_files)


@pytest.fixture(scope="module")
def train(industrial_files):
    return read_split(industrial_files.train).head(30)


@pytest.fixture(scope="module")
def tokenizer(catalogue):
    """A real byte-level BPE tokenizer (the tiny model's recipe) trained on item titles, with SID tokens."""
    from minirec.models import add_sid_tokens
    from minirec.tiny_model import train_tokenizer

    tok = train_tokenizer(catalogue.title(item) for item in sorted(catalogue.items))
    add_sid_tokens(tok, None, catalogue)
    return tok


def _prompts(task, train, files, catalogue, quirks=False):
    return task_prompts(task, train, files.train, catalogue, TaskOptions(INDUSTRIAL, upstream_quirks=quirks))


def test_task_templates_match_the_spec_wording(train, industrial_files, catalogue):
    row = train.iloc[3]
    sids, titles = row["history_item_sid_list"], row["history_item_title_list"]
    h_sid = ", ".join(sids)
    expected = {
        "sid_history": (
            PRE.format(instr="Can you predict the next possible item that the user may expect?"),
            BODY.format(inp=f"The user has interacted with items {h_sid} in chronological order. Can you predict "
                            "the next possible item that the user may expect?", out=""),
            f"{row['item_sid']}\n"),
        "sid_history_to_title": (
            PRE.format(instr="Can you recommend the next item for the user based on their interaction history?"),
            BODY.format(inp=f"The user has sequentially interacted with items {h_sid}. Can you recommend the next "
                            "item for him? Tell me the title of the item", out=""),
            f"{catalogue.title(int(row['item_id']))}\n"),
        "title_history_to_sid": (
            PRE.format(instr="Based on the user's historical interaction with item titles, predict the semantic ID "
                             "of the next item they may expect."),
            BODY.format(inp=f"The user has interacted with the following {CATEGORY} items in chronological order: "
                            + ", ".join(f'"{t}"' for t in titles) + ". Can you predict the next item the user may expect?",
                        out=""),
            f"{row['item_sid']}\n"),
    }
    for task, (pre, body, target) in expected.items():
        prompt = _prompts(task, train, industrial_files, catalogue)[3]
        assert (prompt.preamble, prompt.body, prompt.target) == (pre, body, target), task
    assert "items items in chronological order" in expected["title_history_to_sid"][1]  # upstream's "items items"


def test_title_history_task_draws_instructions_with_random_42_in_row_order(train, industrial_files, catalogue):
    rng = random.Random(42)
    prompts = _prompts("title_history_to_title", train, industrial_files, catalogue)
    for (_, row), prompt in zip(train.iterrows(), prompts):
        instr = TITLE_TEMPLATES[rng.randint(0, 10)].format(c=CATEGORY)
        titles = ",\t".join(f'"{t}"' for t in row["history_item_title_list"])
        assert prompt.preamble == PRE.format(instr=instr).replace(f"{instr}\n\n", f"{instr}\n \n")
        assert prompt.body == BODY.format(inp=f"The user has palyed the following {CATEGORY}s before: {titles}", out="")
        assert prompt.target == f'"{row["item_title"]}"\n'
    assert len({p.preamble for p in prompts}) > 5  # several of the eleven instructions are in use


def test_alignment_counts_and_collision_rule_are_upstreams(industrial_files, catalogue):
    index = json.loads(industrial_files.index.read_text())
    items = json.loads(industrial_files.items.read_text())
    prompts = alignment_prompts(catalogue, TaskOptions(INDUSTRIAL))
    sid2title = [p for p in prompts if p.body.startswith("### User Input: \nWhat is the title of item")]
    title2sid = [p for p in prompts if p.body.startswith("### User Input: \nWhich item has the title:")]
    assert (len(sid2title), len(title2sid)) == (3670, 3646)  # docs/upstream.md 1.6, measured upstream
    assert prompts[:3670] == sid2title  # sid2title first, then title2sid (data.py order)
    # A SID shared by several items: its one sample sits at the first item's place and names the last item.
    shared = {}
    for item_id, tokens in index.items():
        shared.setdefault("".join(tokens), []).append(item_id)
    group = next(ids for ids in shared.values() if len(ids) > 1 and items[ids[0]]["title"] != items[ids[-1]]["title"])
    sid = "".join(index[group[0]])
    sample = next(p for p in sid2title if f'"{sid}"' in p.body)
    assert sample.target == items[group[-1]]["title"] + "\n"
    first_positions = list(dict.fromkeys("".join(tokens) for tokens in index.values()))
    assert sid2title.index(sample) == first_positions.index(sid)


def test_alignment_answer_leak_only_with_upstream_quirks(catalogue):
    fixed = alignment_prompts(catalogue, TaskOptions(INDUSTRIAL))
    leaky = alignment_prompts(catalogue, TaskOptions(INDUSTRIAL, upstream_quirks=True))
    assert all(p.body.endswith("### Response:\n") for p in fixed)
    # docs/upstream.md 8.1 A: "…### Response:\n{answer}" and the target repeats the answer
    assert all(p.body.endswith("### Response:\n" + p.target[:-1]) for p in leaky)
    assert [p.target for p in fixed] == [p.target for p in leaky]


def test_encoding_masks_the_prompt_and_supervises_target_and_eos(tokenizer, train, industrial_files):
    prompt = sid_history_prompts(train, industrial_files.train)[5]
    encoded = encode_prompts(tokenizer, [prompt], cutoff_len=512)
    ids, mask, labels = encoded["input_ids"][0], encoded["attention_mask"][0], encoded["labels"][0]
    head = tokenizer(prompt.preamble, add_special_tokens=False).input_ids + tokenizer(prompt.body, add_special_tokens=False).input_ids
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    answer = tokenizer.convert_tokens_to_ids(split_sid_tokens(prompt.target)) + tokenizer("\n", add_special_tokens=False).input_ids
    assert ids == bos + head + answer + [tokenizer.eos_token_id]
    assert labels == [IGNORE_INDEX] * len(bos + head) + answer + [tokenizer.eos_token_id]
    assert mask == [1] * len(ids)
    assert tokenizer.decode([t for t in labels if t != IGNORE_INDEX][:3]) == prompt.target[:-1]


def split_sid_tokens(text):
    from minirec.sid import split_sid

    return split_sid(text)


def test_truncation_keeps_the_last_tokens_of_ids_mask_and_labels(tokenizer, train, industrial_files):
    prompt = sid_history_prompts(train, industrial_files.train)[7]
    full = encode_prompts(tokenizer, [prompt], cutoff_len=10_000)
    cut = encode_prompts(tokenizer, [prompt], cutoff_len=12)
    for key in ("input_ids", "attention_mask", "labels"):
        assert len(full[key][0]) > 12
        assert cut[key][0] == full[key][0][-12:]
    assert cut["labels"][0][-1] == tokenizer.eos_token_id


def test_datasets_are_shuffled_with_seed_42_whatever_the_run_seed(tokenizer, industrial_files, catalogue):
    options = dict(tasks=("sid_history", "title_history_to_sid"), sample=40, valid_sample=16, cutoff_len=512)
    first = build_datasets(tokenizer, industrial_files, catalogue, seed=1, **options)
    again = build_datasets(tokenizer, industrial_files, catalogue, seed=1, **options)
    reseeded = build_datasets(tokenizer, industrial_files, catalogue, seed=1, shuffle_seed=7, **options)
    assert first.task_counts == {"sid_history": 40, "title_history_to_sid": 40}
    assert len(first.train) == 80 and len(first.valid) == 16
    assert first.train["input_ids"] == again.train["input_ids"]
    assert first.train["input_ids"] != reseeded.train["input_ids"]
    assert sorted(map(tuple, first.train["input_ids"])) == sorted(map(tuple, reseeded.train["input_ids"]))
    # Both tasks are interleaved, not concatenated in order.
    kinds = [tokenizer.decode(ids).count("semantic ID") > 0 for ids in first.train["input_ids"]]
    assert kinds != sorted(kinds) and kinds != sorted(kinds, reverse=True)


def test_a_broken_history_cell_names_file_row_and_field(tmp_path, industrial_files):
    frame = read_split(industrial_files.valid).head(5)
    frame.loc[3, "history_item_sid"] = "['<a_1><b_2><c_3>'"
    broken = tmp_path / "broken.csv"
    frame.drop(columns=[c for c in frame.columns if c.endswith("_list")]).to_csv(broken, index=False)
    with pytest.raises(SFTDataError, match=r"broken\.csv: data row 3, field 'history_item_sid'"):
        sid_history_prompts(read_split(broken), broken)
