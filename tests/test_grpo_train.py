"""GRPO on a real tiny Qwen2 model: roll-outs, trl's advantage and KL at step 0, and resume-and-extend runs."""

from __future__ import annotations

import math
import re
import statistics

import pytest
import torch

from minirec.constraint import SidConstraint
from minirec.data import Catalogue
from minirec.grpo.recipe import GRPORecipe
from minirec.grpo.settings import GRPOSettings
from minirec.grpo.data import build_prompt_set
from minirec.grpo.rewards import rank_penalties
from minirec.grpo.rollout import beam_rollout, sample_rollout
from test_sid_decoder import trained  # noqa: F401  (the trained tiny model fixture)


G = 16
INDUSTRIAL = "Industrial_and_Scientific"


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    """A freshly built tiny model standing in for the SFT checkpoint (HF folder, SID tokens added)."""
    from minirec.tiny_model import build_tiny_model

    return build_tiny_model(INDUSTRIAL, tmp_path_factory.mktemp("policy") / "tiny")


@pytest.fixture(scope="module")
def loaded(tiny_policy, industrial_files):
    from minirec.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(tiny_policy, dtype=torch.float32)
    catalogue = Catalogue.load(industrial_files)
    return model, tokenizer, catalogue, SidConstraint.from_catalogue(catalogue, tokenizer)


def prompt_ids(tokenizer, texts):
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def test_beam_rollout_gives_distinct_valid_sids_ranked_by_their_log_probability(loaded, industrial_files):
    model, tokenizer, catalogue, constraint = loaded
    texts = list(build_prompt_set(industrial_files, catalogue, max_train_prompts=2).train["prompt"])
    rows = [ids for ids in prompt_ids(tokenizer, texts) for _ in range(G)]
    rollout = beam_rollout(model, rows, num_generations=G, constraint=constraint, max_new_tokens=8,
                           pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    assert len(rollout.completion_ids) == 2 * G
    for group in range(2):
        ids = rollout.completion_ids[group * G:(group + 1) * G]
        sids = [tokenizer.decode(c, skip_special_tokens=True) for c in ids]
        assert all(c[-1] == tokenizer.eos_token_id for c in ids)
        assert all(s.endswith("\n") and s.strip() in catalogue.valid_sids for s in sids)
        assert len(set(sids)) == G
        scores = rollout.scores[group * G:(group + 1) * G]
        assert all(a >= b for a, b in zip(scores, scores[1:]))
        # Independently: each completion's summed full-vocabulary log-probability, from one forward pass.
        prompt = torch.tensor(rows[group * G]).expand(G, -1)
        completions = torch.tensor(ids)  # 3-token SIDs: every completion is SID + newline + EOS, 5 tokens
        with torch.no_grad():
            logps = model(torch.cat([prompt, completions], dim=1)).logits[:, prompt.size(1) - 1:-1].log_softmax(-1)
        summed = logps.gather(2, completions[:, :, None]).sum(dim=(1, 2))
        assert summed.tolist() == pytest.approx(scores, abs=1e-3)


def test_sampling_rollout_stays_inside_the_catalogue(loaded, industrial_files):
    model, tokenizer, catalogue, constraint = loaded
    texts = list(build_prompt_set(industrial_files, catalogue, max_train_prompts=1).train["prompt"])
    rows = prompt_ids(tokenizer, texts) * 8
    torch.manual_seed(0)
    rollout = sample_rollout(model, rows, constraint=constraint, temperature=1.0, max_new_tokens=8,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    sids = [tokenizer.decode(c, skip_special_tokens=True).strip() for c in rollout.completion_ids]
    assert len(sids) == 8 and all(s in catalogue.valid_sids for s in sids)
    assert rollout.scores is None


def test_step_zero_reference_is_the_sft_checkpoint_advantages_match_a_hand_computation_and_kl_is_zero(
        tiny_policy, industrial_files, tmp_path):
    from transformers import AutoModelForCausalLM

    from minirec.grpo.train import build_trainer, load_policy

    settings = GRPOSettings.resolve("tiny", {"model": str(tiny_policy), "output_dir": str(tmp_path), "eval_limit": 4})
    catalogue = Catalogue.load(industrial_files)
    prompts = build_prompt_set(industrial_files, catalogue, max_train_prompts=4)
    model, tokenizer = load_policy(str(tiny_policy), "cpu")
    trainer = build_trainer(settings, model, tokenizer, industrial_files, catalogue, prompts, "cpu")

    checkpoint = AutoModelForCausalLM.from_pretrained(tiny_policy).state_dict()
    reference = trainer.ref_model.state_dict()
    assert trainer.ref_model.config._name_or_path == str(tiny_policy.resolve())
    assert reference.keys() == checkpoint.keys()
    assert all(torch.equal(reference[name], checkpoint[name]) for name in checkpoint)

    # Make the group's target the SID the policy ranks fourth, so the ranking reward is known in advance.
    prompt = prompts.train[0]["prompt"]
    beams = beam_rollout(model, prompt_ids(tokenizer, [prompt]) * G, num_generations=G, constraint=trainer.constraint,
                         max_new_tokens=8, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    target = tokenizer.decode(beams.completion_ids[3], skip_special_tokens=True)
    model.train()
    output = trainer._generate_and_score_completions([{"prompt": prompt, "target": target, "task": "t"}] * G)

    rewards = [1.0 if rank == 3 else penalty for rank, penalty in enumerate(rank_penalties(G))]
    mean, std = statistics.fmean(rewards), statistics.stdev(rewards)  # stdev: unbiased, as torch.std upstream
    assert output["advantages"].tolist() == pytest.approx([(r - mean) / (std + 1e-4) for r in rewards], abs=1e-5)
    assert trainer._metrics["train"]["rollout/hit_group_share"][-1] == 1.0
    assert trainer._metrics["train"]["reward"][-1] == pytest.approx(statistics.fmean(rewards), abs=1e-6)

    trainer.current_gradient_accumulation_steps = 1  # what Trainer.train sets before the first step
    trainer.compute_loss(model, output)
    assert trainer._metrics["train"]["kl"][-1] == 0.0


def metric_history(client, run_id, name):
    return {m.step: m.value for m in client.get_metric_history(run_id, name)}


def test_a_run_logs_its_metrics_and_an_extended_resume_is_a_linked_run_on_the_new_schedule(
        mlflow_uri, tiny_policy, tmp_path, capsys):
    from mlflow import MlflowClient

    from conftest import run_stage
    from minirec.models import MODEL_URI_TAG

    common = ["--category", INDUSTRIAL, "--output_dir", str(tmp_path / "out"), "--eval_steps", "0",
              "--prompts_per_step", "2", "--per_device_batch_size", "32",
              "--eval_limit", "4", "--eval_beams", "10", "--eval_batch_size", "4", "--save_steps", "1"]
    first = run_stage(GRPORecipe, "--preset", "tiny", "--model", tiny_policy, "--max_train_prompts", "4", *common)
    printed = capsys.readouterr()  # a log file: progress lines, not the Trainer's dictionary per logging step
    assert re.search(r"^\[grpo\] step 2/2, [\d.]+ steps/s, loss [-+.e\d]+, ETA 0 s$", printed.out, re.M), printed.out
    assert "{'loss'" not in printed.out + printed.err
    client = MlflowClient()
    run = client.get_run(first)
    assert run.data.tags["stage"] == "grpo" and run.data.tags["preset"] == "tiny"
    assert run.data.tags["source"] == str(tiny_policy) and run.data.tags["entry_point"] == "grpo"
    assert MODEL_URI_TAG in run.data.tags
    for name in ("reward", "reward_std", "rewards/rule_reward/mean", "rewards/ndcg_rule_reward/mean", "kl",
                 "rollout/hit_group_share", "rollout/distinct_sids_per_group", "rollout/seconds", "advantage_std",
                 "step_time", "prompts_per_second", "valid/HR_at_10", "valid/NDCG_at_10"):
        assert name in run.data.metrics, name
    assert run.data.metrics["rollout/distinct_sids_per_group"] == G
    assert run.data.metrics["rollout/invalid_share"] == 0
    artifacts = {a.path for a in client.list_artifacts(first)}
    assert {"checkpoints", "rollouts", "rollout_generation_config.json"} <= artifacts
    # 4 prompts, 2 per step: 2 steps; warm-up ceil(0.03 x 2) = 1 step, so lr(1) = 0 and lr(2) = the peak.
    assert metric_history(client, first, "learning_rate") == pytest.approx({1: 0.0, 2: 1e-4})

    common[common.index("--output_dir") + 1] = str(tmp_path / "out2")
    second = run_stage(GRPORecipe, "--resume_from", first, "--num_train_epochs", "2", *common)
    resumed = client.get_run(second)
    assert resumed.data.tags["resumed_from"] == first
    assert resumed.data.tags["mlflow.parentRunId"] == first
    assert resumed.data.params["max_train_prompts"] == "4"
    assert resumed.data.params["model"] == str(tiny_policy)
    # Resumed at step 2 with 4 steps in all. Step 3 runs at the learning rate saved in the optimizer state: the
    # old 2-step curve's next value, lambda_old(2) = 0. From step 4 on, the schedule rebuilt for 4 steps (warm-up
    # ceil(0.03 x 4) = 1) applies: lr(s) = peak x lambda_new(s - 1), lambda_new(t) = (1 + cos(pi (t - 1) / 3)) / 2.
    # Had it continued on the new curve, step 3 would have had peak x lambda_new(2) = 7.5e-5.
    expected = {3: 0.0, 4: 1e-4 * (1 + math.cos(2 * math.pi / 3)) / 2}
    assert metric_history(client, second, "learning_rate") == pytest.approx(expected)


@pytest.mark.slow
def test_two_cpu_processes_split_whole_groups_and_log_once(mlflow_uri, tiny_policy, tmp_path):
    from mlflow import MlflowClient

    from conftest import run_stage

    # 4 prompts per step over 2 processes: 2 per process, each in one micro-step of 32 completions
    run_stage(GRPORecipe, "--preset", "tiny", "--model", tiny_policy, "--num_gpus", "2", "--device", "cpu",
              "--prompts_per_step", "4", "--per_device_batch_size", "32", "--max_train_prompts", "8", "--eval_limit", "8", "--eval_beams", "10",
              "--output_dir", tmp_path)
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name(f"minirec-{INDUSTRIAL}").experiment_id])
    # 8 prompts, 4 per step: 2 optimiser steps, each of 4 whole groups of 16 beams
    history = client.get_metric_history(run.info.run_id, "rollout/distinct_sids_per_group")
    assert sorted(m.step for m in history) == [1, 2]
    assert run.data.metrics["rollout/distinct_sids_per_group"] == G
    assert "valid/HR_at_10" in run.data.metrics and run.data.params["num_gpus"] == "2"


def test_beam_rollouts_are_the_evaluation_decoders_beams(trained, industrial_files):
    """The roll-out's G beams are what evaluation decodes for the same prompt: the sid decoder's, which equal
    generate's (the hf path) in order and score. On the trained tiny model: an untrained one ties everywhere."""
    from minirec.decoding import DecodeSettings
    from minirec.generation import beam_generation_config, left_pad

    model, tokenizer, constraint = trained.model, trained.tokenizer, trained.constraints[3]
    texts = list(build_prompt_set(industrial_files, max_train_prompts=3).train["prompt"])
    ids = prompt_ids(tokenizer, texts)
    rows = [row for row in ids for _ in range(G)]
    common = dict(num_generations=G, constraint=constraint, max_new_tokens=8, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    sid, hf = (beam_rollout(model, rows, decoder=decoder, **common) for decoder in ("sid", "hf"))
    assert sid.completion_ids == hf.completion_ids
    assert sid.scores == pytest.approx(hf.scores, abs=1e-4)
    input_ids, mask = left_pad(ids, tokenizer.pad_token_id, model.device)
    config = beam_generation_config(G, 8, tokenizer.eos_token_id, tokenizer.pad_token_id)
    generated, _ = DecodeSettings(num_beams=G, batch_size=3).rank(model, input_ids, mask, constraint, config)
    decoded = [tokenizer.decode(row, skip_special_tokens=True) for row in generated]
    assert [tokenizer.decode(c, skip_special_tokens=True) for c in sid.completion_ids] == decoded
