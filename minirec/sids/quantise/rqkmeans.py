"""Residual k-means: each level clusters the residual left by the levels before it (docs/upstream.md 3.3).

    python -m minirec.sids --category Industrial_and_Scientific --method rqkmeans

Upstream trains ``faiss.ResidualQuantizer(d, M=3, nbits=8)`` with beam size 1, which is greedy residual
k-means; this is the same algorithm with scikit-learn ``KMeans`` (k-means++ init, seeded, one init per
level), so it needs no faiss. As upstream: 0-based codes, no collision handling.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

from minirec.sids.codes import tokens_from_codes
from minirec.sids.quantise import Quantised


def residual_kmeans(
    embeddings: np.ndarray, codebook_size: int = 256, levels: int = 3, seed: int = 0, max_iter: int = 100
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Return ``(codes (n, levels), codebooks, final residual)``."""
    residual = embeddings.astype(np.float32, copy=True)
    codes = np.empty((len(residual), levels), dtype=np.int64)
    codebooks = []
    for level in range(levels):
        kmeans = KMeans(n_clusters=codebook_size, n_init=1, max_iter=max_iter, random_state=seed + level)
        codes[:, level] = kmeans.fit_predict(residual)
        centres = kmeans.cluster_centers_.astype(np.float32)
        residual -= centres[codes[:, level]]
        codebooks.append(centres)
    return codes, codebooks, residual


def run(embeddings: np.ndarray, codebook_size: int = 256, levels: int = 3, seed: int = 0, max_iter: int = 100) -> Quantised:
    codes, codebooks, residual = residual_kmeans(embeddings, codebook_size, levels, seed, max_iter)
    return Quantised(
        codes=codes,
        tokens=tokens_from_codes(codes),
        recon_mse=float(np.mean(residual**2)),
        params={"codebook_size": codebook_size, "levels": levels, "kmeans_max_iter": max_iter, "kmeans_n_init": 1},
        artifacts={"codebooks": codebooks},
    )
