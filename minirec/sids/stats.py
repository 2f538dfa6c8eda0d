"""What a SID scheme costs, measured before any GPU time is spent (docs/upstream.md 1.2, 1.6, 10).

    from minirec.sids.stats import sid_statistics
    stats = sid_statistics(item_tokens, {"valid": valid_targets, "test": test_targets}, embeddings)

Figures: items and distinct SIDs, SID lengths, codes used per level, items per SID (max and histogram),
collision groups and the items in them (full SIDs, and the base code paths before any dedup token), the
share of valid/test rows whose target is a colliding item (a hit on such a SID is credited to every item that
carries it), and ``recon_mse_fitted``: the per-element MSE left when each level's code is replaced by the
mean residual of the items holding it, the least-squares residual codebook the codes imply. That last figure
needs only codes and embeddings, so the official SIDs and new ones are compared on the same vectors; a
method's own error (k-means residual, RQ-VAE decoder MSE) is reported beside it by the stage.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping, Sequence

import numpy as np

from minirec.sid import join_sid


def _collisions(paths: Sequence[str]) -> tuple[int, int]:
    sizes = [size for size in Counter(paths).values() if size > 1]
    return len(sizes), sum(sizes)


def level_counts(item_tokens: Mapping[int, Sequence[str]]) -> list[list[int]]:
    """Per level, how many items hold each used code, most used first."""
    depth = max(len(tokens) for tokens in item_tokens.values())
    return [
        sorted(Counter(tokens[level] for tokens in item_tokens.values() if len(tokens) > level).values(), reverse=True)
        for level in range(depth)
    ]


def fitted_recon_mse(item_tokens: Mapping[int, Sequence[str]], embeddings: np.ndarray, levels: int) -> float:
    """Residual MSE after subtracting, level by level, the mean residual of each code's items."""
    residual = embeddings.astype(np.float64, copy=True)
    for level in range(levels):
        codes = np.unique([item_tokens[i][level] for i in range(len(residual))], return_inverse=True)[1]
        sums = np.zeros((codes.max() + 1, residual.shape[1]))
        np.add.at(sums, codes, residual)
        residual -= (sums / np.bincount(codes)[:, None])[codes]
    return float(np.mean(residual**2))


def sid_statistics(
    item_tokens: Mapping[int, Sequence[str]],
    target_items: Mapping[str, Sequence[int]] | None = None,
    embeddings: np.ndarray | None = None,
) -> dict:
    """Statistics of one SID index (item id -> tokens); ``target_items`` maps a split name to its target ids."""
    sids = {item: join_sid(tokens) for item, tokens in item_tokens.items()}
    base_depth = min(len(tokens) for tokens in item_tokens.values())
    per_sid = Counter(sids.values())
    groups, colliding = _collisions(list(sids.values()))
    base_groups, base_items = _collisions([join_sid(tokens[:base_depth]) for tokens in item_tokens.values()])
    stats = {
        "items": len(sids),
        "distinct_sids": len(per_sid),
        "sid_length": dict(sorted(Counter(len(t) for t in item_tokens.values()).items())),
        "codes_used": [len(counts) for counts in level_counts(item_tokens)],
        "items_per_sid_max": max(per_sid.values()),
        "items_per_sid_hist": dict(sorted(Counter(per_sid.values()).items())),
        "collision_groups": groups,
        "collision_items": colliding,
        "base_depth": base_depth,
        "base_collision_groups": base_groups,
        "base_collision_items": base_items,
    }
    colliding_items = {item for item, sid in sids.items() if per_sid[sid] > 1}
    for split, targets in (target_items or {}).items():
        hits = sum(int(item) in colliding_items for item in targets)
        stats[f"{split}_colliding_targets"] = hits
        stats[f"{split}_colliding_target_share"] = hits / len(targets) if len(targets) else 0.0
    if embeddings is not None:
        stats["recon_mse_fitted"] = fitted_recon_mse(item_tokens, embeddings, base_depth)
    return stats


def flat_metrics(stats: Mapping, prefix: str) -> dict[str, float]:
    """Scalar figures as MLflow metrics, e.g. ``new_codes_used_l1``, ``official_collision_groups``."""
    metrics = {}
    for name, value in stats.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            metrics[f"{prefix}_{name}"] = float(value)
        elif name == "codes_used":
            metrics.update({f"{prefix}_codes_used_l{level + 1}": float(n) for level, n in enumerate(value)})
    return metrics
