"""SFT training: presets and accumulation, freeze_llm, kill-and-resume equivalence, the CLI's MLflow run,
and the 2-process CPU launch. Everything runs the real Trainer on the tiny Qwen2 model and the bundled data.
"""

from __future__ import annotations

import re

import mlflow
import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from minirec.data import Catalogue
from minirec.errors import SettingsError
from minirec.sft.freeze import freeze_all_but_sid_rows, sid_token_ids
from minirec.sft.recipe import SFTRecipe
from minirec.sft.settings import SFTSettings
from minirec.sft.train import train_sft

from conftest import INDUSTRIAL, run_stage

# A few steps on a handful of rows: enough for the Trainer to save, evaluate and resume.
SMALL = dict(device="cpu", tasks="sid_history", sample=48, valid_sample=8, global_batch_size=8, micro_batch_size=4,
             max_steps=4, eval_steps=2, save_steps=2, warmup_steps=1, learning_rate=1e-3, logging_steps=1,
             early_stopping_patience=0, final_eval_limit=0, seed=3)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from minirec.tiny_model import build_tiny_model

    return build_tiny_model(INDUSTRIAL, tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="module")
def catalogue(industrial_files):
    return Catalogue.load(industrial_files)


def small_config(tiny_model, output_dir, **overrides):
    return SFTSettings.resolve(None, {**SMALL, "model": str(tiny_model), "output_dir": str(output_dir), **overrides})


# --- presets and accumulation -------------------------------------------------------------------------------


def test_paper_preset_holds_upstreams_hyper_parameters():
    paper = SFTSettings.resolve("paper")
    assert (paper.global_batch_size, paper.micro_batch_size, paper.learning_rate, paper.warmup_steps) == (1024, 16, 3e-4, 20)
    assert (paper.cutoff_len, paper.num_epochs, paper.early_stopping_patience, paper.eval_steps) == (512, 10, 3, 0.05)
    assert (paper.optim, paper.weight_decay, paper.shuffle_seed, paper.lr_scheduler) == ("adamw_torch", 0.0, 42, "cosine")
    assert len(paper.tasks) == 5
    assert SFTSettings.resolve("paper", {"lr_scheduler": "linear"}).lr_scheduler == "linear"


@pytest.mark.parametrize("gpus, accumulation", [(1, 64), (2, 32), (4, 16), (8, 8)])
def test_paper_global_batch_is_1024_on_any_number_of_gpus(gpus, accumulation, capsys):
    """sft.py: 1024 / 16 / GPUs accumulation steps; --print_config shows it without loading a model."""
    import yaml

    from minirec.stage import main

    assert main(SFTRecipe, ["--preset", "paper", "--num_gpus", str(gpus), "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["global_batch_size"], printed["gradient_accumulation_steps"]) == (1024, accumulation)
    assert printed["num_gpus"] == gpus and printed["world_size"] == gpus


def test_accumulation_that_is_not_whole_is_refused():
    with pytest.raises(SettingsError, match=r"global_batch_size 1024 examples per optimiser step is not a multiple "
                                            r"of micro_batch_size 16 x 3 processes = 48"):
        SFTSettings.resolve("paper", {"num_gpus": 3})
    with pytest.raises(SettingsError, match="global_batch_size 100"):
        SFTSettings.resolve("paper", {"global_batch_size": 100, "micro_batch_size": 16})
    # two nodes of 4 GPUs are 8 processes
    two_nodes = SFTSettings.resolve("paper", {"num_gpus": 4, "num_machines": 2, "main_process_ip": "10.0.0.1",
                                              "output_dir": "/shared/run"})
    assert two_nodes.gradient_accumulation_steps() == 8


def test_cli_accepts_hyphens_underscores_and_typed_values():
    from minirec.stage import parse

    settings, _ = parse(SFTRecipe, ["--preset", "paper", "--learning-rate", "1e-4", "--freeze_llm", "true",
                                    "--num_gpus", "2", "--tasks", "sid_history,item_alignment"])
    assert (settings.learning_rate, settings.freeze_llm, settings.num_gpus) == (1e-4, True, 2)
    assert settings.tasks == ["sid_history", "item_alignment"] and settings.global_batch_size == 1024
    with pytest.raises(SettingsError, match="freeze_llm expects true or false"):
        SFTSettings.resolve("paper", {"freeze_llm": "maybe"})
    with pytest.raises(SettingsError, match="weight_decay 0"):
        SFTSettings.resolve("paper", {"freeze_llm": True, "weight_decay": 0.1})


# --- freeze_llm ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [True, False])
def test_freeze_llm_updates_only_sid_rows(tiny_model, catalogue, industrial_files, tied):
    from transformers import AutoModelForCausalLM

    from minirec.models import load_tokenizer
    from minirec.sft.data import build_datasets

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, tie_word_embeddings=tied)
    tokenizer = load_tokenizer(tiny_model)
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tied
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    sid_rows = sid_token_ids(tokenizer)
    assert len(sid_rows) == 560  # Industrial: 48 + 256 + 256 SID tokens (docs/upstream.md 1.5)
    summary = freeze_all_but_sid_rows(model, sid_rows)
    assert len(summary.matrices) == (1 if tied else 2)

    data = build_datasets(tokenizer, industrial_files, catalogue, tasks=("sid_history", "title_history_to_sid"),
                          sample=8, valid_sample=1).train
    width = max(map(len, data["input_ids"]))
    ids = torch.tensor([[tokenizer.eos_token_id] * (width - len(x)) + x for x in data["input_ids"]])
    labels = torch.tensor([[-100] * (width - len(x)) + x for x in data["labels"]])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    model(input_ids=ids, labels=labels).loss.backward()
    optimizer.step()

    sid_mask = torch.zeros(len(tokenizer), dtype=torch.bool)
    sid_mask[sid_rows] = True
    for name, parameter in model.named_parameters():
        changed_rows = (parameter.detach() != before[name]).reshape(parameter.shape[0], -1).any(dim=1)
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            assert not changed_rows[~sid_mask].any(), f"{name}: a non-SID row moved"
            assert changed_rows[sid_mask].any(), f"{name}: no SID row moved"
        else:
            assert not changed_rows.any(), f"{name} moved although frozen"


# --- resume -------------------------------------------------------------------------------------------------


class StopAt(TrainerCallback):
    """Ends training right after step ``step`` is checkpointed, as an interrupted job would."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_interrupted_and_resumed_training_ends_with_the_uninterrupted_weights(tmp_path, tiny_model, catalogue,
                                                                               industrial_files, mlflow_uri):
    straight = small_config(tiny_model, tmp_path / "straight")
    interrupted = small_config(tiny_model, tmp_path / "interrupted")
    with mlflow.start_run():
        train_sft(straight, industrial_files, catalogue, save=False)
        first = train_sft(interrupted, industrial_files, catalogue, callbacks=[StopAt(2)], save=False)
        assert first.trainer.state.global_step == 2
        assert not (tmp_path / "interrupted" / "checkpoint-4").exists()
        early = load_file(tmp_path / "interrupted" / "checkpoint-2" / "model.safetensors")
        resumed = train_sft(interrupted, industrial_files, catalogue, save=False,
                            resume_checkpoint=str(tmp_path / "interrupted" / "checkpoint-2"))
    assert resumed.trainer.state.global_step == 4
    expected = load_file(tmp_path / "straight" / "checkpoint-4" / "model.safetensors")
    actual = load_file(tmp_path / "interrupted" / "checkpoint-4" / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)
    # and the step-2 weights really differ from the step-4 ones (the test would be empty otherwise)
    assert any(not torch.equal(early[name], expected[name]) for name in expected)


# --- the CLI and its MLflow run -----------------------------------------------------------------------------


def _cli(tiny_model, output_dir, *extra):
    flags = {**SMALL, "model": str(tiny_model), "output_dir": str(output_dir)}
    argv = ["--preset", "tiny"] + [f"--{k}={v}" for k, v in flags.items()] + list(extra)
    return mlflow.get_run(run_stage(SFTRecipe, *argv))


def test_cli_run_logs_config_losses_evaluations_and_a_loadable_model(tmp_path, tiny_model, mlflow_uri, monkeypatch,
                                                                      capsys):
    from minirec.models import load_model_and_tokenizer

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    run = _cli(tiny_model, tmp_path / "out", "--final_eval_limit=6", "--final_eval_beams=10",
               "--evaluate_untrained=true", "--log_model=true")
    # A log file (not a terminal) gets the progress lines, not the Trainer's dictionary at every logging step.
    printed = capsys.readouterr()
    assert re.search(r"^\[sft\] step 4/4, [\d.]+ steps/s, loss [-+.e\d]+, ETA 0 s$", printed.out, re.M), printed.out
    assert "{'loss'" not in printed.out + printed.err and "'eval_loss'" not in printed.out + printed.err
    client = mlflow.MlflowClient()
    assert run.info.status == "FINISHED"
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert {k: tags[k] for k in ("category", "stage", "source", "entry_point", "preset")} == {
        "category": INDUSTRIAL, "stage": "sft", "source": str(tiny_model), "entry_point": "sft", "preset": "tiny"}
    assert (params["learning_rate"], params["gradient_accumulation_steps"], params["samples.sid_history"]) == ("0.001", "2", "48")
    assert params["data.train.rows"] == "12243" and params["train_file.rows"] == "12243"
    assert params["model"] == str(tiny_model) and params["global_batch_size"] == "8"
    assert sorted(i.dataset.name for i in run.inputs.dataset_inputs) == [f"{INDUSTRIAL}/train", f"{INDUSTRIAL}/valid"]
    assert any(name.startswith("system/cpu_utilization") for name in metrics), sorted(metrics)
    assert params["output_dir"] == str(tmp_path / "out")
    steps = sorted(int(p.split(".")[1]) for p in params if p.startswith("checkpoint."))
    assert steps == [2, 4]  # every checkpoint uploaded with its digest, for resume from any machine
    train_loss = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in train_loss] == [1, 2, 3, 4]
    for name in ("learning_rate", "grad_norm", "tokens_per_second"):
        assert len(client.get_metric_history(run.info.run_id, name)) == 4, name
    assert all(m.value > 0 for m in client.get_metric_history(run.info.run_id, "tokens_per_second"))
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval_loss")] == [0, 2, 4]
    assert metrics["best_eval_loss"] == min(m.value for m in client.get_metric_history(run.info.run_id, "eval_loss"))
    for prefix in ("valid", "untrained_valid"):
        assert metrics[f"{prefix}_n"] == 6 and metrics[f"{prefix}_num_beams"] == 10
        assert 0 <= metrics[f"{prefix}_HR_at_10"] <= 1
    assert "scored" not in tags  # valid-split numbers never compete with test-split scores
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "config")}
    assert artifacts == {"config/tiny.yaml", "config/resolved.yaml"}

    model, tokenizer = load_model_and_tokenizer(run.info.run_id)
    assert len(tokenizer) == int(params["tokenizer_size"])
    trained = load_file(tmp_path / "out" / "final_checkpoint" / "model.safetensors")
    for name, value in model.state_dict().items():
        if name in trained:
            torch.testing.assert_close(value, trained[name], rtol=0, atol=0)


def test_cli_resume_from_a_run_id_continues_and_links_the_runs(tmp_path, tiny_model, mlflow_uri):
    first = _cli(tiny_model, tmp_path / "first", "--max_steps=2", "--log_model=false")
    second = _cli(tiny_model, tmp_path / "second", "--max_steps=4", "--log_model=false",
                  f"--resume_from={first.info.run_id}")
    assert second.data.tags["resumed_from"] == first.info.run_id
    assert second.data.tags["mlflow.parentRunId"] == first.info.run_id
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(second.info.run_id, "train_loss")]
    assert steps == [3, 4]  # continues after the first run's last checkpoint


@pytest.mark.slow
def test_two_cpu_processes_train_one_tracked_run(tmp_path, tiny_model, mlflow_uri):
    run = _cli(tiny_model, tmp_path / "ddp", "--num_gpus=2", "--log_model=false")
    assert run.info.status == "FINISHED"
    assert run.data.params["world_size"] == "2"  # and the Trainer checked that it trained on 2 processes
    assert run.data.params["gradient_accumulation_steps"] == "1"  # 8 / (4 x 2 processes)
    runs = mlflow.search_runs(experiment_names=[f"minirec-{INDUSTRIAL}"], output_format="list")
    assert len(runs) == 1  # only the main process logs
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "train_loss")]
    assert steps == [1, 2, 3, 4]


@pytest.mark.slow
def test_tiny_preset_learns_and_beats_the_untrained_model(tmp_path, mlflow_uri):
    """The preset's own promise: eval loss falls and valid HR@10 rises above the untrained tiny model's."""
    run = mlflow.get_run(run_stage(SFTRecipe, "--preset", "tiny", "--category", INDUSTRIAL,
                                   "--output_dir", tmp_path / "tiny"))
    metrics = run.data.metrics
    assert run.info.status == "FINISHED" and run.data.tags["minirec.model_uri"].startswith("models:/")
    assert metrics["best_eval_loss"] < metrics["first_eval_loss"] - 1.0
    assert metrics["valid_n"] == metrics["untrained_valid_n"] == 200
    assert metrics["valid_HR_at_10"] > metrics["untrained_valid_HR_at_10"]
    assert metrics["valid_invalid"] == 0


def test_the_loss_on_the_answer_span_is_the_full_sequence_loss(tiny_model, catalogue, industrial_files):
    """SFT projects only the positions the loss reads onto the vocabulary; the loss must not change."""
    from minirec.models import load_model_and_tokenizer
    from minirec.sft.data import build_datasets
    from minirec.sft.train import AnswerSpanCollator, answer_loss

    model, tokenizer = load_model_and_tokenizer(tiny_model)
    data = build_datasets(tokenizer, industrial_files, catalogue, sample=24, valid_sample=1).train
    batch = AnswerSpanCollator(tokenizer)([data[i] for i in range(16)])  # all five tasks: answers of many lengths
    keep, labels = batch.pop("logits_to_keep"), batch["labels"]
    assert keep < labels.shape[1]
    full = model(**batch)
    kept = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep)
    torch.testing.assert_close(answer_loss(kept, labels), full.loss, rtol=1e-6, atol=1e-6)
    items = (labels[:, 1:] != -100).sum()
    torch.testing.assert_close(answer_loss(kept, labels, num_items_in_batch=items * 2), full.loss / 2,
                               rtol=1e-6, atol=1e-6)
