"""Bad input to every stage: one line on stderr naming the parameter (or file, line and field), exit status 2,
no traceback, and no MLflow run left behind (issue 14, items 3 and 4).

Each case runs the stage's real command line in this process (:func:`conftest.stage_exit`, what
``python -m minirec.<stage>`` runs) against a sqlite store of this module, and then looks in that store: no
run may have appeared, so none is left RUNNING either.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import INDUSTRIAL, OFFICE, stage_exit
from mlflow import MlflowClient

from minirec.compare.recipe import CompareRecipe
from minirec.data import locate, sha256_of
from minirec.data.layout import FILE_SUFFIX
from minirec.evaluate.recipe import EvaluateRecipe
from minirec.grpo.recipe import GRPORecipe
from minirec.score.recipe import ScoreRecipe
from minirec.sft.recipe import SFTRecipe
from minirec.sids.recipe import SidsRecipe

UNKNOWN_RUN = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory):
    """One sqlite store for the module (a new one per case would cost seconds each); no case may add a run."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.fixture
def store(store_uri, monkeypatch):
    import mlflow
    import mlflow.tracking.fluent as fluent

    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MINIREC_PARENT_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    mlflow.set_tracking_uri(store_uri)
    return store_uri


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A model folder that resolves (config.json only: every case fails before a model is loaded), a small
    predictions file, a copy of the Office data with a broken index.json, and a small valid catalogue."""
    root = tmp_path_factory.mktemp("bad-input")
    model = root / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    files = locate(OFFICE)
    test = files.test.read_text(encoding="utf-8").splitlines()
    sid = test[1].rsplit(",", 1)[-1]
    predictions = root / "predictions.json"
    predictions.write_text(json.dumps([{"input": "x", "output": sid + "\n", "predict": [sid]}]))
    broken = root / "broken"
    shutil.copytree(files.root, broken / OFFICE)
    index = broken / OFFICE / "index" / f"{OFFICE}.index.json"
    text = index.read_text(encoding="utf-8")
    index.write_text(text[: len(text) // 2], encoding="utf-8")  # cut short, as by a failed copy
    small = small_category(root / "small", INDUSTRIAL, items=8)
    used = root / "used"  # an evaluate output folder holding shards of a 50-beam evaluation of Office's test split
    (used / "shards").mkdir(parents=True)
    (used / "shards" / "manifest.json").write_text(json.dumps({
        "split": "test", "split_sha256": sha256_of(files.test), "num_beams": 50, "batch_size": 16,
        "prompt": "test", "decoder": "sid", "model_checksum": "0" * 16}))
    return {"model": model, "predictions": predictions, "broken": broken, "broken_index": index, "small": small,
            "used": used}


def small_category(data_dir: Path, category: str, items: int) -> Path:
    """A valid data directory for ``category`` with ``items`` items, 3-token SIDs and four rows per split."""
    root = data_dir / category
    sids = {i: [f"<a_{i}>", "<b_1>", "<c_1>"] for i in range(items)}
    titles = {i: f"Item number {i}" for i in range(items)}
    for folder in ("train", "valid", "test", "index", "info"):
        (root / folder).mkdir(parents=True)
    (root / "index" / f"{category}.index.json").write_text(json.dumps({str(i): t for i, t in sids.items()}))
    (root / "index" / f"{category}.item.json").write_text(json.dumps(
        {str(i): {"title": titles[i], "description": ""} for i in range(items)}))
    (root / "info" / f"{category}{FILE_SUFFIX}.txt").write_text(
        "".join(f"{''.join(sids[i])}\t{titles[i]}\t{i}\n" for i in range(items)))
    header = "user_id,history_item_title,item_title,history_item_id,item_id,history_item_sid,item_sid\n"
    for split, length in (("train", 1), ("valid", 2), ("test", 3)):
        rows = []
        for user in range(4):
            history, target = list(range(user, user + length)), user + length
            rows.append(",".join([
                f"A{user + 1}", _cell(str([titles[i] for i in history])), titles[target], _cell(str(history)),
                str(target), _cell(str(["".join(sids[i]) for i in history])), "".join(sids[target]),
            ]))
        (root / split / f"{category}{FILE_SUFFIX}.csv").write_text(header + "\n".join(rows) + "\n")
    return data_dir


def _cell(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def case(stage, *argv, expect: str):
    return pytest.param(stage, argv, expect, id=f"{stage.stage}:{' '.join(argv)[:60]}")


# {model}, {predictions}, {broken}, {small} are filled from the ``inputs`` fixture.
CASES = [
    # numbers out of range (item 3): checked with the settings, before anything else
    case(EvaluateRecipe, "--model", "{model}", "--limit", "-157",
         expect=r"limit = -157 is out of range: expected an integer >= 0"),
    case(EvaluateRecipe, "--model", "{model}", "--num_beams", "0",
         expect=r"num_beams = 0 is out of range: expected an integer from 1 to 1000"),
    case(EvaluateRecipe, "--model", "{model}", "--batch_size", "0",
         expect=r"batch_size = 0 is out of range: expected an integer from 1 to 4096"),
    case(EvaluateRecipe, "--model", "{model}", "--num_beams", "5000",
         expect=r"num_beams = 5000 is out of range: expected an integer from 1 to 1000"),
    case(EvaluateRecipe, "--model", "{model}", "--seed", "-1",
         expect=r"seed = -1 is out of range: expected an integer from 0 to 4294967295"),
    case(EvaluateRecipe, "--model", "{model}", "--num_beams", "abc",
         expect=r"num_beams expects an int, not 'abc'"),
    case(ScoreRecipe, "--predictions", "{predictions}", "--category", OFFICE, "--n_boot", "0",
         expect=r"n_boot = 0 is out of range: expected an integer from 1 to 1000000"),
    case(GRPORecipe, "--model", "{model}", "--temperature", "nan",
         expect=r"temperature = nan is out of range: expected a finite number"),
    case(SFTRecipe, "--learning_rate", "inf", expect=r"learning_rate = inf is out of range: expected a finite number"),
    # a second machine of a multi-node launch without the folder it shares with machine 0
    case(SFTRecipe, "--num_machines", "2", "--machine_rank", "1", "--main_process_ip", "10.0.0.1",
         expect=r"machine_rank = 1 needs output_dir: the folder shared with machine 0"),
    # upstream's RL sampling on a train split smaller than its sample (the paper-release profile raises, as upstream)
    case(GRPORecipe, "--model", "{model}", "--category", OFFICE, "--upstream", "paper-release", "--tasks",
         "title_history_to_sid",
         expect=r"Office_Products_5_2016-10-2018-11.partial.csv: 7,648 train rows, but upstream's "
                r"RLSeqTitle2SidDataset draws sample=10,000"),
    # a training stage asked to take no step
    case(SFTRecipe, "--num_epochs", "0", expect=r"num_epochs = 0 with max_steps = -1 trains nothing: expected "
                                                r"num_epochs > 0 or max_steps >= 1"),
    case(GRPORecipe, "--model", "{model}", "--max_steps", "0",
         expect=r"max_steps = 0 trains nothing: expected -1 \(train for num_train_epochs\) or an integer >= 1"),
    # a device name the stage cannot place work on (sids takes cuda:N, so its device has no fixed choices)
    case(SidsRecipe, "--category", OFFICE, "--device", "gpu", expect=r"device = 'gpu': expected auto, cpu, cuda or cuda:N"),
    # more beams than the catalogue has SIDs: refused before the run (the catalogue's size is read first)
    case(EvaluateRecipe, "--model", "{model}", "--data_dir", "{small}", "--num_beams", "20",
         expect=r"num_beams = 20 is out of range: expected an integer from 1 to the catalogue's 8 SIDs"),
    # references that name nothing (item 4)
    case(EvaluateRecipe, "--model", UNKNOWN_RUN, expect=rf"no MLflow run {UNKNOWN_RUN} in sqlite:///"),
    case(EvaluateRecipe, "--model", f"runs:/{UNKNOWN_RUN}/model", expect=rf"no MLflow run {UNKNOWN_RUN} in sqlite:///"),
    case(EvaluateRecipe, "--model", "models:/no-such-model/1",
         expect=r"model models:/no-such-model/1: .*no-such-model.* \(tracking store sqlite:///"),
    case(EvaluateRecipe, "--model", "models:/no-such-model@champion",
         expect=r"model models:/no-such-model@champion: .*no-such-model"),
    case(EvaluateRecipe, "--model", "/no/such/folder/model", expect=r"model path /no/such/folder/model does not exist"),
    case(EvaluateRecipe, "--model", "no such model", expect=r"model 'no such model' does not exist: it is no local "
                                                           r"folder, MLflow run id, runs:/ or models:/ URI"),
    case(GRPORecipe, "--model", f"runs:/{UNKNOWN_RUN}/model", expect=rf"no MLflow run {UNKNOWN_RUN} in sqlite:///"),
    case(GRPORecipe, "--model", "models:/no-such-model/3", expect=r"model models:/no-such-model/3: "),
    case(ScoreRecipe, "--predictions", "/no/such/results.json", "--category", OFFICE,
         expect=r"/no/such/results.json.*no such file"),
    # a broken index.json in a standalone stage's data (item 4): validation names file and line
    case(ScoreRecipe, "--predictions", "{predictions}", "--category", OFFICE, "--data_dir", "{broken}",
         expect=r"Office_Products data in .* failed validation .*: {broken_index}, line 1, column \(file\): cannot be "
                r"parsed \(not JSON"),
    case(EvaluateRecipe, "--model", "{model}", "--category", OFFICE, "--data_dir", "{broken}",
         expect=r"failed validation .*: {broken_index}, line 1, column \(file\)"),
    case(SFTRecipe, "--category", OFFICE, "--data_dir", "{broken}",
         expect=r"failed validation .*: {broken_index}, line 1, column \(file\)"),
    case(GRPORecipe, "--model", "{model}", "--category", OFFICE, "--data_dir", "{broken}",
         expect=r"failed validation .*: {broken_index}, line 1, column \(file\)"),
    # an output folder named again with other settings than the shards it holds (item 4)
    case(EvaluateRecipe, "--model", "{model}", "--category", OFFICE, "--out", "{used}", "--num_beams", "10",
         expect=r"{used}/shards holds shards of another evaluation \(differs in: num_beams\); use another output "
                r"folder or delete that one"),
    # a quote in a compare filter
    case(CompareRecipe, "--category", "Office'Products",
         expect=r"category = \"Office'Products\" is not allowed: expected one of"),
    case(CompareRecipe, "--run_ids", "abc'def", expect=r"run abc'def not found on the tracking server"),
]


def run_ids(uri: str) -> set[str]:
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return {run.info.run_id for run in client.search_runs(experiments)} if experiments else set()


@pytest.mark.parametrize(("recipe", "argv", "expect"), CASES)
def test_bad_input_is_one_line_exit_2_and_no_run(recipe, argv, expect, inputs, store, capsys):
    names = {key: str(value) for key, value in inputs.items()}
    before = run_ids(store)
    capsys.readouterr()
    code = stage_exit(recipe, *(arg.format(**names) for arg in argv))
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    pattern = expect.format(**{key: re.escape(value) for key, value in names.items()})
    assert re.match(rf"{recipe.stage}: error: .*{pattern}", lines[0]), lines[0]
    assert run_ids(store) == before, "the stage left a run behind"
