"""calc.py parity (docs/upstream.md 6.4), collision-aware HR, invalid counts and the user bootstrap.

The oracle below is a straight transcription of calc.py's loop as the spec describes it: plain Python, one
sample and one beam at a time, sharing no code with minirec.metrics. Parity is asserted with ``==``.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest

from minirec.beams import BeamFormatError
from minirec.bootstrap import bootstrap_intervals, resampling_units
from minirec.data import Catalogue, read_split
from minirec.metrics import BeamMatrix, rank_metrics, strip_prediction, strip_target
from minirec.score import score_predictions


def calc_oracle(records: list[dict], info_first_columns: list[str]) -> tuple[dict, int]:
    """calc.py per docs/upstream.md 6.4: returns ({"HR@K": .., "NDCG@K": ..}, CC)."""
    valid = set()
    for name in info_first_columns:
        valid.add(name.strip())
    n_beam = len(records[0]["predict"])
    ks = [k for k in [1, 3, 5, 10, 20, 50] if k <= n_beam]
    ndcg_sum = [0.0] * len(ks)
    hr_sum = [0.0] * len(ks)
    cc = 0
    for record in records:
        predictions = [p.strip("\"\n").strip() for p in record["predict"]]
        target = record["output"].strip(" \n\"")
        min_id = 1000000
        for i in range(len(predictions)):
            if predictions[i] not in valid:
                cc += 1
            if predictions[i] == target:
                min_id = i
                break
        for j in range(len(ks)):
            if min_id < ks[j]:
                ndcg_sum[j] = ndcg_sum[j] + 1 / math.log(min_id + 2)
                hr_sum[j] = hr_sum[j] + 1
    result = {}
    for j, k in enumerate(ks):
        result[f"HR@{k}"] = hr_sum[j] / len(records)
        result[f"NDCG@{k}"] = ndcg_sum[j] / len(records) / (1.0 / math.log(2))
    return result, cc


def tiny_catalogue(sids_by_item: dict[int, str]) -> Catalogue:
    """A real Catalogue over a handful of items (several items may share a SID)."""
    tokens = {item: [f"<{t}" for t in sid[1:].split("<")] for item, sid in sids_by_item.items()}
    info = [(sid, f"title {item}", str(item)) for item, sid in sids_by_item.items()]
    return Catalogue(item_tokens=tokens, items={}, info_lines=info)


def frame_of(records: list[dict], users: list[str] | None = None) -> pd.DataFrame:
    return pd.DataFrame({
        "row": np.arange(len(records), dtype=np.int64),
        "user_id": users if users is not None else [None] * len(records),
        "target": [r["output"] for r in records],
        "predict": [r["predict"] for r in records],
        "scores": [None] * len(records),
    })


A, B, C, D = "<a_1><b_1><c_1>", "<a_1><b_2><c_2>", "<a_2><b_3><c_3>", "<a_3><b_4><c_4>"
SHARED = "<a_9><b_9><c_9>"  # carried by items 4, 5 and 6
CATALOGUE = tiny_catalogue({0: A, 1: B, 2: C, 3: D, 4: SHARED, 5: SHARED, 6: SHARED})
INFO = [line[0] for line in CATALOGUE.info_lines]
BAD = "<a_77><b_77><c_77>"  # well-formed but not in the info file


def score_both(records, ks=(1, 3, 5, 10, 20, 50)):
    ours = rank_metrics(BeamMatrix.from_frame(frame_of(records)), CATALOGUE.valid_sids, CATALOGUE.sid_items, ks)
    expected, cc = calc_oracle(records, INFO)
    assert {k: v for k, v in ours.values.items() if not k.startswith("HR_coll")} == expected
    assert ours.invalid == cc
    return ours


def test_stripping_rules_differ_for_predictions_and_targets():
    assert strip_prediction('"<a_1>"\n') == "<a_1>"
    assert strip_prediction(' \n"<a_1>"') == '"<a_1>'  # strip("\"\n") stops at the leading space
    assert strip_target(' \n"<a_1>"\n ') == "<a_1>"
    assert strip_target("\t<a_1>") == "\t<a_1>"  # tabs are not in the target's strip set
    records = [
        {"output": f'"{A}"\n', "predict": [f"{B}\n", f'"{A}"\n', C, D]},  # quoted target, quoted hit at 1
        {"output": f" {B} ", "predict": [f"  {B}\t", A, C, D]},  # spaces and a tab on the prediction: hit at 0
        {"output": C, "predict": [f' "{C}"', A, f"\n{C}", D]},  # ' "C"' keeps its quotes; "\nC" hits at 2
        {"output": f"\t{D}", "predict": [D, A, B, C]},  # the tab stays on the target: never a hit
    ]
    ours = score_both(records)
    assert ours.first_hit.tolist() == [1, 0, 2, 4]
    assert ours.values["HR@1"] == 1 / 4 and ours.values["HR@3"] == 3 / 4
    assert ours.values["NDCG@3"] == pytest.approx((1 / math.log2(3) + 1 + 1 / math.log2(4)) / 4, abs=1e-15)
    assert ours.invalid == 1  # ' "C"' is not a valid SID; the tab row scans four valid beams


def test_invalid_counts_only_beams_scanned_up_to_the_first_hit():
    records = [
        {"output": A, "predict": [BAD, "junk", A, BAD, "more junk"]},  # 2 invalid before the hit, 2 after
        {"output": B, "predict": [B, BAD, BAD, BAD, BAD]},  # hit at rank 0: nothing counted
        {"output": C, "predict": [BAD, A, B, D, "x"]},  # no hit: all 5 scanned, 2 invalid
        {"output": BAD, "predict": [A, BAD, B, C, D]},  # the hit beam itself is invalid and counts
    ]
    ours = score_both(records)
    assert ours.invalid == 2 + 0 + 2 + 1
    assert ours.invalid_all == 4 + 4 + 2 + 1
    assert ours.first_hit.tolist() == [2, 0, 5, 1]


def test_fewer_beams_than_fifty_drops_larger_cutoffs():
    records = [{"output": A, "predict": [B, C, D, A, SHARED, "x", "y"]}, {"output": D, "predict": [D] * 7}]
    ours = score_both(records)
    assert ours.ks == (1, 3, 5)
    assert set(ours.values) == {f"{m}@{k}" for m in ("HR", "NDCG", "HR_coll") for k in (1, 3, 5)}
    assert ours.values["HR@3"] == 0.5 and ours.values["HR@5"] == 1.0
    assert ours.values["NDCG@5"] == pytest.approx((1 + 1 / math.log2(5)) / 2, abs=1e-15)


def test_no_hit_and_hit_at_rank_zero():
    never = [{"output": A, "predict": [B, C, D]}] * 3
    assert set(score_both(never).values.values()) == {0.0}
    always = [{"output": A, "predict": [A, B, C]}] * 3
    ours = score_both(always)
    assert ours.values["HR@1"] == 1.0
    assert ours.values["NDCG@1"] == pytest.approx(1.0, abs=1e-15) and ours.values["NDCG@3"] == ours.values["NDCG@1"]


def test_a_hit_on_a_shared_sid_counts_one_over_group_size_in_hr_coll():
    records = [
        {"output": SHARED, "predict": [SHARED, A, B]},  # 3 items carry this SID: 1/3
        {"output": A, "predict": [B, A, C]},  # unique SID: 1 at K >= 3
        {"output": SHARED, "predict": [A, B, C]},  # miss
    ]
    ours = score_both(records)
    assert ours.values["HR@1"] == pytest.approx(1 / 3)
    assert ours.values["HR_coll@1"] == pytest.approx((1 / 3) / 3)
    assert ours.values["HR@3"] == pytest.approx(2 / 3)
    assert ours.values["HR_coll@3"] == pytest.approx((1 / 3 + 1) / 3)


def test_uneven_beam_counts_are_an_error_naming_the_row():
    records = [{"output": A, "predict": [A, B]}, {"output": A, "predict": [A, B]}, {"output": A, "predict": [A]}]
    with pytest.raises(BeamFormatError, match=r"row 2, field 'predict'.*1 predictions but row 0 has 2"):
        BeamMatrix.from_frame(frame_of(records), source="beams.json")


@pytest.fixture(scope="module")
def realistic(industrial_files):
    """The real Industrial test split with noisy 50-beam predictions: hits at random ranks, decorated strings,
    invalid SIDs, duplicates and free text, as a constrained or unconstrained decoder might produce."""
    catalogue = Catalogue.load(industrial_files)
    test = read_split(industrial_files.test, parse_histories=False)
    rng = np.random.default_rng(7)
    sids = np.array(sorted(catalogue.valid_sids))
    decorations = ["{}", "{}", "{}", '"{}"', "{}\n", ' {} ', '"{}"\n', '\n "{}"']
    records = []
    for target in test["item_sid"]:
        predict = [rng.choice(decorations).format(s) for s in rng.choice(sids, 50)]
        for _ in range(rng.integers(0, 3)):
            predict[rng.integers(50)] = rng.choice(["<a_300><b_1><c_1>", "I think <a_1>", "", "<a_1><b_2>"])
        if rng.random() < 0.6:
            predict[rng.integers(50)] = rng.choice(decorations).format(target)
        records.append({"output": target + "\n", "predict": predict})
    return catalogue, test, records


def test_parity_with_calc_on_a_realistic_file(realistic):
    catalogue, test, records = realistic
    expected, cc = calc_oracle(records, [line[0] for line in catalogue.info_lines])
    scores = score_predictions(frame_of(records, users=test["user_id"].tolist()), catalogue, n_boot=200)
    assert {k: scores.metrics[k] for k in expected} == expected
    assert scores.invalid == cc > 0
    assert scores.invalid_all > scores.invalid
    # Colliding targets exist in this split (docs/upstream.md 1.6), so collision-aware HR is strictly lower.
    assert scores.metrics["HR_coll@50"] < scores.metrics["HR@50"]


def test_scoring_a_full_test_split_with_1000_draws_is_fast(realistic):
    catalogue, test, records = realistic
    frame = frame_of(records, users=test["user_id"].tolist())
    started = time.perf_counter()
    scores = score_predictions(frame, catalogue, n_boot=1000)
    elapsed = time.perf_counter() - started
    print(f"scored {scores.n} x {scores.num_beams} with 1000 user-bootstrap draws in {elapsed:.3f} s")
    assert scores.bootstrap_unit == "user" and elapsed < 5.0


def test_bootstrap_interval_contains_the_estimate_and_is_reproducible(realistic):
    catalogue, test, records = realistic
    frame = frame_of(records, users=test["user_id"].tolist())
    first = score_predictions(frame, catalogue, seed=3)
    again = score_predictions(frame, catalogue, seed=3)
    other = score_predictions(frame, catalogue, seed=4)
    assert first.ci == again.ci and first.ci != other.ci
    for name in (f"{m}@{k}" for m in ("HR", "NDCG") for k in first.ks):
        low, high = first.ci[name]
        assert low <= first.metrics[name] <= high and low < high, name


def test_user_bootstrap_ignores_rows_repeated_within_a_user_but_row_bootstrap_does_not():
    rng = np.random.default_rng(0)
    hits = (rng.random(600) < 0.3).astype(float)
    users = np.arange(600)
    repeated_hits, repeated_users = np.repeat(hits, 4), np.repeat(users, 4)
    # Four copies of each row under the same user: per-user ratios and the draws are identical.
    once = bootstrap_intervals({"HR": hits}, users, draws=1000, seed=1).intervals["HR"]
    four = bootstrap_intervals({"HR": repeated_hits}, repeated_users, draws=1000, seed=1).intervals["HR"]
    assert four == pytest.approx(once, abs=1e-12)
    rows, unit = resampling_units(None, len(repeated_hits))
    assert unit == "row"
    by_row = bootstrap_intervals({"HR": repeated_hits}, rows, unit=unit, draws=1000, seed=1).intervals["HR"]
    assert by_row[1] - by_row[0] < 0.6 * (once[1] - once[0])


def test_row_bootstrap_width_matches_the_binomial_normal_approximation():
    rng = np.random.default_rng(5)
    hits = (rng.random(4000) < 0.12).astype(float)
    low, high = bootstrap_intervals({"HR": hits}, np.arange(4000), unit="row", draws=1000, seed=2).intervals["HR"]
    p = hits.mean()
    assert (high - low) == pytest.approx(2 * 1.959964 * math.sqrt(p * (1 - p) / 4000), rel=0.12)


def test_files_without_user_ids_bootstrap_rows():
    assert resampling_units([None, None], 2)[1] == "row"
    assert resampling_units(["A1", None], 2)[1] == "row"
    codes, unit = resampling_units(["A1", "A2", "A1"], 3)
    assert unit == "user" and codes.tolist() == [0, 1, 0]
