"""Embeddings: masked mean pooling of a real (tiny, locally built) BERT encoder, the packaged default model
offline, and the on-disk cache: reused when nothing changed, recomputed when model, recipe or data change."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import minirec.sids.embed as embed
from minirec.sids.embed import DEFAULT_MODEL, EmbeddingRecipe, cached_embeddings, embed_texts, resolve_model_dir

TEXTS = [
    "SUPCO SPP6 Relay/Capacitor Hard Start Kit with 500% Increase Starting Torque.",
    "Tape.",
    "Stanley TRA708T Sharpshooter 1/2-Inch Leg Length Staples, Steel (1000 Count). ['Heavy-duty staples'].",
    "unknown item",
    "Super Glue 15187 Super Glue, 12-Pack. .",
]


def build_encoder(folder, seed: int):
    """A 1-layer BERT with the packaged model's tokenizer, saved in Hugging Face format."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(DEFAULT_MODEL))
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return build_encoder(tmp_path_factory.mktemp("encoder"), seed=0)


def test_batched_masked_mean_equals_each_text_alone(encoder):
    from transformers import AutoModel, AutoTokenizer

    vectors, details = embed_texts(TEXTS, encoder, batch_size=2, device="cpu")
    assert vectors.shape == (5, 32) and vectors.dtype == np.float32
    assert details["max_length"] == 64  # the encoder's position limit, below upstream's 2,048
    tokenizer, model = AutoTokenizer.from_pretrained(encoder), AutoModel.from_pretrained(encoder).eval()
    with torch.no_grad():
        alone = np.stack([model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0].mean(0).numpy() for text in TEXTS])
    assert np.allclose(vectors, alone, atol=1e-5)


def test_cache_is_reused_and_keyed_by_model_recipe_and_data(encoder, tmp_path, monkeypatch):
    computed = []
    real_embed_texts = embed.embed_texts

    def counting_embed_texts(*args, **kwargs):
        computed.append(args[0])
        return real_embed_texts(*args, **kwargs)

    monkeypatch.setattr(embed, "embed_texts", counting_embed_texts)
    recipe = EmbeddingRecipe(model=str(encoder))
    first = cached_embeddings(TEXTS, recipe, "data-1", tmp_path)
    again = cached_embeddings(TEXTS, recipe, "data-1", tmp_path)
    assert (first.from_cache, again.from_cache, len(computed)) == (False, True, 1)
    assert again.key == first.key and np.array_equal(again.vectors, first.vectors)

    other_model = build_encoder(tmp_path / "other-encoder", seed=1)
    variants = [
        (EmbeddingRecipe(model=str(encoder), upstream_quirks=True), "data-1"),
        (EmbeddingRecipe(model=str(encoder), max_length=16), "data-1"),
        (EmbeddingRecipe(model=str(encoder), text_recipe="title-only"), "data-1"),
        (recipe, "data-2"),
        (EmbeddingRecipe(model=str(other_model)), "data-1"),
    ]
    keys = {first.key}
    for variant, digest in variants:
        result = cached_embeddings(TEXTS, variant, digest, tmp_path)
        assert not result.from_cache
        keys.add(result.key)
    assert len(keys) == 6 and len(computed) == 6
    assert len(list(tmp_path.glob("*.npy"))) == 6
    assert not np.allclose(cached_embeddings(TEXTS, EmbeddingRecipe(model=str(other_model)), "data-1", tmp_path).vectors, first.vectors)
    assert len(computed) == 6


def test_packaged_default_model_loads_offline():
    vectors, details = embed_texts(TEXTS[:2], resolve_model_dir(DEFAULT_MODEL), device="cpu")
    assert vectors.shape == (2, 384)
    assert details["max_length"] == 256  # its sentence-transformers max_seq_length


def test_unknown_model_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="no-such-org/no-such-encoder"):
        resolve_model_dir("no-such-org/no-such-encoder")
