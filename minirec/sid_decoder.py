"""SID beam search that prefills each prompt once, and an exact top-k over the whole catalogue.

    from minirec.sid_decoder import beam_recall, exact_top_k, sid_beam_search

    constraint = SidConstraint.from_catalogue(catalogue, tokenizer).to(model.device)     # once
    input_ids, attention_mask = left_pad(encode_prompts(tokenizer, samples), tokenizer.eos_token_id, model.device)
    generated, scores = sid_beam_search(model, input_ids, attention_mask, constraint, num_beams=50)
    exact = exact_top_k(model, input_ids, attention_mask, constraint, k=10)              # the true top 10

``sid_beam_search`` is a drop-in for :func:`minirec.generation.generate_sid_beams`: the same ``(generated, scores)``
for the same prompts, where ``generated`` is (prompts x beams, new tokens), best first within each prompt, padded
with the fill token after EOS, and ``scores`` the beams' sums of full-vocabulary log-probabilities
(``sequences_scores`` with ``length_penalty=0``).

Why. ``model.generate(num_beams=B)`` copies every prompt B times before its first forward pass, so the prefill
(~70% of the model time in evaluation) is done B times over. Here the P prompts are prefilled once; the key/value
cache is then expanded to the running beams with the cache's own ``reorder_cache`` (an ``index_select`` per layer,
the same call beam search makes at every step), and each grammar step is one forward pass over the running beams'
last tokens. Candidates are scored only on the tokens the SID trie allows at that depth (a gather of a few hundred
columns, never a beams x vocabulary mask), from a ``log_softmax`` over the whole vocabulary in float32.

Exactness. The search replicates transformers 5.23's ``_beam_search`` step for step, so it returns the same SIDs,
in the same order, with the same scores: running scores start at ``[0, -1e9, ...]`` (beams 1.. of a prompt are
copies whose candidates sit at ``-1e9 + log p``: this is how generate fills the 2 spare beams when only 48 first
codes exist for 50 beams), ``2 * num_beams`` candidates are kept per step, a candidate that emits EOS becomes a
finished hypothesis only if it ranks in the first ``num_beams`` of them, running beams are the best non-finished
candidates, finished hypotheses are merged best-first into ``num_beams`` slots initialised at ``-1e9``, and the loop
stops at the maximum length or once generate's early-stop test (best running score not above the worst finished one,
``length_penalty=0``) holds for every prompt. Position ids are generate's (``cumsum(mask) - 1``, 0 on padding, then
one more per step) and an all-ones attention mask is dropped as generate drops it. The remaining differences:

- Floats. The prompts' prefill runs on P rows instead of P x B, so matrix kernels may round differently; scores agree
  to ~1e-6 and two candidates whose scores differ by less than ~1e-5 may come out in the other order (a near-tie at
  the last rank may even swap which SID is kept). Exact ties are broken by ``torch.topk`` in both, not necessarily
  the same way.
- Filler slots. When a prompt has fewer than ``num_beams`` reachable SIDs, generate fills the remaining slots with
  sequences scoring about ``-1e9`` chosen among exact ties; here those slots also score about ``-1e9``, but which
  (partial) sequences fill them may differ.
- Disallowed candidates (``-inf``) count as not emitting EOS. Generate's come from arbitrary vocabulary columns.

It fails closed: a beam that would continue from a state outside the grammar (possible only when fewer finite
candidates than beams exist) raises :class:`minirec.constraint.ConstraintViolation`, where generate's constraint
processor would raise after decoding.

``exact_top_k`` scores every catalogue SID exactly: the prompts are prefilled once; then, prompt by prompt, each
level of the prefix tree is batched forward passes over the distinct prefixes at that level, each on top of the
prompt's cache (shared by every row as a broadcast view, not copied) and its parent prefix's cached keys and
values; a prefix whose continuation is forced (a SID's last token, then newline and EOS) is scored in one pass of
several tokens. It is the reference for ``beam_recall``: the share of the true top-k that beam search returned.
The module imports only torch, transformers and :mod:`minirec.constraint` (no mlflow, trl, accelerate or
datasets; note that :mod:`minirec.constraint` itself imports :mod:`minirec.data`, hence pandas).
"""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence, TypeVar

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from minirec.constraint import DEAD, ROOT, ConstraintViolation, DepthTables, SidConstraint

__all__ = ["SidBeams", "beam_recall", "exact_top_k", "sid_beam_search"]

NEG_INF = float("-inf")
# transformers' beam search: the initial score of the copies of a prompt, of empty finished slots, and the penalty
# that keeps finished candidates out of the running beams. Kept as float32 arithmetic, as generate does it.
BIG = 1.0e9


class SidBeams(NamedTuple):
    """Ranked sequences per prompt, unpackable as ``generated, scores = ...`` like ``generate_sid_beams``'s result.

    ``tokens``: (prompts x beams, T) generated token ids (SID tokens, newline, EOS), best first within each prompt,
    padded after EOS with the fill token (pad, or EOS when pad is unset or 0, as generate fills); T is the longest
    returned sequence. ``scores``: (prompts x beams,) float32 sums of full-vocabulary log-probabilities.
    """

    tokens: torch.Tensor
    scores: torch.Tensor


@dataclass(frozen=True)
class _Depth:
    """The trie at one depth: the tokens some node allows (sorted), and per node (DEAD first) the penalty and the
    local id of the node each token leads to at the next depth (DEAD where forbidden)."""

    tokens: torch.Tensor  # (A,) vocabulary ids
    penalty: torch.Tensor  # (nodes, A) float32, 0 or -inf
    following: torch.Tensor  # (nodes, A) int64


_T = TypeVar("_T")
_MEMO: dict[tuple[int, str], tuple[weakref.ref, object]] = {}


def _memo(owner: object, name: str, build: Callable[[], _T]) -> _T:
    """``build()`` computed once per live ``owner`` (held weakly; constraints and their tables are unhashable)."""
    key = (id(owner), name)
    hit = _MEMO.get(key)
    if hit is not None and hit[0]() is owner:
        return hit[1]  # type: ignore[return-value]
    with torch.inference_mode(False):  # normal tensors: the constraint's tables serve generate's processor too
        value = build()
    _MEMO[key] = (weakref.ref(owner, lambda _, key=key: _MEMO.pop(key, None)), value)
    return value


def _depths(tables: DepthTables) -> list[_Depth]:
    """Per-depth tables derived from the constraint's :class:`DepthTables` (its documented flat layout)."""

    def build() -> list[_Depth]:
        device = tables.first_node.device
        depths = []
        offset = 0  # start of depth d's block in ``transitions`` (blocks for depths 1.. are stored back to back)
        for depth, (runs, penalty) in enumerate(zip(tables.runs, tables.penalties)):
            tokens = torch.cat([torch.arange(start, start + length, device=device) for start, length, _ in runs]
                               + [torch.zeros(0, dtype=torch.long, device=device)])  # a depth may allow nothing
            rows, width = penalty.shape[0], tables.widths[depth]
            if depth == 0:  # rows DEAD and ROOT; the root's hop is the token -> node table
                following = torch.zeros(rows, len(tokens), dtype=torch.long, device=device)
                following[ROOT] = tables.first_node.index_select(0, tokens).long()
            else:
                block = tables.transitions[offset:offset + rows * width].view(rows, width)
                following = block[:, :-1].long()  # the last column is "any other token"
                offset += rows * width
            depths.append(_Depth(tokens=tokens, penalty=penalty.float(), following=following.contiguous()))
        return depths

    return _memo(tables, "depths", build)


def _forward_kwargs(model) -> dict:
    """``logits_to_keep=1`` where the model takes it, as generate passes it to every forward."""
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def _prefill(model, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """One forward pass of the prompts: ``(last logits float32, cache, last position per prompt, 2D mask or None)``.

    Position ids and the mask as generate makes them: ``cumsum(mask) - 1`` with 0 on padding; a mask of all ones
    is dropped (the model then builds a plain causal mask).
    """
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(f"expected 2D input_ids and attention_mask of one shape, got {tuple(input_ids.shape)} "
                         f"and {tuple(attention_mask.shape)}")
    position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    mask = None if bool((attention_mask == 1).all()) else attention_mask
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, past_key_values=cache,
                use_cache=True, return_dict=True, **_forward_kwargs(model))
    return out.logits[:, -1, :].float(), out.past_key_values, position_ids[:, -1], mask


def _fill_token(constraint: SidConstraint, pad_token_id: int | None) -> int:
    # generate: ``pad_token_id or eos_token_id[0]`` (a pad id of 0 is replaced by EOS too)
    return pad_token_id or constraint.eos_token_id


def sid_beam_search(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, constraint: SidConstraint,
                    num_beams: int, *, pad_token_id: int | None = None) -> SidBeams:
    """Constrained beam search over a left-padded batch with one prefill per prompt; generate's beams and scores.

    ``input_ids``/``attention_mask``: (P, W) as :func:`minirec.evaluate.left_pad` makes them, on the model's device
    (``constraint`` on the same device). Returns :class:`SidBeams` with P x ``num_beams`` rows, the ``num_beams``
    best complete sequences of each prompt in rank order. ``pad_token_id``: the fill after EOS (generate's config
    value; default EOS). Raises :class:`ConstraintViolation` if a beam would continue outside the SID grammar.
    """
    if num_beams < 1:
        raise ValueError(f"num_beams must be at least 1, got {num_beams}")
    with torch.inference_mode():
        return _beam_search(model, input_ids, attention_mask, constraint, num_beams, _fill_token(constraint,
                                                                                                 pad_token_id))


def _beam_search(model, input_ids, attention_mask, constraint, beams, fill) -> SidBeams:
    prompts = input_ids.shape[0]
    steps = constraint.max_new_tokens  # generate's max_length - prompt width
    keep = 2 * beams  # max(2, 1 + number of EOS ids) * num_beams, with one EOS id
    device = input_ids.device
    eos = constraint.eos_token_id
    logits, cache, last_position, mask = _prefill(model, input_ids, attention_mask)
    with torch.inference_mode(False):  # built once and kept by the constraint, which generate's processor reads too
        tables = constraint.tables(logits.shape[-1])
    depths = _depths(tables)
    forward_kwargs = _forward_kwargs(model)
    rows = prompts * beams
    first_rank = torch.arange(keep, device=device) < beams  # only these candidates may become finished
    row_offsets = torch.arange(prompts, device=device).unsqueeze(1) * beams

    running_scores = torch.full((prompts, beams), -BIG, device=device)
    running_scores[:, 0] = 0.0
    running_tokens = torch.full((prompts, beams, steps), fill, dtype=torch.long, device=device)
    running_state = torch.full((prompts, beams), ROOT, dtype=torch.long, device=device)
    finished_tokens = running_tokens.clone()
    finished_scores = torch.full((prompts, beams), -BIG, device=device)
    finished_lengths = torch.zeros((prompts, beams), dtype=torch.long, device=device)
    finished = torch.zeros((prompts, beams), dtype=torch.bool, device=device)
    improvable = torch.ones((prompts, 1), dtype=torch.bool, device=device)
    parent = None

    for step in range(steps):
        if step > 0:
            # Expand (step 1: every beam of prompt p reads prompt p's cache row) or reorder the cache, then forward
            # the running beams' last tokens.
            source = (torch.arange(prompts, device=device).repeat_interleave(beams) if step == 1
                      else (parent + row_offsets).view(-1))
            cache.reorder_cache(source)
            step_mask = None if mask is None else torch.cat(
                [mask.repeat_interleave(beams, 0), mask.new_ones(rows, step)], 1)
            positions = (last_position + step).repeat_interleave(beams).unsqueeze(1)
            out = model(input_ids=running_tokens[:, :, step - 1].reshape(rows, 1), attention_mask=step_mask,
                        position_ids=positions, past_key_values=cache, use_cache=True, return_dict=True,
                        **forward_kwargs)
            cache = out.past_key_values
            logits = out.logits[:, -1, :].float()
        level = depths[min(step, len(depths) - 1)]
        width = level.tokens.numel()
        allowed = torch.log_softmax(logits, dim=-1).index_select(1, level.tokens)  # only the allowed columns
        if step == 0:  # the B copies of a prompt share its log-probs; only the scores of the copies differ
            allowed = allowed + level.penalty[ROOT]
            candidates = running_scores.unsqueeze(2) + allowed.unsqueeze(1)
        else:
            allowed = allowed + level.penalty.index_select(0, running_state.view(-1))
            candidates = running_scores.unsqueeze(2) + allowed.view(prompts, beams, width)
        flat = candidates.view(prompts, beams * width)
        if flat.shape[1] < keep:  # generate keeps 2B candidates even if fewer are allowed: the rest are -inf
            flat = torch.cat([flat, flat.new_full((prompts, keep - flat.shape[1]), NEG_INF)], 1)
        values, index = flat.topk(keep, dim=1)
        real = index < beams * width
        index = torch.where(real, index, 0)
        beam, column = index // width, index % width
        tokens = level.tokens[column]
        state = level.following[running_state.gather(1, beam), column].masked_fill(~real, DEAD)
        hits = (tokens == eos) & torch.isfinite(values) if step + 1 < steps else torch.ones_like(real)
        candidate_tokens = running_tokens.gather(1, beam.unsqueeze(2).expand(-1, -1, steps)).clone()
        candidate_tokens[:, :, step] = torch.where(real, tokens, fill)

        # Running beams: the best candidates that did not just finish (finished ones sink by -1e9).
        running_values, chosen = (values + hits.float() * -BIG).topk(beams, dim=1)
        running_scores = running_values
        running_tokens = candidate_tokens.gather(1, chosen.unsqueeze(2).expand(-1, -1, steps))
        running_state = state.gather(1, chosen)
        parent = beam.gather(1, chosen)

        # Finished hypotheses: candidates in the first B ranks that emitted EOS (or reached the length limit),
        # merged with the finished ones so far; generate's arithmetic (length_penalty=0 divides by 1).
        did_finish = hits & first_rank
        merged_values = values / float((step + 1) ** 0.0)
        merged_values = merged_values + (~improvable).float() * -BIG
        merged_values = merged_values + (~did_finish).float() * -BIG
        merged_scores = torch.cat([finished_scores, merged_values], 1)
        best = merged_scores.topk(beams, dim=1).indices
        finished_scores = merged_scores.gather(1, best)
        finished_tokens = torch.cat([finished_tokens, candidate_tokens], 1).gather(
            1, best.unsqueeze(2).expand(-1, -1, steps))
        finished_lengths = torch.cat([finished_lengths, torch.full_like(did_finish, step + 1, dtype=torch.long)],
                                     1).gather(1, best)
        finished = torch.cat([finished, did_finish], 1).gather(1, best)

        # generate's stopping test: can a running beam still beat the worst finished one (per prompt)?
        worst = torch.where(finished, finished_scores.min(1, keepdim=True).values, -BIG)
        improvable = improvable & (running_scores[:, :1] / float((step + 1) ** 0.0) > worst).any(1, keepdim=True)
        if step + 1 == steps:
            break
        go_on, dead = torch.stack([improvable.any() & ~hits.all(), (running_state == DEAD).any()]).tolist()
        if not go_on:
            break
        if dead:
            raise ConstraintViolation(
                "a running beam left the SID grammar (fewer allowed continuations than beams); generate's "
                "constraint processor would fail on it too")

    width = max(int(finished_lengths.max()), 0)
    return SidBeams(finished_tokens[:, :, :width].reshape(rows, width), finished_scores.reshape(rows))


@dataclass(frozen=True)
class _Paths:
    """Prefixes of one level whose continuation is forced, a single path of ``m`` tokens down to EOS: one forward
    pass of ``m`` tokens (the prefix's last token, then the path but its final EOS) scores the whole sequence."""

    positions: torch.Tensor  # (n,) among the level's prefixes
    inputs: torch.Tensor  # (n, m) tokens to forward
    targets: torch.Tensor  # (n, m) tokens to score (the path)
    leaves: torch.Tensor  # (n,) index of each completed sequence


@dataclass(frozen=True)
class _Level:
    """The prefixes of one length to score, and what to forward for them.

    ``parent``: index among the previous level's ``branching`` prefixes (0: the root, scored by the prefill);
    ``column``: index of the prefix's last token in ``columns``, the level's distinct last tokens. Prefixes ending
    in EOS are complete (``leaf_positions``, sequence ``leaves``); ``branching`` ones are forwarded one token each
    and their children form the next level; the rest are ``paths``.
    """

    parent: torch.Tensor
    column: torch.Tensor
    columns: torch.Tensor
    leaf_positions: torch.Tensor
    leaves: torch.Tensor
    branching: torch.Tensor
    paths: tuple[_Paths, ...]


@dataclass(frozen=True)
class _PrefixTree:
    levels: list[_Level]
    sequences: torch.Tensor  # (sequences, longest) every complete sequence (SID, newline, EOS), -1 after EOS
    lengths: torch.Tensor  # (sequences,)


def _prefix_tree(constraint: SidConstraint, device: torch.device) -> _PrefixTree:
    """Every complete sequence the grammar allows, as a tree of distinct prefixes cut into levels to score."""

    def build() -> _PrefixTree:
        successors = constraint.next_node[:, :-1]
        vocab_ids = constraint.vocab_ids.tolist()
        node, column = (successors != DEAD).nonzero(as_tuple=True)
        children: dict[int, list[tuple[int, int]]] = {}
        for n, c, target in zip(node.tolist(), column.tolist(), successors[node, column].tolist()):
            children.setdefault(n, []).append((vocab_ids[c], target))

        def path_below(trie_node: int) -> tuple[int, ...] | None:
            """The forced tokens from ``trie_node`` to EOS, or None where the grammar branches (or ends early)."""
            tokens = []
            while trie_node != constraint.terminal:
                out = children.get(trie_node, [])
                if len(out) != 1 or len(tokens) > constraint.max_new_tokens:
                    return None
                token, trie_node = out[0]
                tokens.append(token)
            return tuple(tokens)

        levels, sequences = [], []
        # The active prefixes of the current level: (parent index among branching prefixes, token, trie node, tokens).
        active = [(0, token, target, (token,)) for token, target in children.get(ROOT, [])]
        depth = 1
        while active:
            if depth > constraint.max_new_tokens:
                raise ConstraintViolation("the SID grammar has paths longer than max_new_tokens")
            columns = sorted({token for _, token, _, _ in active})
            column_of = {token: index for index, token in enumerate(columns)}
            leaf_positions, leaves, branching, following = [], [], [], []
            paths: dict[int, list[tuple[int, tuple[int, ...], tuple[int, ...], int]]] = {}
            for position, (_, token, trie_node, tokens) in enumerate(active):
                path = path_below(trie_node)
                if trie_node == constraint.terminal:
                    leaf_positions.append(position)
                    leaves.append(len(sequences))
                    sequences.append(tokens)
                elif path is not None:
                    paths.setdefault(len(path), []).append(
                        (position, (token, *path[:-1]), path, len(sequences)))
                    sequences.append(tokens + path)
                else:
                    following += [(len(branching), child_token, child, tokens + (child_token,))
                                  for child_token, child in children.get(trie_node, [])]
                    branching.append(position)
            longs = lambda values: torch.tensor(values, dtype=torch.long, device=device)  # noqa: E731
            levels.append(_Level(
                parent=longs([parent for parent, _, _, _ in active]),
                column=longs([column_of[token] for _, token, _, _ in active]),
                columns=longs(columns), leaf_positions=longs(leaf_positions), leaves=longs(leaves),
                branching=longs(branching),
                paths=tuple(_Paths(*(longs([row[i] for row in rows]) for i in range(4))) for rows in paths.values()),
            ))
            active, depth = following, depth + 1
        if not sequences:
            raise ConstraintViolation("the SID grammar allows no complete sequence")
        longest = max(map(len, sequences))
        return _PrefixTree(
            levels=levels,
            sequences=torch.tensor([list(s) + [-1] * (longest - len(s)) for s in sequences], device=device),
            lengths=torch.tensor([len(s) for s in sequences], device=device),
        )

    return _memo(constraint.next_node, f"prefix tree on {device}", build)


class _SharedPromptLayer(DynamicLayer):
    """A cache layer whose past is one prompt's keys/values, broadcast to every row (a view, not copied), then each
    row's own prefix tokens; the forward's ``update`` concatenates them with the new tokens (the one copy)."""

    def __init__(self, prompt: tuple[torch.Tensor, torch.Tensor], own: tuple[torch.Tensor, torch.Tensor] | None):
        super().__init__()
        self.prompt, self.own = prompt, own
        self.dtype, self.device = prompt[0].dtype, prompt[0].device
        self.is_initialized = True
        self.past = prompt[0].shape[-2] + (0 if own is None else own[0].shape[-2])

    def update(self, key_states, value_states, *args, **kwargs):
        rows = key_states.shape[0]
        stored = []
        for index, new in enumerate((key_states, value_states)):
            parts = [self.prompt[index].expand(rows, -1, -1, -1)]
            if self.own is not None:
                parts.append(self.own[index])
            stored.append(torch.cat(parts + [new], dim=-2))
        self.keys, self.values = stored
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.past if self.keys is None else self.keys.shape[-2]


def exact_top_k(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, constraint: SidConstraint, k: int,
                *, chunk_rows: int = 1024, pad_token_id: int | None = None) -> SidBeams:
    """The true ``k`` best catalogue sequences of each prompt and their scores, in :func:`sid_beam_search`'s format.

    Every complete sequence is scored (sum of full-vocabulary float32 log-probabilities, added in generation order
    like beam search's running scores). The prompts are prefilled once; then, prompt by prompt, each level of the
    prefix tree is batched forward passes (``chunk_rows`` tokens at most) over the distinct prefixes at that level,
    each on top of the prompt's cache (shared, not copied) and its parent prefix's cached keys and values. A prefix
    whose continuation is forced (a SID's last token, then newline and EOS) is scored in one pass of several tokens.
    ``k`` is capped at the number of sequences the grammar allows.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    with torch.inference_mode():
        return _exact_top_k(model, input_ids, attention_mask, constraint, k, chunk_rows,
                            _fill_token(constraint, pad_token_id))


def _exact_top_k(model, input_ids, attention_mask, constraint, k, chunk_rows, fill) -> SidBeams:
    device = input_ids.device
    tree = _prefix_tree(constraint, device)
    logits, cache, last_position, _ = _prefill(model, input_ids, attention_mask)
    if any(type(layer) is not DynamicLayer for layer in cache.layers):
        raise NotImplementedError("exact_top_k needs a full-attention DynamicCache (no sliding-window layers)")
    config = model.config.get_text_config(decoder=True)
    width = input_ids.shape[1]
    scores = []
    for prompt in range(input_ids.shape[0]):
        start = width - int(last_position[prompt]) - 1  # the left padding: real tokens only from here
        kv = [(layer.keys[prompt:prompt + 1, :, start:], layer.values[prompt:prompt + 1, :, start:])
              for layer in cache.layers]
        scores.append(_score_prompt(model, config, kv, logits[prompt:prompt + 1], int(last_position[prompt]), tree,
                                    chunk_rows))
    scores = torch.stack(scores)
    k = min(k, scores.shape[1])
    best_scores, best = scores.topk(k, dim=1)
    best = best.flatten()
    longest = int(tree.lengths[best].max())
    tokens = tree.sequences[best, :longest]
    return SidBeams(tokens.masked_fill(tokens < 0, fill), best_scores.flatten())


def _score_prompt(model, config, prompt_kv, logits, last_position: int, tree: _PrefixTree, chunk_rows: int):
    """Scores of every complete sequence for one prompt (its keys/values unpadded, ``logits`` (1, V) after it)."""
    forward_kwargs = _forward_kwargs(model)
    scores = torch.full((tree.sequences.shape[0],), NEG_INF, device=logits.device)

    def forward(tokens: torch.Tensor, own, depth: int, keep: int):
        """Rows of ``tokens`` (rows, m) after the prompt and their own ``depth - 1`` prefix tokens."""
        layers = [_SharedPromptLayer(prompt, None if own is None else own[index])
                  for index, prompt in enumerate(prompt_kv)]
        chunk_cache = DynamicCache(config=config)
        chunk_cache.layers = layers
        positions = last_position + depth + torch.arange(tokens.shape[1], device=tokens.device)
        out = model(input_ids=tokens, position_ids=positions.expand(tokens.shape[0], -1), past_key_values=chunk_cache,
                    use_cache=True, return_dict=True, **({"logits_to_keep": keep} if forward_kwargs else {}))
        return out.logits[:, -keep:].float(), layers

    gathered = torch.log_softmax(logits, dim=-1).index_select(1, tree.levels[0].columns)  # (1 root, columns)
    parent_scores = torch.zeros(1, device=logits.device)
    own_kv = None  # per layer (branching prefixes of the previous level, heads, depth - 1, head dim)
    for depth, level in enumerate(tree.levels, start=1):
        level_scores = parent_scores[level.parent] + gathered[level.parent, level.column]
        scores[level.leaves] = level_scores[level.leaf_positions]
        for paths in level.paths:  # forced continuations: several tokens in one pass, no cache kept
            m = paths.inputs.shape[1]
            step = max(1, chunk_rows // m)
            for begin in range(0, paths.inputs.shape[0], step):
                rows = slice(begin, begin + step)
                positions = paths.positions[rows]
                own = None if own_kv is None else [
                    (keys.index_select(0, level.parent[positions]), values.index_select(0, level.parent[positions]))
                    for keys, values in own_kv]
                path_logits, _ = forward(paths.inputs[rows], own, depth, m)
                picked = torch.log_softmax(path_logits, dim=-1).gather(2, paths.targets[rows].unsqueeze(2)).squeeze(2)
                total = level_scores[positions]
                for position in range(m):
                    total = total + picked[:, position]
                scores[paths.leaves[rows]] = total
        if level.branching.numel() == 0 or depth == len(tree.levels):
            break
        next_columns = tree.levels[depth].columns
        pieces, kept = [], []
        for begin in range(0, level.branching.numel(), chunk_rows):
            positions = level.branching[begin:begin + chunk_rows]
            own = None if own_kv is None else [
                (keys.index_select(0, level.parent[positions]), values.index_select(0, level.parent[positions]))
                for keys, values in own_kv]
            step_logits, layers = forward(level.columns[level.column[positions]].unsqueeze(1), own, depth, 1)
            pieces.append(torch.log_softmax(step_logits[:, -1], dim=-1).index_select(1, next_columns))
            past = layers[0].keys.shape[-2] - depth  # this row's own tokens are the last ``depth``
            kept.append([(layer.keys[:, :, past:].clone(), layer.values[:, :, past:].clone()) for layer in layers])
        gathered = torch.cat(pieces)
        own_kv = [(torch.cat([piece[index][0] for piece in kept]), torch.cat([piece[index][1] for piece in kept]))
                  for index in range(len(prompt_kv))]
        parent_scores = level_scores[level.branching]
    return scores


def beam_recall(beam_sids: Sequence[Sequence], exact_sids: Sequence[Sequence], k: int) -> float:
    """Mean over rows of the share of the exact top ``k`` (``exact_sids[row][:k]``) found in ``beam_sids[row]``.

    Rows are lists of SIDs (strings, token tuples: anything hashable), best first. A true top-k SID that beam search
    found is within its top k anyway (every beam above it scores higher, so is true top-k too; ties aside), so this
    is also the overlap of the two top-k lists.
    """
    if len(beam_sids) != len(exact_sids):
        raise ValueError(f"{len(beam_sids)} beam rows but {len(exact_sids)} exact rows")
    if not exact_sids:
        raise ValueError("no rows")
    shares = []
    for beams, exact in zip(beam_sids, exact_sids):
        wanted = list(exact)[:k]
        if not wanted:
            raise ValueError("an exact row is empty")
        found = set(beams)
        shares.append(sum(sid in found for sid in wanted) / len(wanted))
    return sum(shares) / len(shares)
