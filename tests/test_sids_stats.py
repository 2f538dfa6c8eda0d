"""SID statistics on a hand-made index whose figures are worked out by hand below."""

from __future__ import annotations

import numpy as np
import pytest

from minirec.sids.stats import flat_metrics, level_counts, sid_statistics
from minirec.sid import split_sid

HAND_INDEX = {
    0: "<a_1><b_1><c_1>",
    1: "<a_1><b_1><c_1>",  # shares item 0's SID
    2: "<a_1><b_2><c_1>",
    3: "<a_2><b_2><c_2>",
    4: "<a_2><b_2><c_2>",  # a group of three with 3 and 5
    5: "<a_2><b_2><c_2>",
    6: "<a_3><b_1><c_1><d_1>",  # a base-path collision resolved by a dedup token
    7: "<a_3><b_1><c_1><d_2>",
}
# One dimension so the fitted residual codebook can be followed on paper:
# level a means 2, 12, 2 -> residuals -2 0 2 -2 0 2 -1 1; level b means -0.5 (0,1,6,7) and 0.5 (2..5)
# -> -1.5 .5 1.5 -2.5 -.5 1.5 -.5 1.5; level c means 0.3 (0,1,2,6,7) and -0.5 (3,4,5)
# -> -1.8 .2 1.2 -2 0 2 -.8 1.2, whose squares sum to 14.8: MSE 14.8 / 8 = 1.85.
HAND_EMBEDDINGS = np.array([[0.0], [2.0], [4.0], [10.0], [12.0], [14.0], [1.0], [3.0]])


@pytest.fixture
def tokens():
    return {item: split_sid(sid) for item, sid in HAND_INDEX.items()}


def test_statistics_of_a_hand_made_index(tokens):
    stats = sid_statistics(tokens, {"valid": [0, 2, 6, 5], "test": [7]}, HAND_EMBEDDINGS)
    assert stats["items"] == 8
    assert stats["distinct_sids"] == 5
    assert stats["sid_length"] == {3: 6, 4: 2}
    assert stats["codes_used"] == [3, 2, 2, 2]
    assert stats["items_per_sid_max"] == 3
    assert stats["items_per_sid_hist"] == {1: 3, 2: 1, 3: 1}
    assert (stats["collision_groups"], stats["collision_items"]) == (2, 5)
    assert (stats["base_depth"], stats["base_collision_groups"], stats["base_collision_items"]) == (3, 3, 7)
    assert (stats["valid_colliding_targets"], stats["valid_colliding_target_share"]) == (2, 0.5)
    assert (stats["test_colliding_targets"], stats["test_colliding_target_share"]) == (0, 0.0)
    assert stats["recon_mse_fitted"] == pytest.approx(1.85)


def test_level_counts_and_flat_metrics(tokens):
    assert level_counts(tokens) == [[3, 3, 2], [4, 4], [5, 3], [1, 1]]
    metrics = flat_metrics(sid_statistics(tokens), "new")
    assert metrics["new_codes_used_l1"] == 3.0
    assert metrics["new_codes_used_l4"] == 2.0
    assert metrics["new_collision_items"] == 5.0
    assert all(isinstance(v, float) for v in metrics.values())


def test_official_industrial_figures_match_the_published_measurements(industrial_files):
    """docs/upstream.md 1.2 and 1.6: 48 level-1 codes, 15 groups / 31 items, largest group 3, 238 and 317 rows."""
    from minirec.data import Catalogue, read_split

    catalogue = Catalogue.load(industrial_files)
    targets = {s: read_split(industrial_files.split(s), parse_histories=False)["item_id"].astype(int) for s in ("valid", "test")}
    stats = sid_statistics(catalogue.item_tokens, targets)
    assert stats["codes_used"] == [48, 256, 256]
    assert (stats["distinct_sids"], stats["collision_groups"], stats["collision_items"]) == (3670, 15, 31)
    assert stats["items_per_sid_max"] == 3
    assert (stats["valid_colliding_targets"], stats["test_colliding_targets"]) == (238, 317)
