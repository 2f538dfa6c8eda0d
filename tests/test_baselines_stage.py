"""The baselines stage for the learned methods: one tracked, scored, resumable MLflow run each (a real sqlite
store, real training on a few hundred rows), main's baseline steps, and the CF reward in a tiny GRPO run."""

from __future__ import annotations

import mlflow
import pytest
import torch

from conftest import INDUSTRIAL, run_stage, stage_exit
from minirec.baselines.recipe import BaselineRecipe
from minirec.baselines.settings import ALL, BaselineSettings

SMALL = ("--category", INDUSTRIAL, "--train_rows", "400", "--valid_rows", "200", "--epochs", "3",
         "--hp", "lr=0.005,batch_size=64", "--checkpoint_seconds", "0")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One real sqlite store for this module's runs (the trained SASRec run is shared by several tests)."""
    import mlflow.tracking.fluent as fluent

    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fluent, "_active_experiment_id", None)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        patch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        mlflow.set_tracking_uri(uri)
        yield root
        while mlflow.active_run():
            mlflow.end_run()


@pytest.fixture(scope="module")
def sasrec_run(store):
    return run_stage(BaselineRecipe, "--method", "sasrec", *SMALL, "--output_dir", store / "sasrec")


def _download(run_id: str, path: str, into) -> str:
    return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(into))


def test_a_learned_baseline_is_one_scored_run_with_its_epochs_model_and_checkpoints(
        sasrec_run, industrial_files, industrial_catalogue, tmp_path):
    from minirec.baselines.artifacts import load_run_model
    from minirec.beams import read_predictions
    from minirec.data import read_split
    from minirec.recsys import rank_split

    client = mlflow.MlflowClient()
    run = client.get_run(sasrec_run)
    assert run.info.status == "FINISHED"
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert {k: tags[k] for k in ("stage", "scored", "method", "paper_method", "baseline_kind", "preset",
                                 "entry_point")} == {
        "stage": "sasrec", "scored": "true", "method": "sasrec", "paper_method": "SASRec",
        "baseline_kind": "learned", "preset": "cpu", "entry_point": "baselines"}
    # The resolved hyper-parameters (preset, then the options), the train file behind the numbers.
    assert params["hp.epochs"] == "3" and params["hp.lr"] == "0.005" and params["hp.batch_size"] == "64"
    assert params["hp.model.hidden"] == "32" and params["hp.train_rows"] == "400" and params["paper_method"] == "SASRec"
    assert params["train_file.rows"] == "12243" and params["train_file.partial"] == "true"
    contexts = {tag.value for d in run.inputs.dataset_inputs for tag in d.tags if tag.key == "mlflow.data.context"}
    assert contexts == {"train", "valid", "test"}
    # Summary, per-epoch metrics (step = epoch), and the untrained model for reference.
    assert metrics["epochs_run"] == 3 and 1 <= metrics["best_epoch"] <= 3
    assert metrics["train_rows"] == 400 and metrics["valid_rows"] == 200 and metrics["parameters"] == 245_478
    for name in ("loss", "epoch_seconds", "eval_seconds", "valid_HR_at_10", "valid_NDCG_at_20"):
        assert [m.step for m in client.get_metric_history(sasrec_run, name)] == [1, 2, 3], name
    assert metrics["best_valid_NDCG_at_20"] >= metrics["untrained_valid_NDCG_at_20"]
    for name in ("HR_at_10", "NDCG_at_10", "HR_at_10_ci_low", "invalid_all", "seconds_per_epoch", "cpu_seconds"):
        assert name in metrics, name
    assert metrics["invalid_all"] == 0 and metrics["n"] == 4533
    # Artifacts: the model (with its digest), a checkpoint per evaluation (checkpoint_seconds 0), the ranking.
    artifacts = {a.path for folder in ("", "model", "checkpoints", "beams", "config")
                 for a in client.list_artifacts(sasrec_run, folder or None)}
    assert {"model/best.pt", "model/config.yaml", "beams/beams.parquet", "scores", "config/sasrec.yaml",
            "checkpoints/checkpoint-3", "checkpoints/checkpoint-3.json"} <= artifacts
    assert {f"checkpoint.{epoch}.sha256" for epoch in (1, 2, 3)} <= set(params) and "model.sha256" in params

    beams = read_predictions(_download(sasrec_run, "beams/beams.parquet", tmp_path))
    assert len(beams) == 4533
    for predict in beams["predict"]:
        assert len(predict) == 50 and len(set(predict)) == 50 and set(predict) <= industrial_catalogue.valid_sids
    # The logged model is the one that ranked: same SIDs from model/best.pt.
    model, info = load_run_model(sasrec_run, industrial_catalogue, tmp_path / "model")
    assert info["method"] == "sasrec" and info["epoch"] == metrics["best_epoch"]
    rows = read_split(industrial_files.test).head(20)
    assert rank_split(model, rows, industrial_catalogue)["predict"].tolist() == beams["predict"].head(20).tolist()


def test_resume_by_run_id_continues_an_interrupted_run_to_the_same_model(
        sasrec_run, store, industrial_catalogue, monkeypatch, tmp_path):
    from minirec.baselines.artifacts import load_run_model

    original = BaselineRecipe.on_epoch

    def interrupted(self, epoch, record):
        original(self, epoch, record)  # logs the epoch and uploads its checkpoint
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(BaselineRecipe, "on_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_stage(BaselineRecipe, "--method", "sasrec", *SMALL, "--output_dir", tmp_path / "cut")
    monkeypatch.setattr(BaselineRecipe, "on_epoch", original)
    client = mlflow.MlflowClient()
    (cut,) = [r for r in client.search_runs([client.get_experiment_by_name(f"minirec-{INDUSTRIAL}").experiment_id])
              if r.info.run_id != sasrec_run and "resumed_from" not in r.data.tags and r.info.status == "KILLED"]

    resumed_id = run_stage(BaselineRecipe, "--resume_from", cut.info.run_id, "--output_dir", tmp_path / "resumed")
    resumed = client.get_run(resumed_id)
    assert resumed.data.tags["resumed_from"] == cut.info.run_id
    assert resumed.data.tags["mlflow.parentRunId"] == cut.info.run_id
    assert resumed.data.params["hp.train_rows"] == "400" and resumed.data.params["hp.lr"] == "0.005"
    assert [m.step for m in client.get_metric_history(resumed_id, "loss")] == [3]
    assert resumed.data.metrics["epochs_run"] == 3 and resumed.data.metrics["epochs_this_run"] == 1
    # Epochs 1-2 in one run and 3 in another train the same weights as one uninterrupted run.
    full_model, full = load_run_model(sasrec_run, industrial_catalogue, tmp_path / "full")
    resumed_model, again = load_run_model(resumed_id, industrial_catalogue, tmp_path / "again")
    assert full["epoch"] == again["epoch"]
    a, b = full_model.state_dict(), resumed_model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.data.metrics["HR_at_10"] == client.get_run(sasrec_run).data.metrics["HR_at_10"]


def test_methods_presets_and_mistakes(sasrec_run, capsys):
    assert BaselineSettings.resolve(None, {"method": "all"}).methods() == ALL == (
        "popularity", "transition", "sasrec", "gru4rec", "caser")
    settings = BaselineSettings.resolve(None, {"category": INDUSTRIAL, "method": "all,hstu"})
    runs = BaselineRecipe.expand(settings)
    assert [(s.method, s.preset) for s in runs] == [("popularity", ""), ("transition", ""), ("sasrec", "cpu"),
                                                   ("gru4rec", "cpu"), ("caser", "cpu"), ("hstu", "cpu")]
    tiger = BaselineSettings.resolve("tiny", {"category": INDUSTRIAL, "method": "tiger", "hp": "model.d_model=32"})
    resolved = tiger.resolved()
    assert resolved["hp.epochs"] == 4 and resolved["hp.model.d_model"] == 32 and resolved["paper_method"] == "TIGER"
    assert BaselineSettings.resolve("paper", {"method": "hstu"}).resolved()["hp.model.num_blocks"] == 4
    for argv, message in [
        (["--method", "sasrec,bert4rec"], "expected some of popularity, transition, sasrec"),
        (["--method", "sasrec", "--hp", "epoch=3"], "unknown baseline setting 'epoch'"),
        (["--method", "sasrec", "--hp", "model.hiden=3", "--category", INDUSTRIAL], "unexpected keyword"),
        (["--method", "all", "--resume_from", sasrec_run], "resume_from continues one run"),
        (["--method", "popularity", "--resume_from", sasrec_run], "has none"),
        (["--method", "sasrec", "--preset", "huge"], "preset = 'huge' is not allowed"),
    ]:
        assert stage_exit(BaselineRecipe, *argv) == 2, argv
        assert message in capsys.readouterr().err, argv


def test_main_runs_the_cheap_learned_baselines_after_the_floors():
    from minirec.pipeline.recipe import CategoryPipeline
    from minirec.pipeline.settings import PipelineSettings

    def steps(preset, **overrides):
        settings = PipelineSettings.resolve(preset, overrides)
        return [(s.name, s.module, s.args[s.args.index("--method"):], s.resumable)
                for s in CategoryPipeline(INDUSTRIAL, settings, "parent").baseline_steps()]

    assert steps("tiny") == [
        ("popularity", "baselines", ("--method", "popularity"), False),
        ("transition", "baselines", ("--method", "transition"), False),
        ("sasrec", "baselines", ("--method", "sasrec"), True),
        ("gru4rec", "baselines", ("--method", "gru4rec"), True),
        ("caser", "baselines", ("--method", "caser"), True)]
    paper = steps("paper")
    assert [name for name, *_ in paper] == ["popularity", "transition", "sasrec", "gru4rec", "caser", "hstu", "tiger"]
    assert paper[-1][2] == ("--method", "tiger", "--preset", "paper")
    assert steps("tiny", baselines="popularity,hstu,tiger:tiny")[1:] == [
        ("hstu", "baselines", ("--method", "hstu"), True),
        ("tiger", "baselines", ("--method", "tiger", "--preset", "tiny"), True)]
    from minirec.errors import SettingsError

    with pytest.raises(SettingsError, match="only the learned methods take a preset"):
        PipelineSettings.resolve("tiny", {"baselines": "popularity:paper"})
    with pytest.raises(SettingsError, match="'bert4rec' is not a baseline"):
        PipelineSettings.resolve("tiny", {"baselines": "bert4rec"})


def test_a_tiny_grpo_run_with_the_cf_reward_of_a_baselines_run(sasrec_run, store, tiny_industrial, tmp_path):
    from minirec.grpo.recipe import GRPORecipe

    common = ["--category", INDUSTRIAL, "--output_dir", tmp_path / "grpo", "--eval_steps", "0",
              "--eval_beams", "10", "--eval_batch_size", "4", "--save_steps", "1", "--log_checkpoints", "false",
              "--log_model", "false", "--max_train_prompts", "4", "--prompts_per_step", "2",
              "--per_device_batch_size", "32", "--eval_limit", "4"]
    run_id = run_stage(GRPORecipe, "--preset", "tiny", "--model", tiny_industrial, "--reward", "ranking_cf",
                       "--cf_model", sasrec_run, "--cf_weight", "0.5", *common)
    run = mlflow.MlflowClient().get_run(run_id)
    for name in ("rewards/rule_reward/mean", "rewards/ndcg_rule_reward/mean", "rewards/cf_reward/mean", "reward"):
        assert name in run.data.metrics, name
    # SID-history prompts all carry a history: the term is the SASRec logit, not the 0 of an unscored row.
    assert run.data.metrics["rewards/cf_reward/mean"] != 0.0
    assert run.data.params["cf_model"] == sasrec_run and run.data.params["reward"] == "ranking_cf"


def test_cf_reward_settings_need_each_other(capsys):
    from minirec.grpo.recipe import GRPORecipe

    assert stage_exit(GRPORecipe, "--reward", "ranking_cf", "--model", "x") == 2
    assert "needs cf_model" in capsys.readouterr().err
    assert stage_exit(GRPORecipe, "--reward", "ranking", "--cf_model", "0" * 32, "--model", "x") == 2
    assert "does not use it" in capsys.readouterr().err


def test_reward_weights_put_the_cf_weight_on_the_cf_term():
    from minirec.grpo.rewards import reward_functions, reward_weights

    def cf(completions, **kwargs):
        return [0.0] * len(completions)

    assert [getattr(f, "__name__", "") for f in reward_functions("ranking_cf", 4, cf)] == [
        "rule_reward", "ndcg_rule_reward", "cf"]
    assert reward_functions("cf_only", 4, cf) == [cf]
    assert reward_weights("ranking_cf", 0.5) == [1.0, 1.0, 0.5] and reward_weights("cf_only", 2) == [2.0]
    assert reward_weights("ranking", 0.5) is None
    with pytest.raises(ValueError, match="cf_model"):
        reward_functions("cf_only", 4)


@pytest.mark.slow
def test_cpu_presets_beat_popularity_and_the_tiny_presets_run_end_to_end(store, tmp_path):
    """The issue's bar, as `mlflow run . -e baselines -P method=<m>` runs it: about 10-15 minutes on 2 cores."""
    client = mlflow.MlflowClient()

    def run(method, *extra):
        run_id = run_stage(BaselineRecipe, "--method", method, "--category", INDUSTRIAL, *extra,
                           "--output_dir", tmp_path / method)
        found = client.get_run(run_id)
        assert found.info.status == "FINISHED" and found.data.tags["scored"] == "true"
        assert found.data.metrics["n"] == 4533 and found.data.metrics["invalid_all"] == 0
        return found.data.metrics

    floor = run("popularity")["HR_at_10"]
    for method in ("sasrec", "gru4rec", "caser"):
        metrics = run(method)
        assert metrics["HR_at_10"] > floor, (method, metrics["HR_at_10"], floor)
        assert metrics["stopped_early"] == 1 and metrics["best_epoch"] < metrics["epochs_run"]
    for method in ("hstu", "tiger"):
        metrics = run(method, "--preset", "tiny")
        assert metrics["epochs_run"] == {"hstu": 5, "tiger": 4}[method]


def test_grpo_prompt_rows_carry_the_history_item_ids_the_cf_reward_scores(industrial_files, industrial_catalogue):
    from minirec.data import read_split
    from minirec.grpo.data import alignment_rows, sid_history_rows, title_history_rows

    frame, path = read_split(industrial_files.valid).head(300), industrial_files.valid
    for row in sid_history_rows(frame, path):  # the prompt lists these items' SIDs, in order
        ids = row["history_item_ids"]
        assert ids and ", ".join(industrial_catalogue.item_sid[item] for item in ids) in row["prompt"]
    for row in title_history_rows(frame, path, sample=50):  # the same ids (upstream: KeyError on titles, 8.1 H)
        ids = row["history_item_ids"]
        assert ids and all(industrial_catalogue.title(item) in row["prompt"] for item in ids)
    assert all(row["history_item_ids"] == [] for row in alignment_rows(industrial_catalogue))
