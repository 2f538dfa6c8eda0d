"""Models and tokenizers: SID tokens, loading any causal LM by reference, and logging checkpoints to MLflow.

A model reference (``--model`` of every stage) is one of:

- a local folder in Hugging Face format (``save_pretrained``);
- an MLflow run id, ``runs:/<run id>/model``, ``models:/<logged model id>``, ``models:/<name>/<version>`` or
  ``models:/<name>@<alias>``: a checkpoint logged by :func:`log_hf_model`;
- a Hugging Face hub id such as ``Qwen/Qwen2.5-1.5B`` (read from the local hub cache when offline).

Checkpoints named by an MLflow reference are downloaded once into a per-user cache (:func:`cache_dir`) under a
key of what the reference resolves to *now*: a ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` URI is
looked up in the registry first and keyed by the version and logged-model id it names and the tracking URI, so a
moved alias gets the new version's weights and two servers' ``models:/x/1`` never share a folder. Each cached
folder has a manifest of its files' sha256 (``<key>.sha256.json``, written after the download); a folder
whose files do not match it, or that has none, is downloaded again.

SID tokens are added as upstream's SFT does (docs/upstream.md 1.5): every token string of ``index.json``, sorted
lexicographically, added as normal tokens, then ``resize_token_embeddings(len(tokenizer))``. Later stages load
the extended tokenizer from the checkpoint, so :func:`add_sid_tokens` adds nothing there and returns 0.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from minirec.data.catalogue import Catalogue
from minirec.errors import NotFoundError
from minirec.refs import get_run, is_run_id, run_id_in
from minirec.sid import sorted_sid_tokens

MODEL_ARTIFACT = "model"
MODEL_URI_TAG = "minirec.model_uri"
MODEL_CACHE_ENV = "MINIREC_MODEL_CACHE"
_VERIFIED: dict[str, tuple] = {}  # cached folder -> (name, size, mtime) of its files when this process checked it


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
    """Where downloaded checkpoints are kept: ``$MINIREC_MODEL_CACHE``, else ``$XDG_CACHE_HOME/minirec/models``
    or ``~/.cache/minirec/models`` (the user's own, never a folder shared under /tmp)."""
    if os.environ.get(MODEL_CACHE_ENV):
        return Path(os.environ[MODEL_CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "minirec" / "models"


def resolve_reference(uri: str) -> tuple[str, str]:
    """``(download URI, identity)`` of a ``runs:/`` or ``models:/`` URI, asking the tracking server now.

    The identity names what the URI points at today plus the tracking and registry URIs: a registry alias
    or version becomes that version's number and logged-model id (or source), so the cache follows a moved
    alias and never confuses two servers. The download URI names the same version, not the alias, so a move
    between the lookup and the download cannot mix them. Unknown names are a :class:`ModelNotFoundError`."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    if uri.startswith("runs:/"):
        run_id, _, path = uri[len("runs:/"):].partition("/")
        get_run(run_id)  # a NotFoundError naming the id and the store
        return uri, f"{tracking}|runs:/{run_id}/{path.strip('/')}"
    client = MlflowClient()
    name = uri[len("models:/"):].strip("/")
    try:
        if name.startswith("m-") and "/" not in name and "@" not in name:
            logged = client.get_logged_model(name)
            return uri, f"{tracking}|logged-model:{logged.model_id}"
        version = _model_version(client, uri, name)
    except MlflowException as error:
        raise ModelNotFoundError(f"model {uri}: {error.message} (tracking store {tracking})") from None
    target = version.model_id or version.source
    identity = f"{tracking}|{registry}|models:/{version.name}/{version.version}|{target}|{version.run_id}"
    return f"models:/{version.name}/{version.version}", identity


def _model_version(client, uri: str, name: str):
    """The registry version that ``models:/<name>/<version>``, ``.../latest`` or ``models:/<name>@<alias>`` names."""
    if "@" in name:
        return client.get_model_version_by_alias(*name.split("@", 1))
    if "/" in name:
        model, number = name.rsplit("/", 1)
        if number == "latest":
            found = client.search_model_versions(f"name = '{model}'")
            if not found:
                raise ModelNotFoundError(f"model {uri}: the registered model {model!r} has no versions")
            number = str(max(int(v.version) for v in found))
        if number.isdigit():
            return client.get_model_version(model, number)
    raise ModelNotFoundError(f"model {uri}: expected models:/<name>/<version>, models:/<name>@<alias> or "
                             "models:/<logged model id>")


def _cache_key(identity: str, uri: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", uri.split(":/", 1)[-1]).strip("_")[:60]
    return f"{readable}-{hashlib.sha256(identity.encode()).hexdigest()[:20]}"


def _manifest_path(folder: Path) -> Path:
    return folder.with_name(f"{folder.name}.sha256.json")


def _folder_digests(folder: Path) -> dict[str, str]:
    from minirec.resume import file_digests

    return file_digests(folder)


def _stamp(folder: Path, manifest: Path) -> tuple:
    files = sorted(p for p in folder.rglob("*") if p.is_file()) + [manifest]
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)


def _cached(folder: Path) -> bool:
    """Whether ``folder`` holds a whole download: every file as its manifest says (hashed once per process
    while no file's size or mtime changes)."""
    manifest = _manifest_path(folder)
    if not (folder / "config.json").is_file() or not manifest.is_file():
        return False
    stamp = _stamp(folder, manifest)
    if _VERIFIED.get(str(folder)) == stamp:
        return True
    try:
        expected = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if _folder_digests(folder) != expected:
        print(f"[models] cached checkpoint {folder} differs from its manifest; downloading it again", flush=True)
        return False
    _VERIFIED[str(folder)] = stamp
    return True


def _download(artifact_uri: str) -> Path:
    """The checkpoint ``artifact_uri`` names, downloaded once into the cache under what it resolves to now and
    checked against its digest manifest before reuse (a half download or a changed file is fetched again)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from minirec.atomic import atomic_directory, write_json

    source, identity = resolve_reference(artifact_uri)
    target = cache_dir() / _cache_key(identity, artifact_uri)
    if _cached(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _manifest_path(target).unlink(missing_ok=True)
    with atomic_directory(target, mode=0o700) as staging:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source,
                                                             dst_path=str(staging / ".download")))
        except MlflowException as error:
            raise ModelNotFoundError(f"model {artifact_uri}: {error.message}") from None
        if not (local / "config.json").exists():
            raise ModelNotFoundError(f"{artifact_uri} holds no Hugging Face checkpoint (no config.json)")
        for entry in local.iterdir():
            os.replace(entry, staging / entry.name)
        shutil.rmtree(staging / ".download", ignore_errors=True)
    write_json(_manifest_path(target), {"uri": artifact_uri, "resolved": source, "identity": identity,
                                        "files": _folder_digests(target)})
    _VERIFIED.pop(str(target), None)
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
    run_id = run_id_in(text)
    if run_id:
        return get_run(run_id)
    if not text.startswith("models:/"):
        return None
    client = MlflowClient()
    name = text[len("models:/"):].rstrip("/")
    try:
        if name.startswith("m-") and "/" not in name and "@" not in name:
            return get_run(client.get_logged_model(name).source_run_id)
        version = _model_version(client, text, name)
        run_id = version.run_id or (client.get_logged_model(version.model_id).source_run_id if version.model_id else None)
    except MlflowException as error:
        raise ModelNotFoundError(f"model {text}: {error.message}") from None
    return get_run(run_id) if run_id else None


HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    if not HUB_ID.match(repo_id) or ".." in repo_id:
        raise ModelNotFoundError(f"model {repo_id!r} does not exist: it is no local folder, MLflow run id, runs:/ or "
                                 "models:/ URI, and not shaped like a Hugging Face hub id (org/name)")
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
