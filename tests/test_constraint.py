"""Constrained beam search on the tiny model: valid and distinct SIDs, 4-token SIDs, failing closed, and an
explicit generation config that checkpoint defaults cannot change."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import GenerationConfig

from minirec.constraint import ConstraintViolation, SidConstraint
from minirec.data import Catalogue, read_split
from minirec.evaluate import encode_prompts, left_pad, split_prompts
from minirec.generation import beam_generation_config, effective_generation_config, generate_sid_beams
from minirec.models import add_sid_tokens, load_model_and_tokenizer
from minirec.sid import split_sid


def _prompt_batch(tokenizer, files, rows: int, phrasing: str = "test"):
    frame = read_split(files.test).head(rows)
    return left_pad(encode_prompts(tokenizer, split_prompts(frame, phrasing)), tokenizer.eos_token_id, "cpu")


def _decode(tokenizer, generated, num_beams):
    texts = [text.strip() for text in tokenizer.batch_decode(generated, skip_special_tokens=True)]
    return [texts[i:i + num_beams] for i in range(0, len(texts), num_beams)]


def test_fifty_beams_are_fifty_distinct_catalogue_sids_with_only_48_first_tokens(
    tiny_loaded, industrial_catalogue, industrial_files,
):
    model, tokenizer = tiny_loaded
    first_tokens = {split_sid(sid)[0] for sid in industrial_catalogue.valid_sids}
    assert len(first_tokens) == 48  # fewer than the 50 beams: two beams must fall out at step 0
    constraint = SidConstraint.from_catalogue(industrial_catalogue, tokenizer)
    config = beam_generation_config(50, constraint.max_new_tokens, tokenizer.eos_token_id, tokenizer.eos_token_id)
    generated, scores = generate_sid_beams(model, *_prompt_batch(tokenizer, industrial_files, 3), constraint, config)

    assert constraint.is_complete(generated).all()
    assert torch.isfinite(scores).all()
    for ranked, beam_scores in zip(_decode(tokenizer, generated, 50), scores.view(3, 50)):
        assert len(ranked) == len(set(ranked)) == 50
        assert set(ranked) <= industrial_catalogue.valid_sids
        assert torch.all(beam_scores[:-1] >= beam_scores[1:])  # best first


def _four_token_catalogue() -> Catalogue:
    """Two collision groups get a 4th token, as constrained RQ-Kmeans writes them (docs/upstream.md 3.4)."""
    tokens = {
        0: ["<a_1>", "<b_1>", "<c_1>"],
        1: ["<a_1>", "<b_1>", "<c_2>", "<d_1>"],
        2: ["<a_1>", "<b_1>", "<c_2>", "<d_2>"],
        3: ["<a_2>", "<b_3>", "<c_1>"],
        4: ["<a_2>", "<b_3>", "<c_4>", "<d_1>"],
        5: ["<a_2>", "<b_3>", "<c_4>", "<d_2>"],
        6: ["<a_2>", "<b_3>", "<c_4>", "<d_3>"],
    }
    items = {item: {"title": f"item {item}", "description": "", "brand": "", "categories": ""} for item in tokens}
    lines = [("".join(t), f"item {item}", str(item)) for item, t in tokens.items()]
    return Catalogue(item_tokens=tokens, items=items, info_lines=lines)


def test_variable_length_sids_with_a_fourth_token(tiny_industrial, industrial_files):
    model, tokenizer = load_model_and_tokenizer(tiny_industrial)
    catalogue = _four_token_catalogue()
    add_sid_tokens(tokenizer, model, catalogue)
    constraint = SidConstraint.from_catalogue(catalogue, tokenizer)
    ids = tokenizer.convert_tokens_to_ids
    newline, eos = tokenizer("\n", add_special_tokens=False).input_ids, tokenizer.eos_token_id
    assert constraint.max_new_tokens == 4 + len(newline) + 1

    def allowed_after(tokens, tail=()):
        generated = ids(tokens) + list(tail)
        processor = constraint.logits_processor()
        for step in range(len(generated) + 1):  # one call per decoding step, as generate makes them
            out = processor(torch.tensor([[5, 6, 7] + generated[:step]]), torch.zeros(1, len(tokenizer)))
        return set(torch.isfinite(out[0]).nonzero().flatten().tolist())

    assert allowed_after(["<a_1>", "<b_1>"]) == set(ids(["<c_1>", "<c_2>"]))
    assert allowed_after(["<a_1>", "<b_1>", "<c_1>"]) == {newline[0]}
    assert allowed_after(["<a_1>", "<b_1>", "<c_2>"]) == set(ids(["<d_1>", "<d_2>"]))
    assert allowed_after(["<a_2>", "<b_3>", "<c_4>", "<d_3>"]) == {newline[0]}
    assert allowed_after(["<a_2>", "<b_3>", "<c_4>", "<d_3>"], newline) == {eos}

    # With as many beams as SIDs, exact beam search must return every SID exactly once.
    config = beam_generation_config(7, constraint.max_new_tokens, eos, eos)
    generated, _ = generate_sid_beams(model, *_prompt_batch(tokenizer, industrial_files, 2), constraint, config)
    for ranked in _decode(tokenizer, generated, 7):
        assert sorted(ranked) == sorted(catalogue.valid_sids)


def test_fails_closed_on_a_state_outside_the_grammar(tiny_loaded, industrial_catalogue):
    _, tokenizer = tiny_loaded
    constraint = SidConstraint.from_catalogue(industrial_catalogue, tokenizer)
    valid_first = tokenizer.convert_tokens_to_ids(split_sid(sorted(industrial_catalogue.valid_sids)[0])[0])
    off_grammar = tokenizer("hello", add_special_tokens=False).input_ids[0]
    processor = constraint.logits_processor()
    prompt = torch.full((2, 4), 7)
    processor(prompt, torch.zeros(2, len(tokenizer)))
    processor.check()  # a clean first step
    out = processor(torch.cat([prompt, torch.tensor([[valid_first], [off_grammar]])], 1), torch.zeros(2, len(tokenizer)))
    assert torch.isfinite(out[0]).any()
    assert torch.isinf(out[1]).all() and (out[1] < 0).all()
    with pytest.raises(ConstraintViolation, match="1 beam rows left the SID grammar"):
        processor.check()
    with pytest.raises(ConstraintViolation, match="fresh processor"):
        processor(torch.full((2, 9), 7), torch.zeros(2, len(tokenizer)))


def test_masks_do_not_depend_on_the_prompt_length(tiny_loaded, industrial_catalogue, industrial_files):
    model, tokenizer = tiny_loaded
    constraint = SidConstraint.from_catalogue(industrial_catalogue, tokenizer)
    prefix = tokenizer.convert_tokens_to_ids(["<a_68>", "<b_241>"])
    scores = torch.randn(1, len(tokenizer)).log_softmax(-1)
    masks = []
    for prompt_length in (1, 17, 300):
        processor = constraint.logits_processor()
        processor(torch.zeros(1, prompt_length, dtype=torch.long), scores.clone())
        processor(torch.tensor([[0] * prompt_length + prefix[:1]]), scores.clone())
        masked = processor(torch.tensor([[0] * prompt_length + prefix]), scores.clone())
        masks.append(torch.isfinite(masked))
    assert torch.equal(masks[0], masks[1]) and torch.equal(masks[1], masks[2])
    expected = {split_sid(sid)[2] for sid in industrial_catalogue.valid_sids if sid.startswith("<a_68><b_241>")}
    assert set(tokenizer.convert_ids_to_tokens(masks[0][0].nonzero().flatten().tolist())) == expected
    assert torch.equal(masked[masks[2]], scores[masks[2]])  # allowed tokens keep their log-probabilities

    # Prompts that end in anything (no "### Response:\n", no preamble) still decode only catalogue SIDs.
    config = beam_generation_config(8, constraint.max_new_tokens, tokenizer.eos_token_id, tokenizer.eos_token_id)
    for text in ("", "x", "a much longer prompt that does not end in the response header " * 4):
        ids = tokenizer(text, add_special_tokens=False).input_ids or [tokenizer.eos_token_id]
        generated, _ = generate_sid_beams(model, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long),
                                          constraint, config)
        assert set(_decode(tokenizer, generated, 8)[0]) <= industrial_catalogue.valid_sids


SAMPLING_DEFAULTS = dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.1)


def test_checkpoint_sampling_defaults_cannot_leak_into_beam_search(
    tiny_industrial, tiny_loaded, industrial_catalogue, industrial_files, tmp_path,
):
    leaky_dir = tmp_path / "leaky"
    shutil.copytree(tiny_industrial, leaky_dir)
    settings = json.loads((leaky_dir / "generation_config.json").read_text())
    (leaky_dir / "generation_config.json").write_text(json.dumps({**settings, **SAMPLING_DEFAULTS}))
    leaky, tokenizer = load_model_and_tokenizer(leaky_dir)
    clean, _ = tiny_loaded
    assert leaky.generation_config.do_sample and leaky.generation_config.top_k == 20

    constraint = SidConstraint.from_catalogue(industrial_catalogue, tokenizer)
    eos = tokenizer.eos_token_id
    # Upstream's config (docs/upstream.md 6.3) leaves the sampling fields unset, so the checkpoint's defaults fill them in.
    upstream = GenerationConfig(num_beams=20, num_return_sequences=20, length_penalty=0.0,
                                max_new_tokens=constraint.max_new_tokens, pad_token_id=eos, eos_token_id=eos)
    merged, _ = leaky._prepare_generation_config(upstream)
    assert merged.do_sample and merged.repetition_penalty == 1.1

    config = beam_generation_config(20, constraint.max_new_tokens, eos, eos)
    effective = effective_generation_config(leaky, config)
    assert not effective.do_sample and effective.repetition_penalty == 1.0
    batch = _prompt_batch(tokenizer, industrial_files, 2)
    runs = [generate_sid_beams(model, *batch, constraint, config) for model in (leaky, leaky, clean)]
    for generated, scores in runs[1:]:
        assert torch.equal(generated, runs[0][0])
        assert torch.equal(scores, runs[0][1])
    assert leaky.generation_config.do_sample  # the model's own config is restored afterwards


def _reference_allowed(sequences, newline, eos, generated) -> set[int]:
    """Tokens a row may take next, from a plain prefix dict over the SID token lists (no tries, no tensors)."""
    endings = [list(seq) + list(newline) + [eos] for seq in sequences]
    step = len(generated)
    allowed = {ending[step] for ending in endings if len(ending) > step and ending[:step] == list(generated)}
    if any(ending == list(generated[:len(ending)]) and len(generated) >= len(ending) for ending in endings):
        allowed.add(eos)  # finished: EOS (= pad here) may repeat
    return allowed


class _Recorder:
    """Runs the processor under test and keeps, per step, the rows' generated tokens and the finite columns."""

    def __init__(self, processor, sample_rows):
        self.processor, self.sample_rows, self.steps, self.inputs, self.outputs = processor, sample_rows, [], [], []

    def __call__(self, input_ids, scores):
        self.inputs.append(id(scores))
        out = self.processor(input_ids, scores)
        start = self.processor.start
        self.steps.append([(input_ids[row, start:].tolist(), set(torch.isfinite(out[row]).nonzero().flatten().tolist()))
                           for row in self.sample_rows])
        self.outputs.append(out)
        return out


@pytest.mark.parametrize("reuse_output", [True, False])
def test_every_step_masks_exactly_the_reference_prefix_table(
    tiny_loaded, industrial_catalogue, industrial_files, reuse_output,
):
    """Real beam search, 2 prompts x 20 beams: at every step each sampled row's finite columns are exactly the
    tokens a plain prefix dict allows."""
    from transformers import LogitsProcessorList

    from minirec.constraint import sid_token_ids
    from minirec.generation import isolated_generation_config

    model, tokenizer = tiny_loaded
    constraint = SidConstraint.from_catalogue(industrial_catalogue, tokenizer)
    sequences = sid_token_ids(tokenizer, sorted(industrial_catalogue.valid_sids))
    newline, eos = tokenizer("\n", add_special_tokens=False).input_ids, tokenizer.eos_token_id
    config = beam_generation_config(20, constraint.max_new_tokens, eos, eos)
    recorder = _Recorder(constraint.logits_processor(reuse_output=reuse_output), sample_rows=range(0, 40, 3))
    input_ids, attention_mask = _prompt_batch(tokenizer, industrial_files, 2)
    with isolated_generation_config(model, config), torch.inference_mode():
        model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                       logits_processor=LogitsProcessorList([recorder]))
    recorder.processor.check()
    assert len(recorder.steps) == constraint.max_new_tokens
    for rows in recorder.steps:
        for generated, finite in rows:
            assert finite == _reference_allowed(sequences, newline, eos, generated), generated
    # The constraint's buffer for each depth, or each step's own scores masked in place.
    if reuse_output:
        buffers = constraint._scratch.buffers
        assert [id(out) for out in recorder.outputs] == [id(buffers[depth][0]) for depth in range(len(buffers))]
    else:
        assert [id(out) for out in recorder.outputs] == recorder.inputs


def test_the_shared_buffer_never_leaks_between_generate_calls(tiny_loaded, industrial_catalogue, industrial_files):
    """A constraint's output buffer outlives its processors: later calls, interleaved processors and a call
    cut short must give what a fresh constraint gives."""
    model, tokenizer = tiny_loaded
    eos = tokenizer.eos_token_id
    shared = SidConstraint.from_catalogue(industrial_catalogue, tokenizer)
    config = beam_generation_config(10, shared.max_new_tokens, eos, eos)
    first, second = _prompt_batch(tokenizer, industrial_files, 2), _prompt_batch(tokenizer, industrial_files, 3)
    expected = generate_sid_beams(model, *second, SidConstraint.from_catalogue(industrial_catalogue, tokenizer), config)

    generate_sid_beams(model, *first, shared, config)
    interrupted = shared.logits_processor()
    scores = torch.randn(30, len(tokenizer)).log_softmax(-1)
    interrupted(torch.zeros(30, 4, dtype=torch.long), scores.clone())  # a call abandoned after one step
    for generated, beam_scores in [generate_sid_beams(model, *second, shared, config) for _ in range(2)]:
        assert torch.equal(generated, expected[0]) and torch.equal(beam_scores, expected[1])

    # Two processors at once: the one whose buffer was taken masks its own scores in place from then on.
    a, b = shared.logits_processor(), shared.logits_processor()
    first_level = split_sid(sorted(industrial_catalogue.valid_sids)[0])[0]
    first_token = tokenizer.convert_tokens_to_ids(first_level)
    prompt = torch.zeros(30, 4, dtype=torch.long)
    out_a = a(prompt, scores.clone())
    out_b = b(prompt, scores.clone())
    assert out_a is out_b  # b claimed the buffers a was using
    step = torch.cat([prompt, torch.full((30, 1), first_token)], 1)
    given = scores.clone()
    out_a = a(step, given)
    assert out_a is given and not torch.equal(out_a, out_b)
    second_levels = {split_sid(sid)[1] for sid in industrial_catalogue.valid_sids if split_sid(sid)[0] == first_level}
    assert set(tokenizer.convert_ids_to_tokens(torch.isfinite(out_a[0]).nonzero().flatten().tolist())) == second_levels
    assert torch.equal(b(step, scores.clone()), out_a)
    a.check(), b.check()
