"""Constrained decoding: beams may only spell catalogue SIDs, as a tensor lookup with no per-beam Python.

    constraint = SidConstraint.from_catalogue(catalogue, tokenizer).to(device)   # once
    processor = constraint.logits_processor()                                     # once per generate call
    out = model.generate(..., logits_processor=LogitsProcessorList([processor]))
    processor.check()                                                             # raises if a row failed

Upstream (reference-spec 6.3, ``LogitProcessor.py``) keeps a dict from hashed token prefixes to allowed ids and
loops over beams in Python at every step; a prefix it does not know leaves the row unconstrained (spec 8.1 F).
Here the same grammar ``<a> -> <b> -> <c> [-> <d>] -> "\\n" -> EOS`` is a trie over a compact alphabet (the SID
tokens, the newline tokens and EOS) stored as two tensors: ``next_node[node, compact token]`` and
``penalty[node, compact token]`` (0 if allowed, else -inf). A beam's node is recomputed from its generated
suffix at each step, since beam search reorders beams between steps; that is at most a handful of gathers
for a 3- or 4-token SID. Masking writes -inf over the vocabulary slices outside the alphabet and adds the
penalty rows to the alphabet's slices, in place.

It fails closed: a row in an unknown state (node 0, reached through any token outside the grammar) has every
token masked to -inf and is counted on the device; :meth:`SidLogitsProcessor.check` raises after generation.
The generation start is the first call's ``input_ids.shape[1]`` (host metadata), so the prompt may end in any
tokens at all. Like upstream, scores are not renormalised over the allowed set: beam scores stay sums of
full-vocabulary log-probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
from transformers import LogitsProcessor

from minirec.data.catalogue import Catalogue
from minirec.sid import split_sid

DEAD, ROOT = 0, 1


class ConstraintViolation(RuntimeError):
    """Constrained decoding reached a state outside the SID grammar."""


@dataclass
class SidConstraint:
    """The SID grammar as lookup tables (see the module docstring); build once, reuse for every batch."""

    vocab_ids: torch.Tensor  # (C,) vocabulary id of each compact token
    next_node: torch.Tensor  # (N, C + 1) int32; column C is "any other token" and leads to DEAD
    penalty: torch.Tensor  # (N, C) float32: 0 where allowed, -inf elsewhere (added to the allowed tokens' scores)
    terminal: int  # node after EOS: allows EOS or pad again (finished rows may be carried along as padding)
    eos_token_id: int
    max_new_tokens: int  # longest SID + newline tokens + EOS
    num_sids: int
    _vocab_tables: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_catalogue(cls, catalogue: Catalogue, tokenizer, sids: Iterable[str] | None = None) -> "SidConstraint":
        """The grammar of the info file's SIDs (what upstream's prefix table holds), or of ``sids``."""
        sids = sorted(catalogue.valid_sids if sids is None else set(sids))
        return cls.from_token_sequences(sid_token_ids(tokenizer, sids), newline_ids(tokenizer), tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id)

    @classmethod
    def from_token_sequences(
        cls, sequences: Sequence[Sequence[int]], newline: Sequence[int], eos_token_id: int,
        pad_token_id: int | None = None,
    ) -> "SidConstraint":
        """Build from SIDs given as token-id lists; every SID is followed by ``newline`` then EOS.

        After EOS only EOS or ``pad_token_id`` may follow: sampling keeps feeding finished rows padding.
        """
        if not sequences:
            raise ValueError("no SIDs to constrain decoding to")
        if eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; constrained SIDs end with EOS")
        after_end = {eos_token_id} | ({pad_token_id} if pad_token_id is not None else set())
        alphabet = sorted({t for seq in sequences for t in seq} | set(newline) | after_end)
        compact = {token: index for index, token in enumerate(alphabet)}
        edges: list[dict[int, int]] = [{}, {}]  # DEAD, ROOT

        def child(node: int, token: int) -> int:
            if token not in edges[node]:
                edges.append({})
                edges[node][token] = len(edges) - 1
            return edges[node][token]

        # Every SID ends the same way, so the "\n"... EOS tail is one shared chain of nodes.
        suffix = [*newline, eos_token_id]
        chain = list(range(len(edges), len(edges) + len(suffix)))
        edges.extend({} for _ in suffix)
        for previous, token, node in zip(chain, suffix[1:], chain[1:]):
            edges[previous][token] = node
        terminal = chain[-1]
        edges[terminal].update({token: terminal for token in after_end})
        for sequence in sequences:
            node = ROOT
            for token in sequence:
                node = child(node, token)
            edges[node][suffix[0]] = chain[0]

        triples = [(node, compact[token], target) for node, out in enumerate(edges) for token, target in out.items()]
        nodes, columns, targets = torch.tensor(triples, dtype=torch.long).T
        next_node = torch.zeros(len(edges), len(alphabet) + 1, dtype=torch.int32)
        next_node[nodes, columns] = targets.int()
        return cls(
            vocab_ids=torch.tensor(alphabet, dtype=torch.long),
            next_node=next_node,
            penalty=torch.zeros(next_node.shape[0], len(alphabet)).masked_fill_(next_node[:, :-1] == DEAD, float("-inf")),
            terminal=terminal,
            eos_token_id=eos_token_id,
            max_new_tokens=max(len(s) for s in sequences) + len(newline) + 1,
            num_sids=len(sequences),
        )

    @property
    def device(self) -> torch.device:
        return self.next_node.device

    def to(self, device) -> "SidConstraint":
        self.vocab_ids, self.next_node, self.penalty = (t.to(device) for t in (self.vocab_ids, self.next_node, self.penalty))
        self._vocab_tables.clear()
        return self

    def vocab_tables(self, vocab_size: int):
        """``(compact_of, runs, gaps)`` for a model's vocabulary size, built once per size."""
        if vocab_size not in self._vocab_tables:
            largest = int(self.vocab_ids.max())
            if largest >= vocab_size:
                raise ValueError(f"the model scores {vocab_size} tokens but the SID grammar uses token id {largest}: "
                                 "resize its embeddings after adding the SID tokens (minirec.models.add_sid_tokens)")
            self._vocab_tables[vocab_size] = (self.compact_of(vocab_size), *self.vocab_runs(vocab_size))
        return self._vocab_tables[vocab_size]

    def vocab_runs(self, vocab_size: int) -> tuple[list[tuple[int, int, int]], list[tuple[int, int]]]:
        """Contiguous runs ``(vocab start, compact start, length)`` of the alphabet and the vocabulary gaps
        between them. SID tokens are added in one block, so there are only a few of each: masking touches
        slices, never scattered columns."""
        ids = self.vocab_ids.tolist()
        runs = []
        for compact, token in enumerate(ids):
            if runs and runs[-1][0] + runs[-1][2] == token:
                runs[-1][2] += 1
            else:
                runs.append([token, compact, 1])
        bounds = [0] + [edge for start, _, length in runs for edge in (start, start + length)] + [vocab_size]
        gaps = [(bounds[i], bounds[i + 1]) for i in range(0, len(bounds), 2) if bounds[i] < bounds[i + 1]]
        return [tuple(run) for run in runs], gaps

    def compact_of(self, vocab_size: int) -> torch.Tensor:
        """Vocabulary id -> compact token (``C`` for every token outside the grammar)."""
        size = max(vocab_size, int(self.vocab_ids.max()) + 1)
        table = torch.full((size,), len(self.vocab_ids), dtype=torch.long, device=self.device)
        table[self.vocab_ids] = torch.arange(len(self.vocab_ids), device=self.device)
        return table

    def walk(self, generated: torch.Tensor, compact_of: torch.Tensor) -> torch.Tensor:
        """The node each row of ``generated`` (rows x steps, token ids) has reached."""
        state = torch.full((generated.shape[0],), ROOT, dtype=torch.long, device=generated.device)
        for step in range(generated.shape[1]):
            state = self.next_node[state, compact_of[generated[:, step]]].long()
        return state

    def is_complete(self, generated: torch.Tensor) -> torch.Tensor:
        """Whether each row is a full catalogue SID, newline and EOS (EOS or pad padding after it allowed)."""
        return self.walk(generated, self.compact_of(int(generated.max()) + 1)) == self.terminal

    def logits_processor(self) -> "SidLogitsProcessor":
        return SidLogitsProcessor(self)


class SidLogitsProcessor(LogitsProcessor):
    """Masks every token that does not continue a catalogue SID; one instance per ``generate`` call.

    It writes into the scores it is given (beam search hands it a fresh log-softmax each step): a copy would
    double the memory traffic of a step that is already just one pass over (rows x vocabulary).
    """

    def __init__(self, constraint: SidConstraint):
        self.constraint = constraint
        self.start: int | None = None
        self.calls = 0
        self.dead_rows = torch.zeros((), dtype=torch.long, device=constraint.device)
        self._compact_of: torch.Tensor | None = None
        self._runs: list[tuple[int, int, int]] = []
        self._gaps: list[tuple[int, int]] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Mask ``scores`` in place (and return them): -inf for every token the row's SID prefix forbids."""
        if self.start is None:
            self.start = input_ids.shape[1]
            self._compact_of, self._runs, self._gaps = self.constraint.vocab_tables(scores.shape[-1])
        if input_ids.shape[1] != self.start + self.calls:
            raise ConstraintViolation(
                f"constraint processor called with {input_ids.shape[1]} tokens, expected {self.start + self.calls}: "
                "use a fresh processor (SidConstraint.logits_processor()) for every generate call"
            )
        self.calls += 1
        state = self.constraint.walk(input_ids[:, self.start:], self._compact_of)
        self.dead_rows += (state == DEAD).sum()
        penalty = self.constraint.penalty.index_select(0, state).to(scores.dtype)
        for start, stop in self._gaps:
            scores[:, start:stop] = float("-inf")
        for start, compact, length in self._runs:
            scores[:, start:start + length] += penalty[:, compact:compact + length]
        return scores

    def check(self) -> None:
        """Raise :class:`ConstraintViolation` if any row was ever in an unknown state (one host sync)."""
        dead = int(self.dead_rows)
        if dead:
            raise ConstraintViolation(
                f"{dead} beam rows left the SID grammar during constrained decoding (all their tokens were masked)"
            )


def newline_ids(tokenizer) -> list[int]:
    """Token ids of the newline that ends every SID target (spec 6.3)."""
    ids = tokenizer("\n", add_special_tokens=False).input_ids
    if not ids:
        raise ValueError("the tokenizer encodes '\\n' to nothing; SIDs could not be terminated")
    return ids


def sid_token_ids(tokenizer, sids: Sequence[str]) -> list[list[int]]:
    """Token ids of each SID, checked against how the tokenizer really encodes ``sid + "\\n"``."""
    vocabulary = tokenizer.get_vocab()
    newline = newline_ids(tokenizer)
    encoded = tokenizer([sid + "\n" for sid in sids], add_special_tokens=False).input_ids
    sequences = []
    for sid, ids in zip(sids, encoded):
        tokens = split_sid(sid)
        missing = [token for token in tokens if token not in vocabulary]
        if missing:
            raise ValueError(f"SID {sid}: tokens {missing} are not in the tokenizer; add the SID tokens first")
        expected = [vocabulary[token] for token in tokens]
        if ids != expected + newline:
            raise ValueError(f"SID {sid}: the tokenizer encodes '{sid}\\n' as {ids}, not {expected + newline}")
        sequences.append(expected)
    return sequences
