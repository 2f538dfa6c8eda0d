"""A learned baseline's MLflow artifacts: training checkpoints (for ``resume_from``) and the trained model.

    python -m minirec.baselines --method sasrec --resume_from <run id>          # continue from a checkpoint
    reward = cf_reward_from_run("<sasrec run id>", catalogue)                    # the model, for GRPO

**Checkpoints** follow :mod:`minirec.resume`, the scheme of SFT and GRPO: the folder
``checkpoints/checkpoint-<epoch>`` is uploaded, then its manifest ``checkpoints/checkpoint-<epoch>.json`` (each
file's sha256, :func:`minirec.resume.file_digests`), and the manifest's sha256 is recorded as the param
``checkpoint.<epoch>.sha256`` (:func:`minirec.resume.manifest_param`); resuming is
:func:`minirec.resume.fetch_checkpoint`, which checks the digests and falls back to an earlier checkpoint when
one is torn. The one adaptation to :func:`~minirec.recsys.train_recommender`'s format (a single
``checkpoint.pt``: model, optimiser, RNG states, best state, history) is a ``trainer_state.json`` written beside
it (the epoch and the best valid NDCG@20 so far), because the shared check wants that file to parse; the step of a
checkpoint is its epoch.

**The model** is ``model/best.pt`` (``minirec.recsys.train``'s ``best.pt`` format: method, settings, item count,
best epoch, its valid metrics and the state dict; :func:`minirec.recsys.load_model` reads it) and
``model/config.yaml`` (the same without the weights, for people), with the sha256 of ``best.pt`` as the param
``model.sha256``; :func:`load_run_model` checks it before unpickling anything.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import yaml

from minirec.errors import NotFoundError

MODEL_DIR = "model"
MODEL_FILE = "best.pt"
MODEL_DIGEST_PARAM = "model.sha256"
STATE_FILE = "trainer_state.json"


def upload_checkpoint(train_dir: Path, epoch: int, record: dict, staging_root: Path) -> None:
    """Upload ``train_dir/checkpoint.pt`` (written at ``epoch``) as checkpoint ``epoch`` of the active run."""
    import mlflow

    from minirec.recsys.train import CHECKPOINT
    from minirec.resume import CHECKPOINT_DIR, file_digests, manifest_param

    folder = staging_root / f"checkpoint-{epoch}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        shutil.copy2(train_dir / CHECKPOINT, folder / CHECKPOINT)
        state = {"format": "minirec.recsys", "epoch": epoch, "global_step": epoch,
                 "best_valid_NDCG@20": record.get("best_valid_NDCG@20")}
        (folder / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")
        mlflow.log_artifacts(str(folder), f"{CHECKPOINT_DIR}/{folder.name}")
        manifest = json.dumps(file_digests(folder), indent=1, sort_keys=True)
        mlflow.log_text(manifest, f"{CHECKPOINT_DIR}/{folder.name}.json")
        mlflow.log_param(manifest_param(epoch), hashlib.sha256(manifest.encode()).hexdigest())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def fetch_resume_folder(run_id: str, into: Path) -> Path:
    """The newest whole checkpoint of ``run_id`` (a folder holding ``checkpoint.pt``), checked against its digests."""
    from minirec.resume import fetch_checkpoint

    return fetch_checkpoint(run_id, into)


def save_model(result, folder: Path) -> Path:
    """``best.pt`` and ``config.yaml`` of a :class:`~minirec.recsys.TrainResult` (its best state) in ``folder``."""
    import torch

    from minirec.atomic import atomic_path
    from minirec.recsys.train import FORMAT

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
    info = {"format": FORMAT, "method": result.method, "settings": result.settings.to_dict(),
            "num_items": int(result.model.num_items), "epoch": result.best_epoch, "metrics": result.best_metrics}
    with atomic_path(folder / MODEL_FILE) as tmp:
        torch.save({**info, "state_dict": state}, tmp)
    (folder / "config.yaml").write_text(yaml.safe_dump({**info, "parameters": sum(v.numel() for v in state.values())},
                                                       sort_keys=False), encoding="utf-8")
    return folder / MODEL_FILE


def log_model(result, folder: Path) -> str:
    """Save and log the model as ``model/`` of the active run; returns the sha256 of ``best.pt``."""
    import mlflow

    from minirec.data.layout import sha256_of
    from minirec.tracking import log_params

    path = save_model(result, folder)
    digest = sha256_of(path)
    mlflow.log_artifacts(str(folder), MODEL_DIR)
    log_params({MODEL_DIGEST_PARAM: digest})
    return digest


def load_run_model(ref: str, catalogue, into: Path | None = None):
    """The trained model of a baselines run (run id or ``runs:/<id>``), or of a local ``best.pt`` / folder.

    A run's ``model/best.pt`` is checked against its ``model.sha256`` param before it is loaded; it is
    downloaded into ``into`` (default: a temporary folder, removed once the model is in memory). Returns
    ``(model, info)`` with ``info`` = method, run id, epoch and the model's valid metrics.
    """
    import tempfile

    if into is None and not Path(str(ref)).exists():
        with tempfile.TemporaryDirectory(prefix="baseline-model-") as folder:
            return load_run_model(ref, catalogue, Path(folder))
    import mlflow
    import torch

    from minirec.data.layout import sha256_of
    from minirec.recsys.train import load_model
    from minirec.refs import get_run, run_id_in

    ref = str(ref)
    run_id = run_id_in(ref)
    if run_id is None:
        path = Path(ref)
        if not path.exists():
            raise NotFoundError(f"{ref!r} is neither a baselines run id nor a best.pt file or folder")
        path = path / MODEL_FILE if path.is_dir() else path
        digest = None
    else:
        run = get_run(run_id)
        digest = run.data.params.get(MODEL_DIGEST_PARAM)
        if digest is None:
            raise NotFoundError(f"run {run_id} logged no {MODEL_DIR}/ (param {MODEL_DIGEST_PARAM}); is it a learned "
                                f"baselines run? (its stage tag: {run.data.tags.get('stage')!r})")
        folder = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=MODEL_DIR, dst_path=str(into)))
        path = folder / MODEL_FILE
        if sha256_of(path) != digest:
            raise NotFoundError(f"run {run_id}: {MODEL_DIR}/{MODEL_FILE} does not match the digest the run recorded")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    if saved.get("num_items") != len(catalogue.item_sid):
        raise NotFoundError(f"{ref}: the model scores {saved.get('num_items')} items, this catalogue has "
                            f"{len(catalogue.item_sid)}: it was trained on another category or data directory")
    model = load_model(path, catalogue)
    return model, {"method": saved["method"], "run_id": run_id or "", "epoch": saved.get("epoch"),
                   "metrics": saved.get("metrics", {})}


def cf_reward_from_run(ref: str, catalogue, score: str = "logit", into: Path | None = None):
    """:class:`~minirec.recsys.CfReward` over the item-id model a baselines run trained (SASRec upstream)."""
    from minirec.recsys import CfReward
    from minirec.recsys.settings import ID_METHODS

    model, info = load_run_model(ref, catalogue, into)
    if info["method"] not in ID_METHODS:
        raise NotFoundError(f"{ref}: a {info['method']} model; the CF reward needs an item-id model "
                            f"({', '.join(ID_METHODS)})")
    return CfReward(model, catalogue, score=score)
