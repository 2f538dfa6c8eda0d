"""Per-SID-level tables (docs/upstream.md 6.6, a harness extension): worked examples and real-size invariants."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from minirec.data import Catalogue, read_split
from minirec.levels import dropoff, level_metric_names, level_tables
from minirec.metrics import BeamMatrix
from minirec.score import score_predictions


def frame_of(targets: list[str], predicts: list[list[str]], users: list[str] | None = None) -> pd.DataFrame:
    return pd.DataFrame({
        "row": np.arange(len(targets), dtype=np.int64),
        "user_id": users if users is not None else [None] * len(targets),
        "target": targets,
        "predict": predicts,
        "scores": [None] * len(targets),
    })


def test_worked_example():
    # Row 0, target a1 b2 c3. Level matches per beam, worked by hand:
    #   0 <a_1><b_9><c_3>      L1 yes, L2 no,  L3 yes   prefix: L1
    #   1 <a_7><b_2><c_8>      L1 no,  L2 yes, L3 no    prefix: none
    #   2 "<a_1><b_2><c_5>"\n  L1 yes, L2 yes, L3 no    prefix: L1..2 (cleaned like calc.py)
    #   3 <a_1><b_2><c_3>      all                      prefix: L1..3 (the hit, rank 3)
    # Row 1, target a4 b4 c4:
    #   0 garbage              nothing (not a SID)
    #   1 <a_4>                L1 yes                   prefix: L1
    #   2 <b_4><a_4><c_4>      L3 yes only (positions, not membership)
    #   3 <a_4><b_4><c_4>xyz   nothing (not a SID)
    targets = ["<a_1><b_2><c_3>", "<a_4><b_4><c_4>\n"]
    predicts = [
        ["<a_1><b_9><c_3>", "<a_7><b_2><c_8>", '"<a_1><b_2><c_5>"\n', "<a_1><b_2><c_3>"],
        ["garbage", "<a_4>", "<b_4><a_4><c_4>", "<a_4><b_4><c_4>xyz"],
    ]
    tables = level_tables(BeamMatrix.from_frame(frame_of(targets, predicts)), ks=(1, 3))
    # Row 0 top-1: independent [1,0,1], prefix [1,0,0]; top-3: independent [1,1,1], prefix [1,1,0].
    # Row 1 top-1: nothing;                            top-3: independent [1,0,1], prefix [1,0,0].
    assert tables["independent"] == {"1": [0.5, 0.0, 0.5], "3": [1.0, 0.5, 1.0]}
    assert tables["cumulative"] == {"1": [0.5, 0.0, 0.0], "3": [1.0, 0.5, 0.0]}
    # Retention: [c1, c2/c1, c3/c2]; at K=1, c3/c2 is 0/0, defined as 0.
    assert tables["dropoff"] == {"1": [0.5, 0.0, 0.0], "3": [1.0, 0.5, 0.0]}


def test_dropoff_defines_zero_over_zero_as_zero():
    assert dropoff([0.4, 0.1, 0.05]) == pytest.approx([0.4, 0.25, 0.5])
    assert dropoff([0.0, 0.0, 0.0]) == [0.0, 0.0, 0.0]


def test_metric_names():
    names = level_metric_names({"cumulative": {"10": [0.3, 0.2, 0.1]}, "dropoff": {"1": [0.5, 0.4, 0.3]}})
    assert names == {
        "level_cumulative_L1_at_10": 0.3, "level_cumulative_L2_at_10": 0.2, "level_cumulative_L3_at_10": 0.1,
        "level_dropoff_L1_at_1": 0.5, "level_dropoff_L2_at_1": 0.4, "level_dropoff_L3_at_1": 0.3,
    }


def test_real_size_invariants_and_a_plain_loop_check(industrial_files):
    """4,533 test rows with 50 beams drawn around each target's level-1 and level-2 neighbours."""
    catalogue = Catalogue.load(industrial_files)
    test = read_split(industrial_files.test, parse_histories=False)
    rng = np.random.default_rng(11)
    sids = np.array(sorted(catalogue.valid_sids))
    by_prefix: dict[str, list[str]] = {}
    for sid in sids:
        by_prefix.setdefault(sid.split("><")[0], []).append(sid)
    predicts = []
    for target in test["item_sid"]:
        near = by_prefix[target.split("><")[0]]
        beams = [str(s) for s in np.where(rng.random(50) < 0.3, rng.choice(near, 50), rng.choice(sids, 50))]
        if rng.random() < 0.4:
            beams[rng.integers(50)] = target
        predicts.append(beams)
    frame = frame_of(test["item_sid"].tolist(), predicts, test["user_id"].tolist())
    scores = score_predictions(frame, catalogue, n_boot=10)
    levels = scores.levels

    assert set(levels["cumulative"]) == {"1", "3", "5", "10", "20", "50"}
    for k in scores.ks:
        cumulative, independent = levels["cumulative"][str(k)], levels["independent"][str(k)]
        assert cumulative[2] == scores.metrics[f"HR@{k}"]  # full-depth prefix match is the hit rate
        assert cumulative[0] == independent[0]
        assert all(c <= i for c, i in zip(cumulative, independent))
        assert cumulative == sorted(cumulative, reverse=True)
    for a, b in zip(scores.ks, scores.ks[1:]):
        assert all(x <= y for x, y in zip(levels["independent"][str(a)], levels["independent"][str(b)]))

    # Plain loop over rows for independent level 2 and cumulative levels 1-2 at K=10.
    level2_rows = prefix2_rows = 0
    for target, beams in zip(frame["target"], frame["predict"]):
        t = target.split("><")
        level2_rows += any(b.split("><")[1] == t[1] for b in beams[:10])
        prefix2_rows += any(b.split("><")[:2] == t[:2] for b in beams[:10])
    assert levels["independent"]["10"][1] == pytest.approx(level2_rows / len(frame), abs=1e-15)
    assert levels["cumulative"]["10"][1] == pytest.approx(prefix2_rows / len(frame), abs=1e-15)
