"""Models and tokenizers: SID tokens, loading any causal LM by reference, and logging checkpoints to MLflow.

A model reference (``--model`` of every stage) is one of:

- a local folder in Hugging Face format (``save_pretrained``);
- an MLflow run id, ``runs:/<run id>/model``, ``models:/<logged model id>``, ``models:/<name>/<version>`` or
  ``models:/<name>@<alias>``: a checkpoint logged by :func:`log_hf_model`;
- a Hugging Face hub id such as ``Qwen/Qwen2.5-1.5B`` (read from the local hub cache when offline).

SID tokens are added as upstream's SFT does (docs/upstream.md 1.5): every token string of ``index.json``, sorted
lexicographically, added as normal tokens, then ``resize_token_embeddings(len(tokenizer))``. Later stages load
the extended tokenizer from the checkpoint, so :func:`add_sid_tokens` adds nothing there and returns 0.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from minirec.data.catalogue import Catalogue
from minirec.errors import NotFoundError
from minirec.refs import get_run, is_run_id
from minirec.sid import sorted_sid_tokens

MODEL_ARTIFACT = "model"
MODEL_URI_TAG = "minirec.model_uri"


class ModelNotFoundError(NotFoundError, FileNotFoundError):
    """A model reference names nothing that can be loaded."""


def add_sid_tokens(tokenizer, model, catalogue: Catalogue) -> int:
    """Add the catalogue's SID tokens not yet in ``tokenizer`` and grow ``model``'s embeddings; return the count.

    Idempotent: tokens already present are not re-added and the embeddings are only resized when something was
    added, so calling it on an SFT checkpoint changes nothing (upstream adds the tokens once, in SFT).
    ``model`` may be ``None`` to extend a tokenizer alone.
    """
    vocabulary = tokenizer.get_vocab()
    missing = [token for token in sorted_sid_tokens(catalogue.item_tokens.values()) if token not in vocabulary]
    if not missing:
        return 0
    added = tokenizer.add_tokens(missing)
    if model is not None:
        model.resize_token_embeddings(len(tokenizer))
    return added


def save_checkpoint(model, tokenizer, target: str | os.PathLike, mode: int | None = None) -> Path:
    """Save ``model`` and ``tokenizer`` into ``target`` in the Hugging Face layout, swapped in whole."""
    from minirec.atomic import atomic_directory

    with atomic_directory(target, mode=mode) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return Path(target)


def cache_dir() -> Path:
    """Where downloaded checkpoints are kept: ``$MINIREC_MODEL_CACHE`` or a folder under the temp dir."""
    return Path(os.environ.get("MINIREC_MODEL_CACHE") or Path(tempfile.gettempdir()) / "minirec-models")


def _download(artifact_uri: str) -> Path:
    """Download an MLflow artifact folder once into the cache (atomically: a half download is never reused)."""
    import mlflow

    target = cache_dir() / re.sub(r"[^A-Za-z0-9._-]+", "_", artifact_uri)
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(staging)))
        if not (local / "config.json").exists():
            raise ModelNotFoundError(f"{artifact_uri} holds no Hugging Face checkpoint (no config.json)")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(local, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _run_model_uri(run_id: str) -> str:
    """The model URI a run recorded with :func:`log_hf_model`, else its ``model`` artifact folder."""
    return get_run(run_id).data.tags.get(MODEL_URI_TAG) or f"runs:/{run_id}/{MODEL_ARTIFACT}"


def resolve_model(ref: str | os.PathLike) -> Path:
    """A local folder holding the checkpoint that ``ref`` names (see the module docstring for the forms)."""
    text = str(ref)
    if Path(text).is_dir():
        if not (Path(text) / "config.json").exists():
            raise ModelNotFoundError(f"{text} is a folder but holds no config.json (not a Hugging Face checkpoint)")
        return Path(text)
    if text.startswith(("runs:/", "models:/")):
        from minirec.tracking import configure_environment

        configure_environment()
        return _download(text)
    if is_run_id(text):
        return _download(_run_model_uri(text))
    if looks_like_path(text):
        raise ModelNotFoundError(f"model path {text} does not exist")
    return _hub_snapshot(text)


def looks_like_path(text: str) -> bool:
    """A reference meant as a file path (absolute, ``./``, ``~``, or deeper than a hub id's ``org/name``)."""
    return text.startswith(("/", "./", "../", "~")) or text.count("/") > 1 or text.endswith("/")


def source_run(ref: str | os.PathLike):
    """The MLflow run that produced the checkpoint ``ref`` names, or ``None`` for folders and hub ids."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    text = str(ref)
    if Path(text).is_dir():
        return None
    if is_run_id(text):
        return get_run(text)
    if text.startswith("runs:/"):
        return get_run(text[len("runs:/"):].split("/", 1)[0])
    if not text.startswith("models:/"):
        return None
    client = MlflowClient()
    name = text[len("models:/"):].rstrip("/")
    try:
        if name.startswith("m-") and "/" not in name and "@" not in name:
            return get_run(client.get_logged_model(name).source_run_id)
        version = (client.get_model_version_by_alias(*name.split("@", 1)) if "@" in name
                   else client.get_model_version(*name.split("/", 1)))
        run_id = version.run_id or (client.get_logged_model(version.model_id).source_run_id if version.model_id else None)
    except MlflowException as error:
        raise ModelNotFoundError(f"model {text}: {error.message}") from None
    return get_run(run_id) if run_id else None


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id))
    except Exception as error:  # offline misses and bad ids raise several unrelated hub error types
        raise ModelNotFoundError(
            f"{repo_id!r} is not a local folder, an MLflow run id or model URI, and not in the Hugging Face "
            f"cache ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); download it "
            "first or pass a local path"
        ) from error


def load_tokenizer(ref: str | os.PathLike):
    """The tokenizer of a checkpoint with upstream's settings: pad = EOS, left padding (docs/upstream.md 4.1)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(ref))
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_model_and_tokenizer(ref: str | os.PathLike, dtype=None, device=None):
    """Load ``(model, tokenizer)`` from any model reference; ``dtype`` defaults to the checkpoint's own."""
    from transformers import AutoModelForCausalLM

    path = resolve_model(ref)
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype if dtype is not None else "auto")
    if device is not None:
        model.to(device)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def log_hf_model(model, tokenizer, name: str = MODEL_ARTIFACT, tags: dict | None = None) -> str:
    """Log a checkpoint as an MLflow LoggedModel of the active run; return its ``models:/`` URI.

    The artifacts are the ``save_pretrained`` folder itself, so :func:`resolve_model` finds the checkpoint by
    run id, ``runs:/<run id>/<name>`` or the returned URI, and ``mlflow.register_model`` can register it.
    """
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_hf_model needs an active MLflow run")
    logged = mlflow.initialize_logged_model(
        name=name, source_run_id=run.info.run_id, tags={"format": "huggingface", **(tags or {})}
    )
    try:
        with tempfile.TemporaryDirectory(prefix="minirec-model-") as folder:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            mlflow.MlflowClient().log_model_artifacts(logged.model_id, folder)
    except BaseException:
        mlflow.finalize_logged_model(logged.model_id, "FAILED")
        raise
    mlflow.finalize_logged_model(logged.model_id, "READY")
    mlflow.set_tag(MODEL_URI_TAG, logged.model_uri)
    return logged.model_uri
