"""The one-prefill SID beam search against transformers' own beam search (``generate_sid_beams``) on a trained tiny
model, the exact top-k against beam search and against brute force, failing closed, and ``beam_recall``.

Ties: the two decoders compute the same float32 sums, but the prefill of P rows instead of P x B may round
differently, so two beams whose scores differ by less than TOL may come out in either order, and a near-tie at the
last rank may keep either SID. :func:`_assert_same_beams` allows exactly that and nothing else.
"""

from __future__ import annotations

import random
from typing import NamedTuple

import pytest
import torch

from minirec import prompts
from minirec.constraint import ConstraintViolation, SidConstraint, newline_ids, sid_token_ids
from minirec.data import Catalogue, read_split
from minirec.evaluate import encode_prompts, left_pad, split_prompts
from minirec.generation import beam_generation_config, generate_sid_beams
from minirec.models import add_sid_tokens, load_model_and_tokenizer
from minirec.sid import split_sid
from minirec.sid_decoder import SidBeams, beam_recall, exact_top_k, sid_beam_search

TOL = 1e-5  # score differences below this are float noise (scores are sums of ~5 log-probs around -15)
FILLER = -1e8  # generate's empty slots score about -1e9
TRAIN_STEPS, TRAIN_BATCH = 60, 32
TEST_USERS = 300  # the first test rows: the default tests use 0-53, the slow one 100-300


def _four_token_sids(valid_sids) -> list[str]:
    """The Industrial SIDs with a 4th token on two of every five: one keeps its 3-token SID as well (a node that
    allows both the end and a 4th token), one has only two 4-token SIDs."""
    sids = []
    for index, sid in enumerate(sorted(valid_sids)):
        if index % 5 == 1:
            sids += [sid, sid + "<d_1>"]
        elif index % 5 == 2:
            sids += [sid + "<d_1>", sid + "<d_2>"]
        else:
            sids.append(sid)
    return sids


def _four_token_target(sid: str, index: int, row: int) -> str:
    if index % 5 == 1:
        return sid if row % 2 else sid + "<d_1>"
    if index % 5 == 2:
        return sid + ("<d_1>" if row % 2 else "<d_2>")
    return sid


@pytest.fixture(scope="session")
def trained(tiny_industrial, industrial_files):
    """The tiny model with ``<d_1>``/``<d_2>`` added, trained for 60 AdamW steps (:func:`build_trained`)."""
    return build_trained(tiny_industrial, industrial_files)


def build_trained(tiny_industrial, industrial_files) -> "Trained":
    """The tiny model with ``<d_1>``/``<d_2>`` added, trained for 60 AdamW steps (batch 32, ~10 s) on test-style
    prompts of train rows whose targets use the 4-token SIDs: peaked, prompt-dependent log-probs instead of the
    untrained model's near-uniform ones, which tie everywhere. Also used by bench/bench_rollout.py."""
    from minirec.sft.data import encode_prompts as encode_sft

    model, tokenizer = load_model_and_tokenizer(tiny_industrial)
    catalogue = Catalogue.load(industrial_files)
    four = _four_token_sids(catalogue.valid_sids)
    add_sid_tokens(tokenizer, model, Catalogue(item_tokens=dict(enumerate(map(split_sid, four))), items={}))
    position = {sid: index for index, sid in enumerate(sorted(catalogue.valid_sids))}
    frame = read_split(industrial_files.train)
    rng = random.Random(0)
    picked = rng.sample(range(len(frame)), TRAIN_STEPS * TRAIN_BATCH)  # only what the steps will see is encoded
    histories, targets = frame["history_item_sid_list"], frame["item_sid"]
    samples = [prompts.test_prompt(histories.iat[row],
                                   _four_token_target(targets.iat[row], position.get(targets.iat[row], 0), row))
               for row in picked]
    encoded = encode_sft(tokenizer, samples, cutoff_len=512)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(TRAIN_STEPS):
        rows = range(step * TRAIN_BATCH, (step + 1) * TRAIN_BATCH)
        width = max(len(encoded["input_ids"][row]) for row in rows)
        ids = torch.full((TRAIN_BATCH, width), tokenizer.eos_token_id)
        labels = torch.full((TRAIN_BATCH, width), -100)
        mask = torch.zeros(TRAIN_BATCH, width, dtype=torch.long)
        for line, row in enumerate(rows):
            n = len(encoded["input_ids"][row])
            ids[line, :n] = torch.tensor(encoded["input_ids"][row])
            labels[line, :n] = torch.tensor(encoded["labels"][row])
            mask[line, :n] = 1
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
        targets = labels[:, 1:]
        supervised = targets != -100  # the head only where the loss is: the SID, newline and EOS
        loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[supervised]), targets[supervised])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    three = SidConstraint.from_catalogue(catalogue, tokenizer)
    four_constraint = SidConstraint.from_catalogue(catalogue, tokenizer, sids=four)
    assert four_constraint.max_new_tokens == three.max_new_tokens + 1
    test_prompts = encode_prompts(tokenizer, split_prompts(read_split(industrial_files.test).head(TEST_USERS)))
    return Trained(model, tokenizer, {3: three, 4: four_constraint}, {3: sorted(catalogue.valid_sids), 4: four},
                   test_prompts)


class Trained(NamedTuple):
    model: object
    tokenizer: object
    constraints: dict[int, SidConstraint]  # by longest SID length
    sids: dict[int, list[str]]
    encoded: list[list[int]]  # the first TEST_USERS test rows' prompt ids


def _rows(tokens: torch.Tensor, eos: int) -> list[tuple[int, ...]]:
    """Each row up to its first EOS, inclusive."""
    rows = []
    for row in tokens.tolist():
        rows.append(tuple(row[:row.index(eos) + 1]) if eos in row else tuple(row))
    return rows


def _assert_same_beams(expected, actual, num_beams: int, eos: int) -> int:
    """Same ranked sequences and scores per prompt, up to near-ties (see the module docstring); returns how many
    prompts have identical lists, order included."""
    (want_tokens, want_scores), (got_tokens, got_scores) = expected, actual
    assert got_tokens.shape[0] == want_tokens.shape[0] and got_scores.shape == want_scores.shape
    want_rows, got_rows = _rows(want_tokens, eos), _rows(got_tokens, eos)
    identical = 0
    for start in range(0, len(want_rows), num_beams):
        span = slice(start, start + num_beams)
        want_s, got_s = want_scores[span].double(), got_scores[span].double()
        real = want_s > FILLER
        assert torch.equal(real, got_s > FILLER), "different numbers of real beams"
        assert torch.allclose(got_s[real], want_s[real], rtol=0, atol=TOL), (got_s - want_s).abs().max()
        assert torch.all(got_s[~real] < FILLER) and torch.all(got_s[real][:-1] >= got_s[real][1:])
        # Filler slots may repeat a real sequence (generate fills them with whatever ties at -1e9): real ones only.
        want = {row: score for row, score in zip(want_rows[span], want_s.tolist()) if score > FILLER}
        got = {row: score for row, score in zip(got_rows[span], got_s.tolist()) if score > FILLER}
        assert len(want) == len(got) == int(real.sum()), "a real sequence returned twice"
        for row in want.keys() & got.keys():
            assert abs(want[row] - got[row]) <= TOL, (row, want[row], got[row])
        last = min(want.values(), default=0.0)
        for row in want.keys() ^ got.keys():  # only a near-tie at the last rank may keep a different sequence
            assert abs((want.get(row) or got.get(row)) - last) <= TOL, (row, want.get(row), got.get(row), last)
        identical += want_rows[span] == got_rows[span] and torch.equal(want_s, got_s)
    return identical


def _compare(trained, length: int, num_beams: int, batch_size: int, users: int, offset: int = 0) -> float:
    """Both decoders over ``users`` test prompts in batches of ``batch_size``; the share of identical lists."""
    model, tokenizer, constraints, _, encoded = trained
    constraint, eos = constraints[length], tokenizer.eos_token_id
    config = beam_generation_config(num_beams, constraint.max_new_tokens, eos, eos)
    identical = 0
    for start in range(offset, offset + users, batch_size):
        batch = left_pad(encoded[start:min(start + batch_size, offset + users)], eos, "cpu")
        expected = generate_sid_beams(model, *batch, constraint, config)
        actual = sid_beam_search(model, *batch, constraint, num_beams, pad_token_id=eos)
        assert isinstance(actual, SidBeams) and actual.tokens.dtype == torch.long
        assert constraint.is_complete(actual.tokens[actual.scores > FILLER]).all()
        identical += _assert_same_beams(expected, actual, num_beams, eos)
    return identical / users


@pytest.mark.parametrize("length, num_beams, batch_size, users", [
    (3, 50, 16, 24),  # a batch of 16 and a final 8; 50 beams > 48 first codes
    (4, 16, 7, 12),  # 4-token SIDs mixed with 3-token ones; a batch of 7 and a final 5
    (4, 50, 7, 9),
    (3, 16, 1, 2),
])
def test_beams_equal_generate_on_a_trained_model(trained, length, num_beams, batch_size, users):
    assert _compare(trained, length, num_beams, batch_size, users) >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("length", [3, 4])
@pytest.mark.parametrize("num_beams", [50, 16])
@pytest.mark.parametrize("batch_size", [16, 7, 1])
def test_beams_equal_generate_for_200_users(trained, length, num_beams, batch_size):
    assert _compare(trained, length, num_beams, batch_size, users=200, offset=100) >= 0.9


@pytest.mark.parametrize("length, users", [(3, 4), (4, 3)])
def test_exact_top_k_is_at_least_as_good_as_beam_search_at_every_rank(trained, length, users):
    model, tokenizer, constraints, _, encoded = trained
    constraint, eos, num_beams = constraints[length], tokenizer.eos_token_id, 50
    batch = left_pad(encoded[40:40 + users], eos, "cpu")
    beams = sid_beam_search(model, *batch, constraint, num_beams)
    exact = exact_top_k(model, *batch, constraint, num_beams, chunk_rows=1500)
    assert exact.tokens.shape[0] == beams.tokens.shape[0] and constraint.is_complete(exact.tokens).all()
    exact_scores, beam_scores = exact.scores.view(users, num_beams), beams.scores.view(users, num_beams)
    assert torch.all(exact_scores >= beam_scores - TOL)
    assert torch.all(exact_scores[:, :-1] >= exact_scores[:, 1:])
    rows = lambda result: [_rows(result.tokens, eos)[i:i + num_beams] for i in range(0, users * num_beams, num_beams)]
    recalls = [beam_recall(rows(beams), rows(exact), k) for k in (1, 10, 50)]
    assert recalls[0] >= 0.5 and all(0.0 < recall <= 1.0 for recall in recalls), recalls
    # Where beam search found the true best sequence, both report it with the same score.
    found = beam_scores[:, 0] >= exact_scores[:, 0] - TOL
    assert found.any() and torch.allclose(beam_scores[found, 0], exact_scores[found, 0], atol=TOL, rtol=0)


def _brute_force(model, prompt: list[int], sequences: list[list[int]], batch: int = 400) -> torch.Tensor:
    """Each sequence's score from a plain forward pass of prompt + sequence (no cache, no padding before it):
    float32 log-softmax over the vocabulary, summed in generation order."""
    scores = []
    with torch.inference_mode():
        for start in range(0, len(sequences), batch):
            chunk = sequences[start:start + batch]
            longest = max(map(len, chunk))
            targets = torch.tensor([seq + [0] * (longest - len(seq)) for seq in chunk])
            ids = torch.cat([torch.tensor(prompt).expand(len(chunk), -1), targets], 1)
            logits = model(input_ids=ids, logits_to_keep=longest + 1).logits[:, :longest].float()
            picked = torch.log_softmax(logits, -1).gather(2, targets.unsqueeze(2)).squeeze(2)
            total = torch.zeros(len(chunk))
            for position in range(longest):
                valid = torch.tensor([len(seq) > position for seq in chunk])
                total = torch.where(valid, total + picked[:, position], total)
            scores.append(total)
    return torch.cat(scores)


def _check_against_brute_force(trained, checks) -> None:
    """``checks``: (SID length, user position in a left-padded batch of test prompts 50-52) pairs."""
    model, tokenizer, constraints, catalogue_sids, encoded = trained
    eos = tokenizer.eos_token_id
    tail = newline_ids(tokenizer) + [eos]
    batch_prompts = [encoded[50], encoded[51], encoded[52]][:max(2, max(user for _, user in checks) + 1)]
    assert len(batch_prompts[0]) < len(batch_prompts[1])  # the batch is left-padded
    batch = left_pad(batch_prompts, eos, "cpu")
    for length, user in checks:
        constraint = constraints[length]
        count = constraint.num_sids
        exact = exact_top_k(model, *batch, constraint, count, chunk_rows=2000)
        assert exact.tokens.shape[0] == len(batch_prompts) * count
        span = slice(user * count, (user + 1) * count)
        got = dict(zip(_rows(exact.tokens[span], eos), exact.scores[span].tolist()))
        sequences = [ids + tail for ids in sid_token_ids(tokenizer, catalogue_sids[length])]
        assert sorted(got) == sorted(map(tuple, sequences))  # every catalogue SID, once
        brute = _brute_force(model, batch_prompts[user], sequences)
        mine = torch.tensor([got[tuple(seq)] for seq in sequences])
        assert torch.allclose(mine, brute, atol=2e-5, rtol=0), (mine - brute).abs().max()


def test_exact_top_k_scores_every_sid_as_brute_force_does(trained):
    """Every sequence of the mixed 3/4-token catalogue (5,138) for the padded prompt of a batch of two."""
    _check_against_brute_force(trained, [(4, 0)])


@pytest.mark.slow
def test_exact_top_k_scores_every_sid_as_brute_force_does_for_three_users(trained):
    _check_against_brute_force(trained, [(3, 0), (3, 1), (3, 2), (4, 0), (4, 2)])


def test_fewer_sids_than_beams_gives_generate_s_real_beams_and_filler(trained):
    """7 SIDs (3 and 4 tokens) for 10 beams: generate returns the 7 and three slots scoring about -1e9."""
    model, tokenizer, _, _, encoded = trained
    eos = tokenizer.eos_token_id
    level = lambda letter: sorted(t for t in tokenizer.get_vocab() if t.startswith(f"<{letter}_"))[:3]  # noqa: E731
    (a1, a2, _), (b1, b3, _), (c1, c2, c4), (d1, d2) = level("a"), level("b"), level("c"), level("d")
    sids = [a1 + b1 + c1, a1 + b1 + c2 + d1, a1 + b1 + c2 + d2, a2 + b3 + c1, a2 + b3 + c4 + d1, a2 + b3 + c4 + d2,
            a2 + b3 + c4]
    constraint = SidConstraint.from_token_sequences(sid_token_ids(tokenizer, sids), newline_ids(tokenizer), eos, eos)
    for num_beams in (7, 10):
        config = beam_generation_config(num_beams, constraint.max_new_tokens, eos, eos)
        batch = left_pad(encoded[:3], eos, "cpu")
        expected = generate_sid_beams(model, *batch, constraint, config)
        actual = sid_beam_search(model, *batch, constraint, num_beams)
        _assert_same_beams(expected, actual, num_beams, eos)
        real = actual.scores.view(3, num_beams) > FILLER
        assert torch.all(real.sum(1) == 7)
        exact = exact_top_k(model, *batch, constraint, num_beams)
        assert exact.scores.shape == (3 * 7,)  # k is capped at the 7 sequences
        assert torch.allclose(exact.scores.view(3, 7), actual.scores.view(3, num_beams)[:, :7], atol=TOL, rtol=0)


def test_fails_closed_where_generate_fails(trained):
    """A SID whose end node lost its newline edge is a dead end: once the best beam sits there, one running beam has
    no allowed continuation. Generate's processor raises after decoding; the decoder raises too."""
    model, tokenizer, constraints, catalogue_sids, encoded = trained
    eos = tokenizer.eos_token_id
    batch = left_pad(encoded[:2], eos, "cpu")
    best = _rows(sid_beam_search(model, *batch, constraints[3], 4).tokens, eos)[0]
    broken = SidConstraint.from_token_sequences(sid_token_ids(tokenizer, catalogue_sids[3]), newline_ids(tokenizer),
                                                eos, pad_token_id=eos)
    node = 1  # ROOT
    column = {token: index for index, token in enumerate(broken.vocab_ids.tolist())}
    for token in best[:3]:
        node = int(broken.next_node[node, column[token]])
    broken.next_node[node, column[best[3]]] = 0  # DEAD: the best beam's SID can no longer end
    config = beam_generation_config(4, broken.max_new_tokens, eos, eos)
    with pytest.raises(ConstraintViolation):
        generate_sid_beams(model, *batch, broken, config)
    with pytest.raises(ConstraintViolation, match="left the SID grammar"):
        sid_beam_search(model, *batch, broken, 4)


def test_beam_recall():
    exact = [["a", "b", "c"], ["x", "y", "z"]]
    assert beam_recall([["b", "a", "q"], ["z", "q", "r"]], exact, 2) == pytest.approx((1.0 + 0.0) / 2)
    assert beam_recall([["c", "b", "a"], ["x"]], exact, 3) == pytest.approx((1.0 + 1 / 3) / 2)
    assert beam_recall([["a"]], [["a"]], 10) == 1.0  # fewer exact rows than k: the share of what there is
    with pytest.raises(ValueError):
        beam_recall([["a"]], [], 1)


def test_imports_only_torch_transformers_and_the_constraint():
    """A GPU machine without mlflow, trl or datasets imports the decoder (minirec.constraint brings pandas)."""
    import ast
    import subprocess
    import sys

    import minirec.sid_decoder as module

    tree = ast.parse(open(module.__file__, encoding="utf-8").read())
    imported = {node.module.split(".")[0] if node.module != "minirec.constraint" else node.module
                for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert imported <= {"__future__", "inspect", "weakref", "dataclasses", "typing", "torch", "transformers",
                        "minirec.constraint"}, imported
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('mlflow', 'trl', 'datasets', 'great_expectations'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import minirec.sid_decoder\n"
        "assert not any(m.split('.')[0] in ('mlflow', 'trl', 'datasets') for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", blocker], check=True, timeout=120)
