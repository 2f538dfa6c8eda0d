"""Upstream profiles (minirec.upstream): how switches resolve and are logged, and that each switch changes exactly
what it names (prompt strings, masking, roll-out sampling, SFT strategy, evaluation batching) and nothing else.

Expected behaviours are those of docs/upstream.md and docs/upstream-revisions-notes.md; the 8.1 B constraint
behaviour (first token "\\n", then unconstrained) and 2026-02's beam sampling are checked on the tiny model.
"""

from __future__ import annotations

import functools
import json
import shutil

import pytest
import torch

from conftest import INDUSTRIAL, OFFICE, run_stage, stage_exit
from test_sid_decoder import trained  # noqa: F401  (the trained tiny model fixture)
from minirec import prompts
from minirec.constraint import UPSTREAM_MASK, SidConstraint
from minirec.errors import SettingsError
from minirec.sid import split_sid
from minirec.upstream import (
    PROFILES,
    SWITCHES,
    masking_mode,
    released_checkpoint_name,
    resolve_quirks,
    summary,
)

G = 16


# --- profiles, switches and what every stage logs ---------------------------------------------------------------


def test_profiles_are_sets_of_switches_and_explicit_quirks_apply_in_order():
    paper, current = PROFILES["paper-release"], PROFILES["2026-02"]
    assert resolve_quirks("none") == frozenset()
    assert resolve_quirks("paper-release") == paper
    assert resolve_quirks("none", upstream_quirks=True) == paper  # the old single switch is the paper release
    assert resolve_quirks("paper-release", ["no_eval_batch_8"]) == paper - {"eval_batch_8"}
    assert resolve_quirks("none", ["alignment_leak", "no_alignment_leak", "eval_batch_8"]) == {"eval_batch_8"}
    assert resolve_quirks("2026-02", ["-rollout_beam_sampling"]) == current - {"rollout_beam_sampling"}
    assert summary("paper-release", resolve_quirks("paper-release", ["no_eval_batch_8", "sft_three_tasks"])) == \
        "paper-release +sft_three_tasks -eval_batch_8"
    # What changed upstream between the two commits (docs/upstream.md 11): leaks fixed, 3 tasks, masking, sampling.
    assert paper - current == {"alignment_leak", "rl_answer_leak", "constraint_fail_open"}
    assert current - paper == {"sft_three_tasks", "rollout_beam_sampling", "constraint_eos_fallback"}
    assert (masking_mode(paper), masking_mode(current), masking_mode(())) == ("fail_open", "eos_fallback", "strict")
    with pytest.raises(SettingsError, match="unknown switch 'alignment'"):
        resolve_quirks("none", ["alignment"])
    with pytest.raises(SettingsError, match="exclude each other"):
        resolve_quirks("paper-release", ["constraint_eos_fallback"])
    with pytest.raises(SettingsError, match="cannot be combined with upstream = 2026-02"):
        resolve_quirks("2026-02", upstream_quirks=True)


def _stage_settings():
    from minirec.evaluate.settings import EvaluateSettings
    from minirec.grpo.settings import GRPOSettings
    from minirec.sft.settings import SFTSettings
    from minirec.sids.settings import SidsSettings

    return {"sft": SFTSettings, "grpo": GRPOSettings, "evaluate": EvaluateSettings, "sids": SidsSettings}


@pytest.mark.parametrize("stage", ["sft", "grpo", "evaluate", "sids"])
def test_every_stage_logs_its_profile_and_every_resolved_switch_as_params(stage):
    settings_class = _stage_settings()[stage]
    extra = {"model": "x"} if stage == "evaluate" else {}
    settings = settings_class.resolve(None, {**extra, "upstream": "2026-02",
                                             "quirks": "no_eval_batch_8,alignment_leak"})
    params = settings.as_params()
    assert params["upstream.profile"] == "2026-02"
    assert params["upstream.summary"] == "2026-02 +alignment_leak -eval_batch_8"
    on = PROFILES["2026-02"] - {"eval_batch_8"} | {"alignment_leak"}
    assert {name: params[f"upstream.{name}"] for name in SWITCHES} == {n: str(n in on).lower() for n in SWITCHES}
    assert params["upstream.stage_switches"] == ",".join(n for n, s in SWITCHES.items() if stage in s.stages)
    legacy = settings_class.resolve(None, {**extra, "upstream_quirks": "true"}).as_params()
    assert legacy["upstream.profile"] == "paper-release" and legacy["upstream.summary"] == "paper-release"


def test_launched_processes_read_the_settings_back_without_the_logged_switch_values(tmp_path):
    from minirec.sft.settings import SFTSettings
    from minirec.stage import settings_from_file

    settings = SFTSettings.resolve("tiny", {"upstream": "paper-release", "quirks": "no_sft_ddp",
                                            "output_dir": str(tmp_path)})
    (tmp_path / "resolved.yaml").write_text(settings.to_yaml())
    again = settings_from_file(SFTSettings, tmp_path / "resolved.yaml")
    assert again.switches() == settings.switches() and again.upstream == "paper-release"


# --- SFT: tasks, schedule, precision, DDP -------------------------------------------------------------------------


def test_sft_three_tasks_restricts_the_task_list_and_changes_nothing_else():
    from minirec.sft.settings import SFTSettings

    base, three = (SFTSettings.resolve("paper", {"quirks": q}) for q in ("", "sft_three_tasks"))
    assert base.effective_tasks() == ["sid_history", "item_alignment", "sid_history_to_title",
                                      "title_history_to_title", "title_history_to_sid"]
    assert three.effective_tasks() == ["sid_history", "item_alignment", "sid_history_to_title"]
    differing = {k for k, v in three.resolved().items() if base.resolved()[k] != v}
    assert differing == {"quirks", "effective_tasks", "upstream.sft_three_tasks", "upstream.summary"}
    with pytest.raises(SettingsError, match="leaves nothing to train"):
        SFTSettings.resolve("tiny", {"tasks": "title_history_to_sid", "upstream": "2026-02"})


def test_sft_linear_schedule_and_ddp_switch_only_the_scheduler_and_the_deepspeed_config(monkeypatch, tmp_path):
    import minirec.sft.train as sft_train
    from minirec.launch import deepspeed_config
    from minirec.sft.settings import SFTSettings

    seen = []
    monkeypatch.setattr(sft_train, "deepspeed_config", lambda settings, device, ddp=False: seen.append(ddp))
    args = {}
    for quirks in ("", "sft_linear_schedule", "sft_ddp"):
        settings = SFTSettings.resolve("paper", {"quirks": quirks, "num_gpus": "2", "output_dir": str(tmp_path)})
        args[quirks] = sft_train.training_arguments(settings, "cpu").to_dict()
        assert deepspeed_config(settings, "cuda", ddp=settings.switch("sft_ddp")) == (
            None if quirks == "sft_ddp" else deepspeed_config(settings, "cuda"))
    assert seen == [False, False, True]
    assert str(args[""]["lr_scheduler_type"]).endswith("cosine")
    assert str(args["sft_linear_schedule"]["lr_scheduler_type"]).endswith("linear")
    for quirks in ("sft_linear_schedule", "sft_ddp"):
        changed = {key for key, value in args[quirks].items() if args[""][key] != value}
        assert changed <= {"lr_scheduler_type"}, changed
    zero2 = deepspeed_config(SFTSettings.resolve("paper", {"num_gpus": "2"}), "cuda")
    assert zero2["zero_optimization"]["stage"] == 2
    with pytest.raises(SettingsError, match="contradicts the upstream switch sft_ddp"):
        SFTSettings.resolve("paper", {"upstream": "paper-release", "deepspeed": "configs/deepspeed/zero2.yaml"})


def test_sft_pure_bf16_loads_bf16_weights_only_when_training_in_bf16(tiny_industrial, industrial_catalogue, tmp_path):
    from minirec.sft.settings import SFTSettings
    from minirec.sft.train import prepare_model

    dtypes = {}
    for precision in ("bf16", "fp32"):
        for quirks in ("", "sft_pure_bf16"):
            settings = SFTSettings.resolve("tiny", {"model": str(tiny_industrial), "precision": precision,
                                                   "quirks": quirks, "output_dir": str(tmp_path)})
            prepared = prepare_model(settings, industrial_catalogue, "cpu")
            dtypes[precision, quirks] = next(prepared.model.parameters()).dtype
    assert dtypes == {("bf16", ""): torch.float32, ("bf16", "sft_pure_bf16"): torch.bfloat16,
                      ("fp32", ""): torch.float32, ("fp32", "sft_pure_bf16"): torch.float32}


def test_sft_datasets_follow_the_switches(industrial_files, industrial_catalogue):
    from minirec.models import add_sid_tokens
    from minirec.sft.data import build_datasets
    from minirec.tiny_model import train_tokenizer

    tokenizer = train_tokenizer(industrial_catalogue.title(i) for i in sorted(industrial_catalogue.items)[:300])
    add_sid_tokens(tokenizer, None, industrial_catalogue)
    common = dict(sample=20, valid_sample=4, cutoff_len=64)
    three = build_datasets(tokenizer, industrial_files, industrial_catalogue, quirks=PROFILES["2026-02"], **common)
    five = build_datasets(tokenizer, industrial_files, industrial_catalogue, quirks=PROFILES["paper-release"], **common)
    assert list(three.task_counts) == ["sid_history", "item_alignment", "sid_history_to_title"]
    assert list(five.task_counts) == ["sid_history", "item_alignment", "sid_history_to_title",
                                      "title_history_to_title", "title_history_to_sid"]
    assert three.task_counts["item_alignment"] == five.task_counts["item_alignment"] == 7316


def _four_token_catalogue():
    from test_constraint import _four_token_catalogue as catalogue

    return catalogue()


def test_three_token_sids_cut_only_the_item_level_sids():
    from minirec.grpo.data import RlPromptOptions, alignment_rows
    from minirec.sft.data import TaskOptions, alignment_prompts

    catalogue = _four_token_catalogue()
    full = alignment_prompts(catalogue, TaskOptions(INDUSTRIAL))
    cut = alignment_prompts(catalogue, TaskOptions.from_quirks(INDUSTRIAL, {"three_token_sids"}))
    assert any("<d_" in p.target for p in full) and not any("<d_" in p.target or "<d_" in p.body for p in cut)
    assert all(len(split_sid(p.target.strip())) == 3 for p in cut if p.target.startswith("<"))
    rl_full = alignment_rows(catalogue, options=RlPromptOptions())
    rl_cut = alignment_rows(catalogue, options=RlPromptOptions(three_token_sids=True))
    assert any("<d_" in r["target"] for r in rl_full) and not any("<d_" in r["target"] for r in rl_cut)
    assert [r["prompt"] for r in rl_full] == [r["prompt"] for r in rl_cut]  # no leak: only the targets change


# --- GRPO prompts: the small-train sample -----------------------------------------------------------------------


def test_small_train_title_history_raises_under_the_profile_and_falls_back_loudly_without(office_files, capsys):
    from minirec.grpo.data import SmallTrainError, build_prompt_set

    tasks = ("title_history_to_sid",)
    with pytest.raises(SmallTrainError, match=r"7,648 train rows, but upstream's RLSeqTitle2SidDataset draws "
                                              r"sample=10,000"):
        build_prompt_set(office_files, tasks=tasks, quirks=PROFILES["paper-release"])
    fallback = build_prompt_set(office_files, tasks=tasks, quirks=PROFILES["none"])
    assert "has 7,648 rows, fewer than title_history_sample 10,000; drawing all 7,648" in capsys.readouterr().out
    assert fallback.title_history_drawn == (10000, 7648) and fallback.task_rows["title_history_to_sid"] == 7648


def test_small_train_error_stops_grpo_before_any_run_exists(mlflow_uri, tiny_industrial, capsys):
    import mlflow

    from minirec.grpo.recipe import GRPORecipe

    status = stage_exit(GRPORecipe, "--category", OFFICE, "--model", tiny_industrial, "--tasks",
                        "title_history_to_sid", "--upstream", "2026-02")
    assert status == 2
    assert "grpo: error:" in capsys.readouterr().err
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


# --- the constraint's masking modes -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grammar(tiny_loaded, industrial_catalogue):
    model, tokenizer = tiny_loaded
    sid = sorted(industrial_catalogue.valid_sids)[5]
    newline = tokenizer("\n", add_special_tokens=False).input_ids
    return dict(model=model, tokenizer=tokenizer, sid=sid, ids=tokenizer.convert_tokens_to_ids(split_sid(sid)),
                newline=newline, eos=tokenizer.eos_token_id,
                first=set(tokenizer.convert_tokens_to_ids(sorted({split_sid(s)[0]
                                                                   for s in industrial_catalogue.valid_sids}))),
                strict=SidConstraint.from_catalogue(industrial_catalogue, tokenizer))


def _prompt(tokenizer, text):
    return torch.tensor([tokenizer(text, add_special_tokens=False).input_ids])


def test_fail_open_masks_with_minus_1e6_keys_step_zero_on_the_prompt_and_leaves_unknown_rows_unmasked(grammar):
    tokenizer, strict = grammar["tokenizer"], grammar["strict"]
    constraint = strict.with_masking("fail_open")
    header_end = _prompt(tokenizer, prompts.rl_title_to_sid("A title", grammar["sid"]).text)
    leaked = _prompt(tokenizer, prompts.rl_title_to_sid("A title", grammar["sid"], leak_answer=True).text)
    neither = _prompt(tokenizer, "a prompt that ends elsewhere")
    width = max(p.shape[1] for p in (header_end, leaked, neither))
    batch = torch.cat([torch.nn.functional.pad(p, (width - p.shape[1], 0), value=grammar["eos"])
                       for p in (header_end, leaked, neither)])
    scores = torch.randn(3, len(tokenizer))
    logp = scores.log_softmax(-1)
    out = constraint.logits_processor()(batch, scores.clone())
    mask = out - logp
    # Row 0 ends in "### Response:\n": the first SID tokens are allowed (0), everything else gets -1e6.
    assert set((mask[0] == 0).nonzero().flatten().tolist()) == grammar["first"]
    assert torch.allclose(mask[0][mask[0] != 0], torch.tensor(UPSTREAM_MASK), atol=1.0)
    # Row 1 ends in its own SID (8.1 B): the key is that SID, so only "\n" is allowed.
    assert set((mask[1] == 0).nonzero().flatten().tolist()) == {grammar["newline"][0]}
    # Row 2's key is unknown: upstream leaves it unmasked (8.1 F).
    assert torch.equal(out[2], logp[2])
    # The strict processor is unchanged: -inf outside the grammar, and the same allowed set for row 0.
    strict_out = strict.logits_processor()(batch, logp.clone())
    assert torch.isinf(strict_out[0][mask[0] != 0]).all() and torch.equal(torch.isfinite(strict_out[0]), mask[0] == 0)


def test_eos_fallback_masks_with_inf_and_allows_only_eos_to_unknown_rows(grammar):
    tokenizer, eos = grammar["tokenizer"], grammar["eos"]
    constraint = grammar["strict"].with_masking("eos_fallback")
    prompt = _prompt(tokenizer, prompts.rl_title_to_sid("A title", grammar["sid"]).text)
    processor = constraint.logits_processor()
    scores = torch.randn(2, len(tokenizer))
    first = processor(prompt.expand(2, -1), scores.clone())
    assert set(torch.isfinite(first[0]).nonzero().flatten().tolist()) == grammar["first"]
    off_grammar = tokenizer("hello", add_special_tokens=False).input_ids[0]
    step = torch.cat([prompt.expand(2, -1), torch.tensor([[grammar["ids"][0]], [off_grammar]])], 1)
    second = processor(step, scores.clone())
    assert torch.isfinite(second[0]).sum() > 1
    assert torch.isfinite(second[1]).nonzero().flatten().tolist() == [eos]  # forced EOS (docs/upstream.md 11.2)
    assert second[1, eos] == scores[1].log_softmax(-1)[eos]  # not renormalised
    with pytest.warns(UserWarning, match="1 row-steps had a prefix outside the SID table"):
        processor.check()  # counts, never raises
    assert constraint.unknown_row_steps == 1 and grammar["strict"].unknown_row_steps == 0


def test_decode_settings_send_upstream_masking_through_generate():
    from minirec.decoding import DecodeSettings

    with pytest.raises(SettingsError, match="needs decoder = hf"):
        DecodeSettings(masking="fail_open")
    assert DecodeSettings(masking="eos_fallback", decoder="hf").masking == "eos_fallback"


# --- roll-outs: the 8.1 B behaviour (paper-release) and beam sampling (2026-02) ------------------------------------


def _rows(tokenizer, texts):
    return [ids for ids in tokenizer(texts, add_special_tokens=False).input_ids for _ in range(G)]


def test_paper_release_leaked_prompts_get_a_forced_newline_then_unconstrained_tokens(grammar, industrial_catalogue):
    """docs/upstream.md 8.1 B on the tiny model: under rl_answer_leak + constraint_fail_open the roll-out of a leaked
    title prompt starts with "\\n" and continues outside the grammar; a leak-free prompt in the same batch keeps
    decoding catalogue SIDs (through the sid decoder, which only the leaked group bypasses)."""
    from minirec.grpo.rollout import beam_rollout

    model, tokenizer = grammar["model"], grammar["tokenizer"]
    constraint = grammar["strict"].with_masking("fail_open")
    texts = [prompts.rl_title_to_sid("A title", grammar["sid"], leak_answer=True).text,
             prompts.rl_title_to_sid("A title", grammar["sid"]).text]
    rollout = beam_rollout(model, _rows(tokenizer, texts), num_generations=G, constraint=constraint,
                           max_new_tokens=12, pad_token_id=grammar["eos"], eos_token_id=grammar["eos"])
    assert rollout.off_root_groups == 1
    leaked, clean = rollout.completion_ids[:G], rollout.completion_ids[G:]
    # Step 0 allows only "\n"; the beams that took a -1e6 token instead lose to the "\n" beam's free continuations
    # at step 1, so every returned beam starts with "\n" and goes on outside the grammar.
    assert all(c[0] == grammar["newline"][0] for c in leaked)
    assert all(tokenizer.decode(c, skip_special_tokens=True).strip() not in industrial_catalogue.valid_sids
               and len(c) > 2 for c in leaked)
    assert all(score > UPSTREAM_MASK for score in rollout.scores[:G])
    assert all(tokenizer.decode(c, skip_special_tokens=True).strip() in industrial_catalogue.valid_sids for c in clean)
    assert constraint.unknown_row_steps > 0
    # Under none (strict, leak-free) nothing leaves the grammar.
    strict = beam_rollout(model, _rows(tokenizer, texts[1:]), num_generations=G, constraint=grammar["strict"],
                          max_new_tokens=12, pad_token_id=grammar["eos"], eos_token_id=grammar["eos"])
    assert strict.completion_ids == clean


def test_paper_release_leaked_prompt_steps_after_the_newline_are_unmasked(grammar):
    """The processor itself, inside generate: step 0 allows only "\\n" for the leaked prompt, every later step leaves
    its rows unmasked (the scores are plain log-probabilities)."""
    from transformers import LogitsProcessorList

    from minirec.generation import beam_generation_config, isolated_generation_config

    model, tokenizer, eos = grammar["model"], grammar["tokenizer"], grammar["eos"]
    processor = grammar["strict"].with_masking("fail_open").logits_processor()
    seen = []

    def recorder(input_ids, scores):
        out = processor(input_ids, scores)
        after_newline = input_ids[:, processor.start] == grammar["newline"][0] if processor.calls > 1 else None
        masked = (out - scores.log_softmax(-1)).abs().amax(dim=-1)
        seen.append(masked if after_newline is None else masked[after_newline])
        return out

    prompt = _prompt(tokenizer, prompts.rl_description_to_sid("a thing", grammar["sid"], leak_answer=True).text)
    config = beam_generation_config(4, 6, eos, eos)
    with isolated_generation_config(model, config), torch.inference_mode():
        output = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), generation_config=config,
                                logits_processor=LogitsProcessorList([recorder]))
    assert output.sequences[0, prompt.shape[1]] == grammar["newline"][0]
    assert all(s > 1e5 for s in seen[0].tolist())  # step 0: masked (only "\n" allowed)
    # later steps: the beams that took the forced "\n" are not masked at all
    assert all(len(s) and float(s.max()) == 0.0 for s in seen[1:])


def test_fail_open_sid_decoder_groups_equal_generate_with_upstreams_processor(trained, industrial_files):
    """For prompts ending in "### Response:\\n" the sid decoder's G beams are upstream's (generate with the -1e6
    fail-open processor), which is why only off-root groups leave the sid decoder under paper-release."""
    from minirec.grpo.data import build_prompt_set
    from minirec.grpo.rollout import beam_rollout

    model, tokenizer = trained.model, trained.tokenizer
    constraint = trained.constraints[3].with_masking("fail_open")
    texts = list(build_prompt_set(industrial_files, tasks=("sid_history",), max_train_prompts=3).train["prompt"])
    common = dict(num_generations=G, constraint=constraint, max_new_tokens=12,
                  pad_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    sid, hf = (beam_rollout(model, _rows(tokenizer, texts), decoder=decoder, **common) for decoder in ("sid", "hf"))
    assert sid.off_root_groups == hf.off_root_groups == 0
    assert sid.completion_ids == hf.completion_ids
    assert sid.scores == pytest.approx(hf.scores, abs=1e-4)


def test_2026_02_roll_outs_are_beam_sampling_through_generate_never_the_sid_decoder(grammar, monkeypatch,
                                                                                     industrial_catalogue):
    import minirec.sid_decoder
    from minirec.grpo.rollout import beam_rollout

    def refuse(*args, **kwargs):
        raise AssertionError("beam sampling must not go through the sid decoder")

    monkeypatch.setattr(minirec.sid_decoder, "sid_beam_search", refuse)
    model, tokenizer, eos = grammar["model"], grammar["tokenizer"], grammar["eos"]
    constraint = grammar["strict"].with_masking("eos_fallback")
    rows = _rows(tokenizer, [prompts.rl_title_to_sid("A title", grammar["sid"]).text])
    common = dict(num_generations=G, constraint=constraint, max_new_tokens=8, pad_token_id=eos, eos_token_id=eos,
                  beam_sampling=True, temperature=1.0)
    draws = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        draws.append(beam_rollout(model, rows, **common))
    assert draws[0].completion_ids == draws[1].completion_ids  # seeded: reproducible
    assert draws[0].completion_ids != draws[2].completion_ids  # sampled: another seed, other beams
    for rollout in draws:
        valid = [tokenizer.decode(c, skip_special_tokens=True).strip() for c in rollout.completion_ids]
        assert valid[0] in industrial_catalogue.valid_sids
        assert all(a >= b for a, b in zip(rollout.scores, rollout.scores[1:]))  # still ranked by score


def test_beam_sampling_config_is_explicit_and_isolated_from_checkpoint_defaults(tiny_industrial, tmp_path):
    from minirec.grpo.rollout import beam_sampling_generation_config, effective_beam_sampling_config
    from minirec.models import load_model_and_tokenizer

    leaky = tmp_path / "leaky"
    shutil.copytree(tiny_industrial, leaky)
    saved = json.loads((leaky / "generation_config.json").read_text())
    (leaky / "generation_config.json").write_text(json.dumps(
        {**saved, "do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.8, "repetition_penalty": 1.1}))
    model, tokenizer = load_model_and_tokenizer(leaky)
    config = beam_sampling_generation_config(G, 1.0, 6, tokenizer.eos_token_id, tokenizer.eos_token_id)
    effective = effective_beam_sampling_config(model, config)
    assert (effective.do_sample, effective.num_beams, effective.temperature) == (True, G, 1.0)
    # upstream's top_k/top_p None ("no warper" in transformers 4.57) is 0 / 1.0 in 5.23, where None means top-k 50
    assert (effective.top_k, effective.top_p, effective.repetition_penalty) == (0, 1.0, 1.0)
    assert model.generation_config.top_k == 20  # the checkpoint's own config is back afterwards


def test_grpo_trainer_takes_masking_and_sampling_from_the_profile(tiny_industrial, industrial_files,
                                                                  industrial_catalogue, tmp_path):
    from minirec.grpo.data import build_prompt_set
    from minirec.grpo.settings import GRPOSettings
    from minirec.grpo.train import build_trainer, load_policy, rollout_generation_config

    prompts_ = build_prompt_set(industrial_files, industrial_catalogue, tasks=("sid_history",), max_train_prompts=4)
    seen = {}
    for profile in ("none", "paper-release", "2026-02"):
        settings = GRPOSettings.resolve("tiny", {"model": str(tiny_industrial), "output_dir": str(tmp_path / profile),
                                                 "eval_limit": 4, "upstream": profile})
        model, tokenizer = load_policy(str(tiny_industrial), "cpu")
        trainer = build_trainer(settings, model, tokenizer, industrial_files, industrial_catalogue, prompts_, "cpu")
        config = rollout_generation_config(settings, trainer)
        seen[profile] = (trainer.constraint.masking, trainer.beam_sampling, config.do_sample, config.max_new_tokens)
    assert seen == {"none": ("strict", False, False, 5), "paper-release": ("fail_open", False, False, 128),
                    "2026-02": ("eos_fallback", True, True, 128)}


# --- evaluation: batch 8, masking, and the released checkpoint ------------------------------------------------------


def test_eval_switches_change_only_the_batch_and_the_masking():
    from minirec.evaluate.settings import EvaluateSettings

    def decode(quirks):
        return EvaluateSettings.resolve(None, {"model": "x", "quirks": quirks}).decode

    base = decode("")
    assert (base.batch_size, base.masking, base.decoder, base.strict) == (16, "strict", "sid", True)
    assert decode("eval_batch_8") == base.__class__(**{**base.__dict__, "batch_size": 8})
    assert decode("constraint_fail_open") == base.__class__(**{**base.__dict__, "masking": "fail_open",
                                                               "decoder": "hf", "strict": False})
    assert decode("constraint_eos_fallback").masking == "eos_fallback"
    with pytest.raises(SettingsError, match="decoder = exact ranks catalogue SIDs only"):
        EvaluateSettings.resolve(None, {"model": "x", "decoder": "exact", "upstream": "paper-release"})


def test_released_checkpoints_are_recognised_by_reference():
    assert released_checkpoint_name("/data/MiniOneRec/Industrial_ckpt") == "Industrial_ckpt"
    assert released_checkpoint_name("/data/MiniOneRec/Office_ckpt/") == "Office_ckpt"
    assert released_checkpoint_name("kkknight/MiniOneRec") == "kkknight/MiniOneRec"
    assert released_checkpoint_name("/hf/hub/models--kkknight--MiniOneRec/snapshots/abc") == "kkknight/MiniOneRec"
    assert released_checkpoint_name("Qwen/Qwen2.5-1.5B-Instruct") is None
    assert released_checkpoint_name("/models/my_sft_run") is None


@pytest.fixture
def released_stand_in(tiny_industrial, tmp_path):
    """A tiny model laid out as the released checkpoint is: a complete save_pretrained folder (config, weights,
    tokenizer with the SID tokens) named Industrial_ckpt inside a MiniOneRec download (docs/upstream.md 11.7)."""
    folder = tmp_path / "MiniOneRec" / "Industrial_ckpt"
    shutil.copytree(tiny_industrial, folder)
    return folder


def test_evaluate_a_released_checkpoint_under_paper_release(released_stand_in, mlflow_uri, tmp_path):
    import mlflow

    from minirec.evaluate.recipe import EvaluateRecipe

    assert {"config.json", "tokenizer.json", "generation_config.json"} <= {p.name for p in released_stand_in.iterdir()}
    run_id = run_stage(EvaluateRecipe, "--model", released_stand_in, "--category", INDUSTRIAL, "--upstream",
                       "paper-release", "--limit", "4", "--num_beams", "10", "--recall_rows", "0",
                       "--out", tmp_path / "out")
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    tags, params = run.data.tags, run.data.params
    assert tags["model_kind"] == "released_checkpoint" and tags["released_checkpoint"] == "Industrial_ckpt"
    assert tags["upstream.profile"] == params["upstream.profile"] == "paper-release"
    assert params["released_checkpoint"] == "True" and params["upstream.constraint_fail_open"] == "true"
    assert (params["decode.batch_size"], params["decode.masking"], params["decode.decoder"],
            params["decode.strict"]) == ("8", "fail_open", "hf", "False")
    assert params["generation.max_new_tokens"] == "256"  # evaluate.sh's, where rows may decode unconstrained
    assert run.data.metrics["n"] == 4


def test_a_released_checkpoint_of_the_other_category_is_refused(tiny_industrial, mlflow_uri, tmp_path, capsys):
    from minirec.evaluate.recipe import EvaluateRecipe

    office = tmp_path / "MiniOneRec" / "Office_ckpt"
    shutil.copytree(tiny_industrial, office)
    assert stage_exit(EvaluateRecipe, "--model", office, "--category", INDUSTRIAL, "--limit", "2") == 2
    assert "was trained on Office_Products, not Industrial_and_Scientific" in capsys.readouterr().err


# --- every switch changes exactly the prompt strings it names -------------------------------------------------------


@pytest.fixture(scope="module")
def cached_data():
    """The dump reads the split and the catalogue again per call; serve both from memory in this module."""
    import minirec.data as data

    patch = pytest.MonkeyPatch()
    patch.setattr(data, "read_split", functools.lru_cache(maxsize=None)(data.read_split))
    patch.setattr(data.Catalogue, "load", functools.lru_cache(maxsize=None)(data.Catalogue.load))
    yield
    patch.undo()


@pytest.mark.parametrize("name", list(SWITCHES))
def test_each_switch_changes_only_the_prompt_tasks_it_names(name, cached_data):
    from minirec.prompts_dump import dump_prompts

    base = dump_prompts(INDUSTRIAL, "valid", rows=12, items=80, upstream="none")
    switched = dump_prompts(INDUSTRIAL, "valid", rows=12, items=80, upstream="none", quirks=[name])
    differing = {task for task in base if base[task] != switched[task]}
    expected = {
        "alignment_leak": {"sft_item_alignment"},
        "rl_answer_leak": {"rl_title_to_sid"},
        "rl_empty_description": {"rl_title_to_sid"},  # the empty description's item is among the first 80
        "sft_three_tasks": {"sft_title_history_to_title", "sft_title_history_to_sid"},
    }.get(name, set())  # three_token_sids: Industrial's SIDs have 3 tokens; the rest change no string
    assert differing == expected
    assert differing <= set(SWITCHES[name].dump_tasks)
    if name in ("alignment_leak", "rl_answer_leak"):
        task = next(iter(differing))
        field = "target" if task.startswith("sft") else "completion"
        for plain, leaky in zip(base[task], switched[task]):
            assert leaky["prompt"] == plain["prompt"] + plain[field][:-1] and leaky[field] == plain[field]
    if name == "rl_empty_description":
        extra = [entry for entry in switched["rl_title_to_sid"] if entry not in base["rl_title_to_sid"]]
        assert len(extra) == 1 and 'described as follows: "".' in extra[0]["prompt"]
