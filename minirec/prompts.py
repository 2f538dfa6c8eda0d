"""Every prompt template of the harness: SFT tasks, GRPO prompts and the evaluation prompt.

The wording is upstream's, character for character, typos included (docs/upstream.md 4.3, 5.3, 6.2).
A prompt has two parts because upstream tokenises them separately and concatenates the ids
(docs/upstream.md 4.2, 6.2): the instruction preamble and the body. RL prompts have no preamble (docs/upstream.md 8.2).

Two upstream answer leaks live here behind ``leak_answer`` (off by default; on with the upstream switches
``alignment_leak`` and ``rl_answer_leak`` of :mod:`minirec.upstream`, both in the ``paper-release`` profile):
the SFT alignment task puts the answer after ``### Response:`` (docs/upstream.md 8.1 A), and so do the RL title->SID and
description->SID prompts (docs/upstream.md 8.1 B). Upstream removed both on 2025-12-01; every other string is the
same in both upstream versions (docs/upstream-revisions-notes.md 1).

    python -m minirec.prompts dump --category Industrial_and_Scientific --split valid --rows 40 --items 80 \
        --upstream paper-release --out FILE

writes the strings a profile produces for every task, as JSON (:mod:`minirec.prompts_dump`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

CATEGORY_TEXT = {
    "Industrial_and_Scientific": "industrial and scientific items",
    "Office_Products": "office products",
}

_PREAMBLE = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request. \n\n### Instruction:\n{instruction}{end}"
)
_BODY = "### User Input: \n{user_input}\n\n### Response:\n{response}"

SID_NEXT_INSTRUCTION = "Can you predict the next possible item that the user may expect?"
ALIGNMENT_INSTRUCTION = "Answer the question about item identification."
SID_TO_TITLE_INSTRUCTION = "Can you recommend the next item for the user based on their interaction history?"
TITLES_TO_SID_INSTRUCTION = (
    "Based on the user's historical interaction with item titles, predict the semantic ID of the next item "
    "they may expect."
)
# SFTData's eleven instructions (data.py:51-61); "{c}" is the category text.
TITLE_HISTORY_INSTRUCTIONS = (
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
)


@dataclass(frozen=True)
class Prompt:
    """One training or evaluation example: ``preamble + body`` is the prompt, ``target`` the supervised text.

    ``target`` excludes EOS (the tokenizing code appends it).
    """

    preamble: str
    body: str
    target: str

    @property
    def text(self) -> str:
        return self.preamble + self.body


def category_text(category: str) -> str:
    """The category phrase used inside prompts (sft.py:122, rl.py:74, evaluate.py:55)."""
    try:
        return CATEGORY_TEXT[category]
    except KeyError:
        raise ValueError(f"no prompt text for category {category!r}; known: {', '.join(CATEGORY_TEXT)}") from None


def preamble(instruction: str, end: str = "\n\n") -> str:
    """``PRE(instr)`` of docs/upstream.md 4.3."""
    return _PREAMBLE.format(instruction=instruction, end=end)


def body(user_input: str, response: str = "") -> str:
    """``BODY(inp, out)`` of docs/upstream.md 4.3."""
    return _BODY.format(user_input=user_input, response=response)


def _join_sids(history_sids: Sequence[str]) -> str:
    return ", ".join(history_sids)


def _quoted(titles: Sequence[str], separator: str) -> str:
    return separator.join(f'"{title}"' for title in titles)


def _sid_history_input(history_sids: Sequence[str]) -> str:
    return (
        f"The user has interacted with items {_join_sids(history_sids)} in chronological order. "
        "Can you predict the next possible item that the user may expect?"
    )


# --- SFT tasks (docs/upstream.md 4.3) -------------------------------------------------------------------------


def sft_sid_history(history_sids: Sequence[str], target_sid: str) -> Prompt:
    """Task 1, SidSFTDataset: history SIDs -> next SID."""
    return Prompt(preamble(SID_NEXT_INSTRUCTION), body(_sid_history_input(history_sids)), f"{target_sid}\n")


def sft_title_to_sid(title: str, sid: str, leak_answer: bool = False) -> Prompt:
    """Task 2a, SidItemFeatDataset title2sid (the leak, docs/upstream.md 8.1 A, only with ``leak_answer``)."""
    user_input = f"Which item has the title: {title}?"
    return Prompt(preamble(ALIGNMENT_INSTRUCTION), body(user_input, sid if leak_answer else ""), f"{sid}\n")


def sft_sid_to_title(sid: str, title: str, leak_answer: bool = False) -> Prompt:
    """Task 2b, SidItemFeatDataset sid2title (the leak, docs/upstream.md 8.1 A, only with ``leak_answer``)."""
    user_input = f'What is the title of item "{sid}"?'
    return Prompt(preamble(ALIGNMENT_INSTRUCTION), body(user_input, title if leak_answer else ""), f"{title}\n")


def sft_sid_history_to_title(history_sids: Sequence[str], target_title: str) -> Prompt:
    """Task 3, FusionSeqRecDataset: history SIDs -> next item's title."""
    user_input = (
        f"The user has sequentially interacted with items {_join_sids(history_sids)}. "
        "Can you recommend the next item for him? Tell me the title of the item"
    )
    return Prompt(preamble(SID_TO_TITLE_INSTRUCTION), body(user_input), f"{target_title}\n")


def sft_title_history_to_title(
    history_titles: Sequence[str], target_title: str, category: str, rng: random.Random
) -> Prompt:
    """Task 4, SFTData: title history -> next title; the instruction is drawn from the eleven with ``rng``.

    Upstream draws with ``random.randint(0, 10)`` after ``random.seed(42)``; pass ``random.Random(42)`` and
    draw in row order to reproduce its choices.
    """
    c = category_text(category)
    instruction = TITLE_HISTORY_INSTRUCTIONS[rng.randint(0, len(TITLE_HISTORY_INSTRUCTIONS) - 1)].format(c=c)
    titles = _quoted(history_titles, ",\t")
    user_input = f"The user has palyed the following {c}s before: {titles}"
    return Prompt(preamble(instruction, end="\n \n"), body(user_input), f'"{target_title}"\n')


def sft_title_history_to_sid(history_titles: Sequence[str], target_sid: str, category: str) -> Prompt:
    """Task 5, TitleHistory2SidSFTDataset: title history -> next SID."""
    user_input = (
        f"The user has interacted with the following {category_text(category)} items in chronological order: "
        f"{_quoted(history_titles, ', ')}. Can you predict the next item the user may expect?"
    )
    return Prompt(preamble(TITLES_TO_SID_INSTRUCTION), body(user_input), f"{target_sid}\n")


# --- Evaluation (docs/upstream.md 6.2) -------------------------------------------------------------------------


def test_prompt(history_sids: Sequence[str], target_sid: str, phrasing: str = "test") -> Prompt:
    """The evaluation prompt: upstream's test wording by default, or the SFT task-1 wording (docs/upstream.md 8.2)."""
    if phrasing == "sft":
        return sft_sid_history(history_sids, target_sid)
    if phrasing != "test":
        raise ValueError(f"unknown prompt phrasing {phrasing!r}; expected 'test' or 'sft'")
    user_input = (
        "Can you predict the next possible item the user may expect, given the following chronological "
        f"interaction history: {_join_sids(history_sids)}"
    )
    return Prompt(preamble(SID_NEXT_INSTRUCTION), body(user_input), f"{target_sid}\n")


# --- GRPO prompts (docs/upstream.md 5.3): no preamble --------------------------------------------------------


def rl_sid_history(history_sids: Sequence[str], target_sid: str) -> Prompt:
    """SidDataset: the SFT task-1 body without the preamble."""
    return Prompt("", body(_sid_history_input(history_sids)), f"{target_sid}\n")


def rl_title_to_sid(title: str, sid: str, leak_answer: bool = False) -> Prompt:
    """RLTitle2SidDataset title2sid (the leak, docs/upstream.md 8.1 B, only with ``leak_answer``)."""
    return Prompt("", body(f"Which item has the title: {title}?", sid if leak_answer else ""), f"{sid}\n")


def rl_description_to_sid(description: str, sid: str, leak_answer: bool = False) -> Prompt:
    """RLTitle2SidDataset description2sid (the leak, docs/upstream.md 8.1 B, only with ``leak_answer``)."""
    user_input = f'An item can be described as follows: "{description}". Which item is it describing?'
    return Prompt("", body(user_input, sid if leak_answer else ""), f"{sid}\n")


def rl_title_history_to_sid(history_titles: Sequence[str], target_sid: str) -> Prompt:
    """RLSeqTitle2SidDataset: title history -> next SID."""
    user_input = (
        f"Given the title sequence of user historical interactive items: {_quoted(history_titles, ', ')}, "
        "can you recommend a suitable next item for the user?"
    )
    return Prompt("", body(user_input), f"{target_sid}\n")


if __name__ == "__main__":  # python -m minirec.prompts dump ...
    from minirec.prompts_dump import main

    raise SystemExit(main())
