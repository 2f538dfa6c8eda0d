"""Upstream's ``reward_type=sasrec`` CF reward as a trl reward function (docs/upstream.md 5.5, ``rl.py:215-245``).

    reward = CfReward.from_checkpoint(run_dir, catalogue)          # the best.pt of a trained sasrec run
    rewards = reward(completions, target, history_item_ids=...)    # one float per completion

What upstream computes: the prompt's history SIDs -> info-line indices, right-padded to 10 with ``item_num``,
through ``SASRec.forward_eval``; the reward of a completion is the **raw logit** of its item
(``torch.gather(predictions, 1, pred)``: no softmax), and it replaces the rule reward. Here the same logit,
with these fixes (docs/upstream.md 8.1 H):

- the history comes from the prompt row's own item ids, column ``history_item_ids`` (a list of item ids, ints
  or int-like strings, oldest first: the split's ``history_item_id_list``), so SID-history and
  title-history prompts work alike instead of the title prompts raising KeyError on ``item2id[title]``. A row
  with no history (the title -> SID and description -> SID prompts) gets 0 for every completion;
- a completion that is not a catalogue SID (after upstream's ``strip("\\n\\"")``) gets 0, not the logit of
  a random item;
- a SID shared by several items (docs/upstream.md 1.6; upstream's ``item2id`` keeps the last) scores the max over them.

``score="probability"`` gives the softmax probability over the catalogue instead of the logit. ``target`` is
accepted for trl's signature and not used: the CF reward does not look at the answer. Combine it with the
rule reward in the caller if the README's "augment" reading is wanted (upstream replaces it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from minirec.data.catalogue import Catalogue
from minirec.recsys.sequences import MAX_LEN

HISTORY_COLUMN = "history_item_ids"
SCORES = ("logit", "probability")
_STRIP = "\n\""  # what upstream's cf_reward strips from a completion


class CfReward:
    """A trained item-id model's score of each roll-out's item given the prompt row's history."""

    __name__ = "cf_reward"

    def __init__(self, model: nn.Module, catalogue: Catalogue, score: str = "logit", max_len: int | None = None):
        if score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
        if not hasattr(model, "scores") or not hasattr(model, "num_items"):
            raise TypeError("the CF reward needs an item-id model with scores(history, lengths)")
        self.model, self.score = model.eval(), score
        self.num_items = model.num_items
        self.max_len = max_len or getattr(model, "max_len", MAX_LEN)
        groups = catalogue.sid_items
        width = max(len(items) for items in groups.values())
        self.sid_index = {sid: index for index, sid in enumerate(groups)}
        # SID index -> its items, padded by repeating the first (a max over repeats is the same max).
        self.sid_items = torch.tensor([items + items[:1] * (width - len(items)) for items in groups.values()])
        if int(self.sid_items.max()) >= self.num_items:
            raise ValueError(f"the catalogue has item ids beyond the model's {self.num_items} items")

    @classmethod
    def from_checkpoint(cls, path: str | Path, catalogue: Catalogue, score: str = "logit") -> "CfReward":
        from minirec.recsys.train import load_model

        return cls(load_model(path, catalogue), catalogue, score=score)

    @torch.no_grad()
    def __call__(self, completions: Sequence[str], target: Sequence[str] | None = None,
                 history_item_ids: Sequence[Sequence] | None = None, **kwargs) -> list[float]:
        if history_item_ids is None:
            raise ValueError(f"the CF reward needs the prompt rows' {HISTORY_COLUMN!r} column")
        if len(history_item_ids) != len(completions):
            raise ValueError(f"{len(completions)} completions but {len(history_item_ids)} histories")
        sids = [self.sid_index.get(c.strip(_STRIP)) if isinstance(c, str) else None for c in completions]
        rows = [i for i, (sid, history) in enumerate(zip(sids, history_item_ids)) if sid is not None and len(history)]
        rewards = [0.0] * len(completions)
        if not rows:
            return rewards
        pad = self.num_items
        histories, lengths = [], []
        for i in rows:
            ids = [int(item) for item in history_item_ids[i]][-self.max_len:]
            if min(ids) < 0 or max(ids) >= pad:
                raise ValueError(f"completion {i}: history item ids {ids} outside 0..{pad - 1}")
            histories.append(ids + [pad] * (self.max_len - len(ids)))
            lengths.append(len(ids))
        device = next(self.model.parameters()).device
        logits = self.model.scores(torch.tensor(histories, device=device), torch.tensor(lengths, device=device))
        if self.score == "probability":
            logits = logits.softmax(-1)
        items = self.sid_items[torch.tensor([sids[i] for i in rows])].to(device)
        values = logits.gather(1, items).amax(1).double().cpu().tolist()
        for i, value in zip(rows, values):
            rewards[i] = value
        return rewards
