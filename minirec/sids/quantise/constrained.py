"""Constrained (balanced) residual k-means with upstream's 4th dedup token (docs/upstream.md 3.4).

    python -m minirec.sids --category Industrial_and_Scientific --method rqkmeans_constrained

As ``rq/rqkmeans_constrained.py`` with its ``.sh`` settings: each level runs ``KMeansConstrained`` (pip
package ``k-means-constrained``, a min-cost-flow assignment) with cluster sizes in
``[max(1, n//K - 1), n//K + 1]``, ``max_iter=100``, ``tol=1e-4``, ``n_init=3`` and
``random_state = RandomState(seed + level).randint(0, 2**31 - 1)``, on the float32 residual. Codes are
written 1-based and colliding paths get ``<d_r>`` (see :mod:`minirec.sids.codes`). Upstream's seed is 42.
The ``n_init`` restarts run in this process (upstream ``n_jobs=16``): joblib hands worker processes large
inputs as read-only memory maps, which the package's compiled centre update rejects.
"""

from __future__ import annotations

import numpy as np

from minirec.sids.codes import append_dedup_token, tokens_from_codes
from minirec.sids.quantise import Quantised


def size_bounds(n_items: int, codebook_size: int) -> tuple[int, int]:
    """Upstream's cluster-size window: one either side of ``n // K``."""
    return max(1, n_items // codebook_size - 1), n_items // codebook_size + 1


def level_seed(seed: int, level: int) -> int:
    return int(np.random.RandomState(seed + level).randint(0, 2**31 - 1))


def balanced_residual_kmeans(
    embeddings: np.ndarray, codebook_size: int = 256, levels: int = 3, seed: int = 0, max_iter: int = 100, n_init: int = 3
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Return ``(codes (n, levels), codebooks, final residual)``."""
    from k_means_constrained import KMeansConstrained

    residual = embeddings.astype(np.float32, copy=True)
    size_min, size_max = size_bounds(len(residual), codebook_size)
    codes = np.empty((len(residual), levels), dtype=np.int64)
    codebooks = []
    for level in range(levels):
        kmeans = KMeansConstrained(
            n_clusters=codebook_size,
            size_min=size_min,
            size_max=size_max,
            max_iter=max_iter,
            tol=1e-4,
            n_init=n_init,
            random_state=level_seed(seed, level),
            n_jobs=1,
        )
        codes[:, level] = kmeans.fit_predict(residual)
        centres = kmeans.cluster_centers_.astype(np.float32)
        residual -= centres[codes[:, level]]
        codebooks.append(centres)
    return codes, codebooks, residual


def run(
    embeddings: np.ndarray, codebook_size: int = 256, levels: int = 3, seed: int = 0, max_iter: int = 100, n_init: int = 3
) -> Quantised:
    codes, codebooks, residual = balanced_residual_kmeans(embeddings, codebook_size, levels, seed, max_iter, n_init)
    size_min, size_max = size_bounds(len(embeddings), codebook_size)
    return Quantised(
        codes=codes,
        tokens=append_dedup_token(tokens_from_codes(codes, offset=1)),
        recon_mse=float(np.mean(residual**2)),
        params={
            "codebook_size": codebook_size,
            "levels": levels,
            "kmeans_max_iter": max_iter,
            "kmeans_n_init": n_init,
            "cluster_size_min": size_min,
            "cluster_size_max": size_max,
        },
        artifacts={"codebooks": codebooks},
    )
