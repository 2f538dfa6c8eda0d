"""The sids CLI end to end on the bundled Industrial data: a real sqlite MLflow store, a real (tiny, locally
built) encoder, the project's data validation on the new directory, and a sids run id used as --data-dir."""

from __future__ import annotations

import json

import mlflow
import pytest

from conftest import run_stage

from minirec.data import Catalogue, locate
from minirec.data.layout import resolve_data_dir
from minirec.errors import UserError
from minirec.sid import join_sid
from minirec.sids.recipe import SidsRecipe

INDUSTRIAL = "Industrial_and_Scientific"


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    from test_sids_embed import build_encoder

    return build_encoder(tmp_path_factory.mktemp("encoder"), seed=0)


def run_cli(*argv) -> str:
    return run_stage(SidsRecipe, *argv)


def test_rqkmeans_run_writes_a_valid_directory_and_logs_everything(encoder, mlflow_uri, tmp_path):
    out = tmp_path / "new-data"
    run_id = run_cli("--category", INDUSTRIAL, "--method", "rqkmeans", "--embedding_model", str(encoder),
                     "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--max-length", "32")
    run = mlflow.get_run(run_id)
    assert {k: run.data.tags[k] for k in ("category", "stage", "source", "entry_point", "method")} == {
        "category": INDUSTRIAL, "stage": "sids", "source": str(encoder), "entry_point": "sids", "method": "rqkmeans"}
    metrics = run.data.metrics
    assert metrics["validation_ok"] == 1.0 and metrics["embedding_from_cache"] == 0.0
    assert metrics["new_items"] == 3686.0
    # the official figures of docs/upstream.md 1.2 and 1.6, measured on the input directory
    assert (metrics["official_codes_used_l1"], metrics["official_collision_groups"]) == (48.0, 15.0)
    assert metrics["new_recon_mse_native"] > 0 and metrics["new_recon_mse_fitted"] > 0
    assert run.data.params["method"] == "rqkmeans" and run.data.params["embedding_dim"] == "32"

    new_files = locate(INDUSTRIAL, out)
    new_index = Catalogue.load(new_files).item_tokens
    assert len(new_index) == 3686 and all(len(tokens) == 3 for tokens in new_index.values())
    assert metrics["new_distinct_sids"] == len({join_sid(t) for t in new_index.values()})
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    assert {"data", "embeddings", "sid_report.md", "code_usage.png", "sid_stats.json", "validation.json"} <= artifacts
    stats = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/sid_stats.json"))
    assert stats["official"]["codes_used"] == [48, 256, 256]
    assert "| codes used per level |" in mlflow.artifacts.load_text(f"runs:/{run_id}/sid_report.md")

    downloaded = resolve_data_dir(run_id, cache_dir=tmp_path / "downloads")
    assert Catalogue.load(locate(INDUSTRIAL, downloaded)).item_tokens == new_index
    assert resolve_data_dir(f"runs:/{run_id}/data", cache_dir=tmp_path / "downloads") == downloaded

    from minirec.sids.embed import EmbeddingRecipe, cached_embeddings
    from minirec.sids.text import item_texts
    from minirec.data import sha256_of

    files = locate(INDUSTRIAL)
    reused = cached_embeddings(item_texts(Catalogue.load(files).items), EmbeddingRecipe(str(encoder), max_length=32),
                               sha256_of(files.items), tmp_path / "cache")
    assert reused.from_cache and reused.key == run.data.params["embedding_key"]


def test_resolve_data_dir_rejects_other_runs_and_unknown_refs(mlflow_uri, tmp_path):
    mlflow.set_experiment("minirec-Industrial_and_Scientific")
    with mlflow.start_run(tags={"stage": "sft"}) as run:
        pass
    with pytest.raises(UserError, match="not a sids run"):
        resolve_data_dir(run.info.run_id, cache_dir=tmp_path)
    with pytest.raises(UserError, match="neither an existing folder"):
        resolve_data_dir("no/such/folder")
    assert resolve_data_dir("") is None and resolve_data_dir(str(tmp_path)) == tmp_path


def test_cli_rejects_a_vague_boolean():
    from minirec.stage import parse

    assert parse(SidsRecipe, ["--category", INDUSTRIAL, "--upstream_quirks", "true"])[0].upstream_quirks is True
    with pytest.raises(UserError, match="upstream_quirks expects true or false, not 'False-ish'"):
        parse(SidsRecipe, ["--category", INDUSTRIAL, "--upstream-quirks", "False-ish"])


@pytest.mark.slow
@pytest.mark.parametrize("method, extra", [("rqkmeans_constrained", ()), ("rqvae", ("--epochs", "20", "--eval-step", "10"))])
def test_other_methods_write_valid_directories(method, extra, encoder, mlflow_uri, tmp_path):
    run_id = run_cli("--category", INDUSTRIAL, "--method", method, "--embedding-model", str(encoder),
                     "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--max-length", "32", *extra)
    metrics = mlflow.get_run(run_id).data.metrics
    assert metrics["validation_ok"] == 1.0
    if method == "rqkmeans_constrained":
        assert metrics["new_distinct_sids"] == 3686.0  # the dedup token makes every SID unique


def test_a_sids_run_id_is_the_data_dir_of_sft_and_evaluate(encoder, mlflow_uri, tmp_path):
    """Hand-over by run id: SFT trains on the new SIDs and evaluate decodes them, neither given a folder."""
    from minirec.evaluate.recipe import EvaluateRecipe
    from minirec.sft.recipe import SFTRecipe

    sids_run = run_cli("--category", INDUSTRIAL, "--method", "rqkmeans", "--embedding_model", str(encoder),
                       "--cache-dir", str(tmp_path / "cache"), "--max-length", "32")
    new_sids = Catalogue.load(locate(INDUSTRIAL, sids_run)).valid_sids
    assert new_sids != Catalogue.load(locate(INDUSTRIAL)).valid_sids
    sft_run = run_stage(SFTRecipe, "--preset", "tiny", "--data_dir", sids_run, "--sample", "32", "--valid_sample", "8",
                        "--max_steps", "2", "--eval_steps", "2", "--save_steps", "2", "--final_eval_limit", "0",
                        "--evaluate_untrained", "false")
    evaluate_run = run_stage(EvaluateRecipe, "--model", sft_run, "--category", INDUSTRIAL, "--data_dir", sids_run,
                             "--limit", "4", "--num_beams", "5", "--batch_size", "4")
    for run_id in (sft_run, evaluate_run):
        assert mlflow.get_run(run_id).data.params["data_dir"] == sids_run
    beams = mlflow.artifacts.download_artifacts(run_id=evaluate_run, artifact_path="beams/beams.parquet",
                                                dst_path=str(tmp_path))
    import pandas as pd

    predicted = {sid for row in pd.read_parquet(beams)["predict"] for sid in row}
    assert predicted <= new_sids and mlflow.get_run(evaluate_run).data.metrics["invalid_all"] == 0
