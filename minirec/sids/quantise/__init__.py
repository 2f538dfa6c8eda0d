"""Quantisers: item embeddings -> SID tokens, one module per upstream route (docs/upstream.md 3.2-3.4).

    from minirec.sids.quantise import quantise
    result = quantise("rqkmeans", embeddings, seed=0)

``rqkmeans`` (3.3, residual k-means, no dedup), ``rqkmeans_constrained`` (3.4, balanced clusters, 1-based
codes, 4th dedup token) and ``rqvae`` (3.2, the route of the official SIDs, Sinkhorn re-assignment of
colliding items on the last level).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

METHODS = ("rqkmeans", "rqkmeans_constrained", "rqvae")


@dataclass
class Quantised:
    """What a quantiser hands back."""

    codes: np.ndarray  # (n_items, n_levels) raw 0-based codes before any offset or dedup token
    tokens: list[list[str]]  # the SID tokens written to index.json, row i = item i
    recon_mse: float  # the method's own reconstruction error (residual or decoder MSE), per element
    params: dict = field(default_factory=dict)  # settings actually used, logged as MLflow params
    metrics: dict = field(default_factory=dict)  # scalar outcomes of the method, logged as MLflow metrics
    history: list[dict] = field(default_factory=list)  # per-evaluation metrics with an ``epoch`` (rqvae)
    artifacts: dict = field(default_factory=dict)  # name -> object to save (codebooks, checkpoint)


def quantise(method: str, embeddings: np.ndarray, **options) -> Quantised:
    """Run one quantiser; ``options`` are the keyword arguments of that method's ``run``."""
    if method == "rqkmeans":
        from minirec.sids.quantise.rqkmeans import run
    elif method == "rqkmeans_constrained":
        from minirec.sids.quantise.constrained import run
    elif method == "rqvae":
        from minirec.sids.quantise.rqvae import run
    else:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    return run(embeddings, **options)
