"""SID tokens, the tiny model, and model references through a real MLflow store."""

from __future__ import annotations

import json

import pytest
import torch

from minirec.data import Catalogue
from minirec.errors import NotFoundError
from minirec.models import (
    ModelNotFoundError,
    add_sid_tokens,
    load_model_and_tokenizer,
    log_hf_model,
    resolve_model,
)
from minirec.tiny_model import build_tiny_model, train_tokenizer

INDUSTRIAL = "Industrial_and_Scientific"


def _bare_tokenizer_and_model():
    """A tokenizer without SID tokens and a matching two-layer Qwen2 model."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = train_tokenizer(iter(["drill bits and staples", "office paper, pens and folders"] * 50))
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    return tokenizer, Qwen2ForCausalLM(config)


@pytest.mark.parametrize("fixture_name", ["industrial_files", "office_files"])
def test_add_sid_tokens_adds_every_index_token_once_in_sorted_order(fixture_name, request):
    files = request.getfixturevalue(fixture_name)
    index = json.loads(files.index.read_text())
    expected = sorted({token for tokens in index.values() for token in tokens})
    # Spec 1.5: 48 + 256 + 256 for Industrial, 88 + 256 + 256 for Office.
    assert len(expected) == {"industrial_files": 560, "office_files": 600}[fixture_name]

    tokenizer, model = _bare_tokenizer_and_model()
    base = len(tokenizer)
    assert add_sid_tokens(tokenizer, model, Catalogue.load(files)) == len(expected)
    assert tokenizer.convert_tokens_to_ids(expected) == list(range(base, base + len(expected)))
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == base + len(expected)
    sid_tokens = index["0"]
    encoded = tokenizer("".join(sid_tokens) + "\n", add_special_tokens=False).input_ids
    assert tokenizer.convert_ids_to_tokens(encoded)[:3] == sid_tokens

    embeddings = model.get_input_embeddings().weight.detach().clone()
    assert add_sid_tokens(tokenizer, model, Catalogue.load(files)) == 0
    assert len(tokenizer) == base + len(expected)
    assert torch.equal(model.get_input_embeddings().weight, embeddings)


def test_tiny_model_is_byte_identical_for_a_seed_and_already_has_sid_tokens(tiny_industrial, tmp_path, industrial_files):
    again = build_tiny_model(INDUSTRIAL, tmp_path / "again", seed=0)
    files = sorted(p.name for p in tiny_industrial.iterdir())
    assert files == sorted(p.name for p in again.iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    for name in files:
        assert (tiny_industrial / name).read_bytes() == (again / name).read_bytes(), name

    model, tokenizer = load_model_and_tokenizer(tiny_industrial)
    assert model.config.model_type == "qwen2"
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == model.config.eos_token_id
    assert add_sid_tokens(tokenizer, model, Catalogue.load(industrial_files)) == 0
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)


def test_tiny_model_weights_depend_on_the_seed(tiny_industrial, tmp_path):
    from safetensors.torch import load_file

    other = build_tiny_model(INDUSTRIAL, tmp_path / "seed1", seed=1)
    first, second = load_file(tiny_industrial / "model.safetensors"), load_file(other / "model.safetensors")
    assert first.keys() == second.keys()
    assert not torch.equal(first["model.embed_tokens.weight"], second["model.embed_tokens.weight"])
    assert (tiny_industrial / "tokenizer.json").read_bytes() == (other / "tokenizer.json").read_bytes()


def test_logged_checkpoint_resolves_by_run_id_run_uri_model_uri_and_registry(tiny_industrial, mlflow_uri, tmp_path,
                                                                             monkeypatch):
    import mlflow

    monkeypatch.setenv("MINIREC_MODEL_CACHE", str(tmp_path / "cache"))
    model, tokenizer = load_model_and_tokenizer(tiny_industrial)
    mlflow.set_experiment("models-test")
    with mlflow.start_run() as run:
        model_uri = log_hf_model(model, tokenizer)
    assert mlflow.get_run(run.info.run_id).data.tags["minirec.model_uri"] == model_uri
    mlflow.register_model(model_uri, "tiny-industrial")

    reference = (tiny_industrial / "model.safetensors").read_bytes()
    for ref in (run.info.run_id, f"runs:/{run.info.run_id}/model", model_uri, "models:/tiny-industrial/1"):
        folder = resolve_model(ref)
        assert (folder / "model.safetensors").read_bytes() == reference, ref
        assert (folder / "tokenizer.json").exists(), ref
    reloaded, reloaded_tokenizer = load_model_and_tokenizer(model_uri)
    assert len(reloaded_tokenizer) == len(tokenizer)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))


def test_unknown_references_fail_with_a_clear_message(tmp_path, mlflow_uri):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(tmp_path)
    with pytest.raises(NotFoundError, match="no MLflow run"):
        resolve_model("0" * 32)
    with pytest.raises(ModelNotFoundError, match=r"model path \S*missing/model does not exist"):
        resolve_model(str(tmp_path / "missing" / "model"))
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache"):
        resolve_model("nobody/no-such-model-xyz")
