"""Constrained decoding: beams may only spell catalogue SIDs, as a tensor lookup with no per-beam Python.

    constraint = SidConstraint.from_catalogue(catalogue, tokenizer).to(device)   # once
    processor = constraint.logits_processor()                                     # once per generate call
    out = model.generate(..., logits_processor=LogitsProcessorList([processor]))
    processor.check()                                                             # raises if a row failed

Upstream (docs/upstream.md 6.3, ``LogitProcessor.py``) keeps a dict from hashed token prefixes to allowed ids and
loops over beams in Python at every step; a prefix it does not know leaves the row unconstrained (docs/upstream.md 8.1 F).
Here the same grammar ``<a> -> <b> -> <c> [-> <d>] -> "\\n" -> EOS`` is a trie over a compact alphabet (the SID
tokens, the newline tokens and EOS). Every row advances one token per step, so after ``t`` generated tokens a
row's node is one of the trie nodes at depth ``t`` (or DEAD). :class:`DepthTables` stores, per depth, only
those nodes and only the tokens they allow: a transition table into the next depth and a penalty table
(0 allowed, -inf forbidden). A beam's node is recomputed from its generated tokens at each step, because beam
search reorders beams between steps: two small device ops per token, over tables small enough to stay in cache.

Masking touches vocabulary slices, never scattered columns: SID tokens are added in one sorted block, so the
tokens of one SID level are one slice. The processor's output at depth ``d`` is a buffer kept for that depth,
-inf everywhere except the slice depth ``d`` allows, which the step overwrites: a step writes rows x one SID
level instead of rows x vocabulary, and never has to wipe anything.

It fails closed: a row in an unknown state (DEAD, reached through any token outside the grammar) has every
token masked to -inf; :meth:`SidLogitsProcessor.check` counts such rows and raises after generation. The
generation start is the first call's ``input_ids.shape[1]`` (host metadata), so the prompt may end in any
tokens at all. Like upstream, scores are not renormalised over the allowed set: beam scores stay sums of
full-vocabulary log-probabilities.

Upstream's two masking behaviours are modes of the same grammar (``masking``, set by the ``constraint_fail_open``
and ``constraint_eos_fallback`` switches of :mod:`minirec.upstream`), served by :class:`UpstreamLogitsProcessor`:

- ``fail_open`` (upstream at ``81b4ba9``, docs/upstream.md 6.3, 8.1 F): ``log_softmax``, then a mask of -1e6 with 0
  at the allowed tokens; a row whose prefix is unknown is left **unmasked**;
- ``eos_fallback`` (upstream since 2026-01-20, docs/upstream.md 11.2): a mask of -inf, and a row whose prefix is
  unknown may only take EOS (a warning says how many rows did);

and in both the first step is keyed on the prompt, as upstream's is: a prompt ending in ``### Response:\n`` starts
at the root; a prompt whose last 3 tokens (upstream's key length P = 3, the Qwen length of that header) spell a
path of the grammar starts at that path's node, which is how the leaked RL prompts of 8.1 B, ending in their own
answer ``<a><b><c>``, get ``"\n"`` forced as their first token and then decode unconstrained; any other prompt is
unknown from the start. Later steps are keyed on the generated tokens, as upstream's. Neither mode raises: the
steps at which rows were outside the grammar are counted (``SidConstraint.unknown_row_steps``). The default,
``strict``, is the fail-closed processor above. The sid decoder (:mod:`minirec.sid_decoder`) decodes strictly only; the upstream
modes go through ``generate``.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
from transformers import LogitsProcessor

from minirec.data.catalogue import Catalogue
from minirec.sid import split_sid

DEAD, ROOT = 0, 1  # trie nodes; in every depth table row 0 is DEAD as well
NEG_INF = float("-inf")
MASKING = ("strict", "fail_open", "eos_fallback")  # see the module docstring and minirec.upstream
RESPONSE_HEADER = "### Response:\n"  # what upstream's prefix table expects every prompt to end with (6.3)
UPSTREAM_KEY_TOKENS = 3  # upstream's P: the first step's key is the prompt's last 3 tokens (LogitProcessor.py)
UPSTREAM_MASK = -1e6  # upstream's mask value before 2026-01-20 (fail_open)


class ConstraintViolation(RuntimeError):
    """Constrained decoding reached a state outside the SID grammar."""


@dataclass
class SidConstraint:
    """The SID grammar as a trie (see the module docstring); build once, reuse for every batch."""

    vocab_ids: torch.Tensor  # (C,) vocabulary id of each compact token
    next_node: torch.Tensor  # (N, C + 1) int32 on the host; column C is "any other token" and leads to DEAD
    terminal: int  # node after EOS: allows EOS or pad again (finished rows may be carried along as padding)
    eos_token_id: int
    max_new_tokens: int  # longest SID + newline tokens + EOS
    num_sids: int
    device: torch.device = torch.device("cpu")
    masking: str = "strict"  # strict, fail_open or eos_fallback (module docstring)
    header: tuple[int, ...] = ()  # token ids of RESPONSE_HEADER (upstream modes; empty: every prompt ends in it)
    unknown_row_steps: int = 0  # upstream modes: (row, step) pairs whose prefix was outside the grammar, summed
    _tables: dict = field(default_factory=dict, repr=False)
    _scratch: "Scratch | None" = field(default=None, repr=False)
    _keyed: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_catalogue(cls, catalogue: Catalogue, tokenizer, sids: Iterable[str] | None = None,
                       masking: str = "strict") -> "SidConstraint":
        """The grammar of the info file's SIDs (what upstream's prefix table holds), or of ``sids``."""
        sids = sorted(catalogue.valid_sids if sids is None else set(sids))
        constraint = cls.from_token_sequences(sid_token_ids(tokenizer, sids), newline_ids(tokenizer),
                                              tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        constraint.header = tuple(tokenizer(RESPONSE_HEADER, add_special_tokens=False).input_ids)
        return constraint.with_masking(masking)

    def with_masking(self, masking: str) -> "SidConstraint":
        """This grammar with another masking mode (the decoding tables are shared)."""
        if masking not in MASKING:
            raise ValueError(f"masking = {masking!r}: expected one of {', '.join(MASKING)}")
        if masking == self.masking:
            return self
        return dataclasses.replace(self, masking=masking, unknown_row_steps=0, _scratch=None, _keyed={})

    @property
    def strict(self) -> bool:
        return self.masking == "strict"

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
            terminal=terminal,
            eos_token_id=eos_token_id,
            max_new_tokens=max(len(s) for s in sequences) + len(newline) + 1,
            num_sids=len(sequences),
        )

    def to(self, device) -> "SidConstraint":
        """Build the decoding tables on ``device`` from now on."""
        self.device = torch.device(device)
        self._tables.clear()
        self._scratch = None
        return self

    def tables(self, vocab_size: int) -> "DepthTables":
        """The decoding tables for a model scoring ``vocab_size`` tokens, built once per size."""
        if vocab_size not in self._tables:
            largest = int(self.vocab_ids.max())
            if largest >= vocab_size:
                raise ValueError(f"the model scores {vocab_size} tokens but the SID grammar uses token id {largest}: "
                                 "resize its embeddings after adding the SID tokens (minirec.models.add_sid_tokens)")
            self._tables[vocab_size] = DepthTables.build(self, vocab_size)
        return self._tables[vocab_size]

    def frontiers(self) -> list[list[int]]:
        """Trie nodes (not DEAD) at each depth, until the frontier repeats (only the terminal node is left)."""
        successors = self.next_node[:, :-1]
        frontier, frontiers = [ROOT], []
        while True:
            frontiers.append(frontier)
            following = sorted(set(successors[frontier].flatten().tolist()) - {DEAD})
            if following == frontier:
                return frontiers
            frontier = following

    def is_complete(self, generated: torch.Tensor) -> torch.Tensor:
        """Whether each row is a full catalogue SID, newline and EOS (EOS or pad padding after it allowed)."""
        generated = generated.to(self.device)
        tables = self.tables(max(int(generated.max()) + 1, int(self.vocab_ids.max()) + 1))
        terminal = tables.terminal[tables.depth(generated.shape[1])]
        if terminal is None:
            return torch.zeros(generated.shape[0], dtype=torch.bool, device=generated.device)
        return tables.walk(generated) == terminal

    def logits_processor(self, reuse_output: bool = True) -> "SidLogitsProcessor | UpstreamLogitsProcessor":
        """A processor for one ``generate`` call: the fail-closed one, or upstream's in the upstream modes."""
        if self.masking != "strict":
            return UpstreamLogitsProcessor(self)
        return SidLogitsProcessor(self, reuse_output=reuse_output)

    def keyed_tables(self, vocab_size: int) -> "KeyedTables":
        """The whole trie on the device, for the upstream modes' per-row lookups."""
        if vocab_size not in self._keyed:
            self.tables(vocab_size)  # the same vocabulary check
            self._keyed[vocab_size] = KeyedTables.build(self, vocab_size)
        return self._keyed[vocab_size]

    def claim_scratch(self, scores: torch.Tensor, owner: object) -> "Scratch":
        """The output buffers for tensors like ``scores``, now owned by ``owner``.

        Kept across generate calls, so their pages are allocated and touched once rather than per call. One
        set per constraint: a processor that finds it claimed by another one masks its own scores instead.
        """
        scratch = self._scratch
        if scratch is None or not scratch.fits(scores):
            scratch = self._scratch = Scratch(scores.shape, scores.dtype, scores.device)
        scratch.owner = owner
        return scratch


@dataclass
class Scratch:
    """One rows x vocabulary output buffer per depth, made on first use.

    Buffer ``d`` is -inf everywhere except the tokens depth ``d`` allows, and every step at depth ``d``
    overwrites those whole: no step ever has to wipe what an earlier step wrote. The price is memory, one
    scores-sized tensor per depth (6 for 3-token SIDs: 6 x 800 rows x 152k tokens x 4 bytes = 2.9 GB for
    16 prompts x 50 beams over Qwen's vocabulary).
    """

    shape: torch.Size
    dtype: torch.dtype
    device: torch.device
    buffers: dict[int, tuple[torch.Tensor, tuple]] = field(default_factory=dict)
    owner: object = None

    def fits(self, scores: torch.Tensor) -> bool:
        return (self.shape, self.dtype, self.device) == (scores.shape, scores.dtype, scores.device)

    def buffer(self, depth: int, tables: "DepthTables") -> tuple[torch.Tensor, tuple]:
        """Depth ``depth``'s buffer and its writes: ``(vocabulary start, length, penalty columns, view)`` per run.

        Made once: views cost a dispatch each.
        """
        output = self.buffers.get(depth)
        if output is None:
            # A normal tensor, not an inference tensor: generate may run under inference_mode or not.
            with torch.inference_mode(False):
                buffer = torch.full(self.shape, NEG_INF, dtype=self.dtype, device=self.device)
                output = self.buffers[depth] = buffer, tuple(
                    (start, length, columns, buffer.narrow(1, start, length))
                    for start, length, columns in tables.runs[depth])
        return output


@dataclass(frozen=True)
class StepPlan:
    """What decoding step ``t`` (``t`` tokens generated so far) needs, resolved once instead of at every call.

    ``offsets``: each generated position's depth x vocabulary offset into ``token_column`` (steps >= 2);
    ``alphas``: the width of the depth of each position from 2 on, which turns a node id into its table row.
    """

    depth: int
    penalties: torch.Tensor
    runs: list[tuple[int, int, slice | None]]
    offsets: torch.Tensor | None
    alphas: tuple[int, ...]


@dataclass
class DepthTables:
    """The trie cut into depths, for one vocabulary size, on the constraint's device.

    At depth ``d`` the nodes are ``[DEAD] + frontier[d]`` (local ids) and the allowed tokens are the compact
    tokens some node there allows (local column = position, one more column for "any other token").
    ``transitions`` holds, for every depth from 1 on, its (nodes x (columns + 1)) table of local ids at the
    next depth, flattened. ``token_column[d * vocab_size + token]`` is the flat offset of depth ``d``'s table
    plus the token's local column, so one hop of the walk is an ``add`` and an ``index_select``. Depth 0 has
    one node, the root, so its hop is folded in: ``token_column[token]`` (depth 0) is the depth-1 row offset
    of the node the token leads to, and the first two hops are one ``add``. ``first_node`` maps a token to
    that node's local id. ``penalties[d]`` is (nodes x columns), 0 or -inf. ``runs[d]``: ``(vocabulary
    start, length, penalty columns)`` of the allowed tokens, one per run of consecutive token ids (columns
    None: the whole penalty row); ``fills[d]``: the vocabulary ranges outside them. Depths past the last use
    the last (the terminal node's).
    """

    vocab_size: int
    token_column: torch.Tensor
    transitions: torch.Tensor
    widths: list[int]
    penalties: list[torch.Tensor]
    terminal: list[int | None]
    fills: list[list[tuple[int, int]]]
    runs: list[list[tuple[int, int, slice | None]]]
    first_node: torch.Tensor  # token id -> local id at depth 1 of the node it leads to from the root
    root_penalty: torch.Tensor  # penalties[0] of the root, as a 1 x columns row
    _plans: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, constraint: SidConstraint, vocab_size: int) -> "DepthTables":
        next_node, vocab_ids = constraint.next_node, constraint.vocab_ids
        frontiers = constraint.frontiers()
        last = len(frontiers) - 1  # at least 1: the root always has children
        local = []  # per depth: global node -> local id (0 = DEAD)
        for frontier in frontiers:
            table = torch.zeros(next_node.shape[0], dtype=torch.int32)
            table[frontier] = torch.arange(1, len(frontier) + 1, dtype=torch.int32)
            local.append(table)
        blocks, penalties, widths, runs, allowed = [], [], [], [], []
        for depth, frontier in enumerate(frontiers):
            columns = (next_node[frontier, :-1] != DEAD).any(0).nonzero().flatten()
            block = torch.zeros(len(frontier) + 1, len(columns) + 1, dtype=torch.int32)
            block[1:, :-1] = local[min(depth + 1, last)][next_node[frontier][:, columns].long()]
            blocks.append(block)
            allowed.append(vocab_ids[columns])
            penalties.append(torch.zeros(block.shape[0], len(columns)).masked_fill_(block[:, :-1] == DEAD, NEG_INF))
            widths.append(block.shape[1])
            runs.append(vocab_runs(allowed[-1].tolist()))
        first_node = torch.zeros(vocab_size, dtype=torch.int32)
        first_node[allowed[0]] = blocks[0][ROOT, :-1]
        token_column = torch.empty(len(frontiers), vocab_size, dtype=torch.int32)
        token_column[0] = first_node * widths[1]
        offset = 0
        for depth in range(1, len(frontiers)):
            token_column[depth] = offset + widths[depth] - 1  # any other token: the last column, which leads to DEAD
            token_column[depth, allowed[depth]] = offset + torch.arange(widths[depth] - 1, dtype=torch.int32)
            offset += blocks[depth].numel()
        device = constraint.device
        return cls(
            vocab_size=vocab_size,
            token_column=token_column.flatten().to(device),
            transitions=torch.cat([block.flatten() for block in blocks[1:]]).to(device),
            widths=widths,
            penalties=[penalty.to(device) for penalty in penalties],
            terminal=[int(table[constraint.terminal]) or None for table in local],
            fills=[complement(depth_runs, vocab_size) for depth_runs in runs],
            runs=[[(start, length, None if (column, length) == (0, width - 1) else slice(column, column + length))
                   for start, column, length in depth_runs] for depth_runs, width in zip(runs, widths)],
            first_node=first_node.to(device),
            root_penalty=penalties[0][ROOT:ROOT + 1].to(device),
        )

    def depth(self, step: int) -> int:
        return min(step, len(self.widths) - 1)

    def plan(self, step: int) -> StepPlan:
        """The :class:`StepPlan` of decoding step ``step``, built on first use."""
        plan = self._plans.get(step)
        if plan is None:
            depth = self.depth(step)
            offsets = None
            if step >= 2:
                offsets = torch.tensor([self.depth(position) * self.vocab_size for position in range(step)],
                                       device=self.token_column.device)
            plan = self._plans[step] = StepPlan(
                depth=depth, penalties=self.penalties[depth], runs=self.runs[depth], offsets=offsets,
                alphas=tuple(self.widths[self.depth(position)] for position in range(2, step)),
            )
        return plan

    def walk(self, generated: torch.Tensor, plan: StepPlan | None = None) -> torch.Tensor:
        """Local id, at depth ``generated.shape[1]``, of the node each row of ``generated`` (token ids) reached.

        ``plan``: the step plan of ``generated.shape[1]`` steps, if the caller has it already.
        """
        rows, steps = generated.shape
        if steps == 0:
            return torch.full((rows,), ROOT, dtype=torch.int32, device=generated.device)  # local id of the root too
        if steps == 1:  # one lookup: token -> node after it
            return self.first_node.index_select(0, generated.select(1, 0))
        plan = plan or self.plan(steps)
        # Only add and index_select, and one gather for every position's column: on CPU each op costs a cold
        # start at every decoding step, so the walk is as few ops as the trie's depth allows.
        columns = self.token_column.index_select(0, (generated + plan.offsets).view(-1)).view(rows, steps)
        state = self.transitions.index_select(0, torch.add(columns.select(1, 0), columns.select(1, 1)))
        for position, alpha in enumerate(plan.alphas, 2):
            state = self.transitions.index_select(0, torch.add(columns.select(1, position), state, alpha=alpha))
        return state


def vocab_runs(tokens: Sequence[int]) -> list[tuple[int, int, int]]:
    """Runs ``(vocab start, position, length)`` of consecutive token ids in the sorted list ``tokens``."""
    runs: list[list[int]] = []
    for position, token in enumerate(tokens):
        if runs and runs[-1][0] + runs[-1][2] == token:
            runs[-1][2] += 1
        else:
            runs.append([token, position, 1])
    return [tuple(run) for run in runs]


def complement(runs: Sequence[tuple[int, int, int]], vocab_size: int) -> list[tuple[int, int]]:
    """Vocabulary ranges ``(start, stop)`` not covered by ``runs``."""
    ranges, previous = [], 0
    for start, _, length in sorted(runs):
        if previous < start:
            ranges.append((previous, start))
        previous = start + length
    return ranges + ([(previous, vocab_size)] if previous < vocab_size else [])


class SidLogitsProcessor(LogitsProcessor):
    """Masks every token that does not continue a catalogue SID; one instance per ``generate`` call.

    It returns one of the constraint's buffers (:class:`Scratch`), -inf everywhere except the slice this step
    allows, which it overwrites. The buffers outlive the call: that is safe because generate reads the
    processed scores and copies what it keeps (beam search clones them for ``output_scores``). Pass
    ``reuse_output=False`` where a caller keeps each step's tensor by reference after the call (sampling with
    ``output_scores``): every step then masks the scores it is given in place and returns them.

    Rows in the DEAD state get -inf everywhere; :meth:`check` counts them after generation (one host sync)
    instead of at every step.
    """

    def __init__(self, constraint: SidConstraint, reuse_output: bool = True):
        self.constraint = constraint
        self.reuse_output = reuse_output
        self.start: int | None = None
        self.calls = 0
        self.tables: DepthTables | None = None
        self._scratch: Scratch | None = None
        self._states: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Masked scores: -inf for every token the row's SID prefix forbids, the given log-prob elsewhere."""
        step = self.calls
        if step == 0:
            self.start = input_ids.shape[1]
            self.tables = self.constraint.tables(scores.shape[-1])
            if self.reuse_output:
                self._scratch = self.constraint.claim_scratch(scores, owner=self)
        elif input_ids.shape[1] != self.start + step:
            raise ConstraintViolation(
                f"constraint processor called with {input_ids.shape[1]} tokens, expected {self.start + step}: "
                "use a fresh processor (SidConstraint.logits_processor()) for every generate call"
            )
        self.calls = step + 1
        tables = self.tables
        plan = tables.plan(step)
        if step == 0:  # every row is at the root: one penalty row for all
            allowed = tables.root_penalty
        else:
            state = tables.walk(input_ids.narrow(1, self.start, step), plan)
            self._states.append(state)
            allowed = plan.penalties.index_select(0, state)
        out, writes = self._output(scores, plan)
        for start, length, columns, view in writes:
            torch.add(scores.narrow(1, start, length), allowed if columns is None else allowed[:, columns], out=view)
        return out

    def _output(self, scores: torch.Tensor, plan: StepPlan) -> tuple[torch.Tensor, tuple]:
        """The tensor to write this step's runs into (-inf everywhere else already) and the writes to make."""
        scratch = self._scratch
        if scratch is not None and scratch.owner is self and scratch.shape == scores.shape:
            return scratch.buffer(plan.depth, self.tables)
        for start, stop in self.tables.fills[plan.depth]:  # no buffers of our own (any more): mask in place
            scores[:, start:stop] = NEG_INF
        return scores, tuple((start, length, columns, scores.narrow(1, start, length))
                             for start, length, columns in plan.runs)

    def check(self) -> None:
        """Raise :class:`ConstraintViolation` if any row was ever in an unknown state (one host sync)."""
        # DEAD is the smallest local id, so one min over every step's states tells whether any row died.
        if self._states and int(torch.cat(self._states).min()) == DEAD:
            dead = int((torch.stack(self._states) == DEAD).sum())
            raise ConstraintViolation(
                f"{dead} beam rows left the SID grammar during constrained decoding (all their tokens were masked)"
            )


@dataclass
class KeyedTables:
    """The trie as one device table for the upstream modes: ``next_node`` (N x (C + 1), column C = any other
    token), ``column_of`` (vocabulary id -> compact column), ``allowed`` (N x C: the tokens each node allows)."""

    next_node: torch.Tensor
    column_of: torch.Tensor
    allowed: torch.Tensor
    vocab_ids: torch.Tensor
    header: torch.Tensor | None

    @classmethod
    def build(cls, constraint: SidConstraint, vocab_size: int) -> "KeyedTables":
        device = constraint.device
        width = constraint.vocab_ids.numel()
        column_of = torch.full((vocab_size,), width, dtype=torch.long)
        column_of[constraint.vocab_ids] = torch.arange(width)
        next_node = constraint.next_node.long()
        header = torch.tensor(constraint.header, dtype=torch.long, device=device) if constraint.header else None
        return cls(next_node.to(device), column_of.to(device), (next_node[:, :-1] != DEAD).to(device),
                   constraint.vocab_ids.to(device), header)

    def walk(self, tokens: torch.Tensor) -> torch.Tensor:
        """The global node each row of ``tokens`` reaches from the root (DEAD once it leaves the grammar)."""
        nodes = torch.full((tokens.shape[0],), ROOT, dtype=torch.long, device=tokens.device)
        for position in range(tokens.shape[1]):
            nodes = self.next_node[nodes, self.column_of[tokens[:, position]]]
        return nodes

    def prompt_nodes(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The first step's node of each row, keyed on the end of its prompt as upstream keys it (module docstring)."""
        if self.header is None:
            nodes = torch.full((input_ids.shape[0],), ROOT, dtype=torch.long, device=input_ids.device)
        else:
            width = self.header.numel()
            ends = input_ids.shape[1] >= width and (input_ids[:, -width:] == self.header).all(dim=1)
            nodes = torch.where(torch.as_tensor(ends, device=input_ids.device), ROOT, DEAD)
        if input_ids.shape[1] >= UPSTREAM_KEY_TOKENS:
            path = self.walk(input_ids[:, -UPSTREAM_KEY_TOKENS:])
            nodes = torch.where(path != DEAD, path, nodes)
        return nodes


class UpstreamLogitsProcessor(LogitsProcessor):
    """Upstream's ``ConstrainedLogitsProcessor`` over the catalogue's trie, in the constraint's upstream mode.

    Per call: ``log_softmax`` of the scores, then a mask (-1e6 in ``fail_open``, -inf in ``eos_fallback``) that is 0
    at the tokens the row's prefix allows; a row whose prefix is unknown is left unmasked (``fail_open``) or may only
    take EOS (``eos_fallback``). The first call keys each row on its prompt's end, later calls on its generated
    tokens (see the module docstring). Scores are not renormalised over the allowed set. :meth:`check` raises
    nothing: it adds the (row, step) pairs that were unknown to ``constraint.unknown_row_steps`` (and warns, in
    ``eos_fallback``, as upstream does).
    """

    def __init__(self, constraint: SidConstraint):
        if constraint.masking not in ("fail_open", "eos_fallback"):
            raise ValueError(f"UpstreamLogitsProcessor needs an upstream masking mode, not {constraint.masking!r}")
        self.constraint = constraint
        self.fail_open = constraint.masking == "fail_open"
        self.start: int | None = None
        self.calls = 0
        self.tables: KeyedTables | None = None
        self._unknown: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = self.calls
        if step == 0:
            self.start = input_ids.shape[1]
            self.tables = self.constraint.keyed_tables(scores.shape[-1])
            nodes = self.tables.prompt_nodes(input_ids)
        elif input_ids.shape[1] != self.start + step:
            raise ConstraintViolation(
                f"constraint processor called with {input_ids.shape[1]} tokens, expected {self.start + step}: "
                "use a fresh processor (SidConstraint.logits_processor()) for every generate call"
            )
        else:
            nodes = self.tables.walk(input_ids[:, self.start:])
        self.calls = step + 1
        tables = self.tables
        scores = torch.log_softmax(scores, dim=-1)
        value = UPSTREAM_MASK if self.fail_open else NEG_INF
        mask = torch.full_like(scores, value)
        mask[:, tables.vocab_ids] = torch.where(tables.allowed[nodes], 0.0, value).to(mask.dtype)
        unknown = nodes == DEAD
        if self.fail_open:
            mask[unknown] = 0.0
        else:
            eos = self.constraint.eos_token_id
            rows = unknown.nonzero().flatten()
            mask[rows, eos] = 0.0
        self._unknown.append(unknown)
        return scores + mask

    def check(self) -> None:
        """Count the (row, step) pairs that were in an unknown state (one host sync); never raises."""
        if not self._unknown:
            return
        row_steps = int(sum(int(flags.sum()) for flags in self._unknown))
        self._unknown = []
        self.constraint.unknown_row_steps += row_steps
        if row_steps and not self.fail_open:
            warnings.warn(f"constrained decoding: {row_steps} row-steps had a prefix outside the SID table; only EOS "
                          "was allowed there (upstream's behaviour since 2026-01-20, docs/upstream.md 11.2)",
                          stacklevel=2)


def newline_ids(tokenizer) -> list[int]:
    """Token ids of the newline that ends every SID target (docs/upstream.md 6.3)."""
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
