"""Quantisers on vectors of real item texts (TF-IDF + SVD of the bundled Industrial items: cheap, and true
duplicate items get identical vectors, as with any encoder)."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

from minirec.sid import join_sid
from minirec.sids.codes import append_dedup_token, tokens_from_codes
from minirec.sids.quantise import quantise
from minirec.sids.quantise.constrained import balanced_residual_kmeans, size_bounds
from minirec.sids.quantise.rqvae import centred, sinkhorn

N_ITEMS = 400


@pytest.fixture(scope="module")
def vectors():
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    from minirec.data import Catalogue, locate
    from minirec.sids.text import item_texts

    texts = item_texts(Catalogue.load(locate("Industrial_and_Scientific")).items)[:N_ITEMS]
    tfidf = TfidfVectorizer(min_df=2).fit_transform(texts)
    return TruncatedSVD(n_components=24, random_state=0).fit_transform(tfidf).astype(np.float32)


def test_dedup_token_ranks_colliding_items_in_row_order():
    codes = np.array([[0, 1, 2], [3, 3, 3], [0, 1, 2], [0, 1, 2], [3, 3, 4]])
    tokens = append_dedup_token(tokens_from_codes(codes, offset=1))
    assert tokens[0] == ["<a_1>", "<b_2>", "<c_3>", "<d_1>"]
    assert tokens[2][-1] == "<d_2>" and tokens[3][-1] == "<d_3>"
    assert tokens[1] == ["<a_4>", "<b_4>", "<c_4>"] and tokens[4] == ["<a_4>", "<b_4>", "<c_5>"]


@pytest.mark.parametrize("method", ["rqkmeans", "rqkmeans_constrained"])
def test_same_seed_same_codes_other_seed_other_codes(vectors, method):
    first = quantise(method, vectors, codebook_size=8, levels=3, seed=3)
    again = quantise(method, vectors, codebook_size=8, levels=3, seed=3)
    other = quantise(method, vectors, codebook_size=8, levels=3, seed=4)
    assert np.array_equal(first.codes, again.codes) and first.tokens == again.tokens
    assert not np.array_equal(first.codes, other.codes)


def test_constrained_cluster_sizes_stay_within_upstream_bounds(vectors):
    size_min, size_max = size_bounds(N_ITEMS, 16)
    assert (size_min, size_max) == (24, 26)  # n // K = 25, one either side
    codes, codebooks, residual = balanced_residual_kmeans(vectors, codebook_size=16, levels=3, seed=0, n_init=1)
    for level in range(3):
        sizes = np.bincount(codes[:, level], minlength=16)
        assert sizes.min() >= size_min and sizes.max() <= size_max, (level, sizes)
    reconstruction = sum(codebooks[level][codes[:, level]] for level in range(3))
    assert np.allclose(vectors - reconstruction, residual, atol=1e-4)


def test_constrained_sids_are_unique_one_based_and_dedup_only_where_needed(vectors):
    # 8**2 = 64 code paths for 400 items: collisions are certain
    result = quantise("rqkmeans_constrained", vectors, codebook_size=8, levels=2, seed=0, n_init=1)
    sids = [join_sid(tokens) for tokens in result.tokens]
    assert len(set(sids)) == N_ITEMS
    path_size = Counter(map(tuple, result.codes.tolist()))
    ranks = defaultdict(list)
    for row, tokens in enumerate(result.tokens):
        path = tuple(result.codes[row])
        assert tokens[:2] == [f"<a_{path[0] + 1}>", f"<b_{path[1] + 1}>"]
        assert len(tokens) == (3 if path_size[path] > 1 else 2)
        if path_size[path] > 1:
            ranks[path].append(int(tokens[2][3:-1]))
    assert all(r == list(range(1, len(r) + 1)) for r in ranks.values())


def test_rqkmeans_keeps_collisions_and_reports_its_residual(vectors):
    result = quantise("rqkmeans", vectors, codebook_size=4, levels=2, seed=0)
    assert len({join_sid(t) for t in result.tokens}) <= 16 < N_ITEMS  # no dedup, as upstream faiss RQ
    assert all(len(t) == 2 for t in result.tokens) and result.codes.min() == 0
    assert 0 < result.recon_mse < float(np.mean(vectors**2))


def test_sinkhorn_balances_where_argmin_collides():
    # both items are nearest to code 0; the cheaper balanced plan sends item 1 to code 1 (cost .1 vs 1)
    distances = torch.tensor([[0.0, 1.0], [0.0, 0.1]], dtype=torch.float64)
    assert distances.argmin(dim=1).tolist() == [0, 0]
    plan = sinkhorn(centred(distances), 0.003, 50)
    assert plan.argmax(dim=1).tolist() == [0, 1]
    assert torch.allclose(plan.sum(dim=0), torch.full((2,), 1.0, dtype=torch.float64))
    # identical rows cannot be told apart: upstream's known limit for duplicate items
    same = sinkhorn(centred(torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)), 0.003, 50)
    assert same.argmax(dim=1).tolist()[0] == same.argmax(dim=1).tolist()[1]


def test_rqvae_is_deterministic_and_sinkhorn_never_adds_collisions(vectors):
    subset = vectors[:120]
    first = quantise("rqvae", subset, codebook_size=16, levels=3, seed=0, epochs=6, eval_step=2)
    again = quantise("rqvae", subset, codebook_size=16, levels=3, seed=0, epochs=6, eval_step=2)
    assert np.array_equal(first.codes, again.codes)
    assert [h["epoch"] for h in first.history] == [2, 4, 6]
    assert first.metrics["rqvae_final_collision_rate"] <= first.metrics["rqvae_argmin_collision_rate"]
    assert first.metrics["rqvae_argmin_collision_rate"] == min(h["collision_rate"] for h in first.history)
    assert all(len(t) == 3 for t in first.tokens) and 0 <= first.codes.min() and first.codes.max() < 16
    assert np.isfinite(first.recon_mse) and first.recon_mse > 0
    duplicates = [rows for rows in _identical_rows(subset) if len(rows) > 1]
    assert duplicates  # items 7 and 8 have the same title and description
    for rows in duplicates:  # identical inputs keep identical SIDs whatever Sinkhorn does
        assert len({tuple(first.codes[r]) for r in rows}) == 1


def _identical_rows(matrix: np.ndarray) -> list[list[int]]:
    groups = defaultdict(list)
    for row, vector in enumerate(matrix):
        groups[vector.tobytes()].append(row)
    return list(groups.values())
