"""Settings of the sids stage: the encoder, the quantiser and its hyper-parameters.

    python -m minirec.sids --category Office_Products --method rqvae --print_config
"""

from __future__ import annotations

from dataclasses import dataclass

from minirec.data.layout import PROJECT_ROOT
from minirec.devices import check_device
from minirec.settings import StageSettings, setting
from minirec.upstream import UpstreamSettings
from minirec.sids.embed import DEFAULT_MODEL
from minirec.sids.quantise import METHODS

UPSTREAM_SEEDS = {"rqkmeans": 42, "rqkmeans_constrained": 42, "rqvae": 2024}


@dataclass
class SidsSettings(UpstreamSettings, StageSettings):
    """The upstream switch acting here (``upstream``, ``quirks``; minirec.upstream): text_cut_2000 (8.1 N)."""

    STAGE = "sids"

    method: str = setting("rqkmeans", "quantiser (docs/upstream.md 3.2-3.4)", choices=METHODS)
    embedding_model: str = setting(DEFAULT_MODEL, f"encoder: '{DEFAULT_MODEL}' (packaged, offline), a local "
                                   "folder, or a hub id such as Qwen/Qwen3-Embedding-4B (set HF_HUB_OFFLINE=0 to "
                                   "download)", upstream="Qwen3-Embedding-4B (e_dim 2560)")
    seed: int = setting(0, "seed of every random step", upstream="42 k-means, 2024 rqvae")
    epochs: int = setting(200, "rqvae full-batch epochs", upstream="rqvae.sh: 10000", minimum=1)
    eval_step: int = setting(50, "rqvae epochs between collision checks", minimum=1)
    lr: float = setting(1e-3, "rqvae AdamW learning rate", upstream="rqvae.sh: 1e-3", minimum=0.0)
    codebook_size: int = setting(256, "codes per level", upstream="256", minimum=2, maximum=65536)
    levels: int = setting(3, "quantisation levels", upstream="3", minimum=1, maximum=8)
    max_length: int = setting(0, "encoder token limit; 0 = the model's own, at most 2048 (upstream)", minimum=0)
    batch_size: int = setting(64, "texts per encoder batch", minimum=1)
    device: str = setting("auto", "auto (cuda if available), cpu or cuda[:N]")
    cache_dir: str = setting(str(PROJECT_ROOT / ".cache" / "embeddings"), "embedding cache folder")

    def check(self) -> None:
        super().check()
        check_device(self.device)
