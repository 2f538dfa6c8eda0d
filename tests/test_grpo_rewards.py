"""GRPO rewards, prompt mixture and settings checks (docs/upstream.md 5.3, 5.5), against hand-computed values."""

from __future__ import annotations

import math

import pytest

from minirec.data import Catalogue
from minirec.errors import SettingsError
from minirec.grpo.settings import GRPOSettings
from minirec.grpo.data import GrpoDataError, alignment_rows, build_prompt_set, first_description, sid_history_rows
from minirec.grpo.rewards import NdcgRuleReward, rank_penalties, reward_functions, rule_reward
from minirec.grpo.rollout import group_prompts, rollout_counts

# The 16 penalties and their normaliser as the reference spec lists them (section 5.5).
SPEC_PENALTIES_G16 = [-0.16377, -0.10333, -0.08189, -0.07053, -0.06336, -0.05834, -0.05459, -0.05166,
                      -0.04930, -0.04734, -0.04568, -0.04426, -0.04302, -0.04192, -0.04094, -0.04007]
# G = 4 by hand: gains 1, 1/log2(3) = 0.630930, 1/2, 1/log2(5) = 0.430677; their sum is 2.561607.
HAND_PENALTIES_G4 = [-1 / 2.561607, -0.630930 / 2.561607, -0.5 / 2.561607, -0.430677 / 2.561607]
A, B, C, D = "<a_1><b_1><c_1>", "<a_1><b_1><c_2>", "<a_2><b_7><c_3>", "<a_9><b_0><c_0>"


def test_rank_penalties_match_the_spec_table_and_sum_to_minus_one():
    penalties = rank_penalties(16)
    assert [round(p, 5) for p in penalties] == SPEC_PENALTIES_G16
    assert sum(penalties) == pytest.approx(-1.0, abs=1e-12)
    assert sum(1 / math.log2(i + 2) for i in range(16)) == pytest.approx(6.10600, abs=5e-6)
    assert rank_penalties(4) == pytest.approx(HAND_PENALTIES_G4, abs=1e-6)


def test_rule_reward_strips_newlines_quotes_and_spaces_like_upstream():
    completions = [f"{A}\n", f'"{A}"', f" {A} \n", B, f"{A}x"]
    assert rule_reward(completions, [f"{A}\n"] * 5) == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_ranking_reward_of_a_group_with_a_hit_at_rank_two():
    completions = [f"{B}\n", f"{C}\n", f"{A}\n", f"{D}\n"]
    targets = [f"{A}\n"] * 4
    rule, ndcg = reward_functions("ranking", 4)
    totals = [r + n for r, n in zip(rule(completions, targets), ndcg(completions, targets))]
    p = HAND_PENALTIES_G4
    assert totals == pytest.approx([p[0], p[1], 1.0, p[3]], abs=1e-6)


def test_groups_without_a_hit_get_zero_and_groups_are_judged_separately():
    ndcg = NdcgRuleReward(4)
    completions = [B, C, D, B] + [A, B, C, D]
    rewards = ndcg(completions, [A] * 8)
    assert rewards[:4] == [0.0] * 4
    assert rewards[4:] == pytest.approx([0.0, *HAND_PENALTIES_G4[1:]], abs=1e-6)
    assert [f.__name__ for f in reward_functions("ranking_only", 4)] == ["ndcg_rule_reward"]


def test_every_row_is_scored_against_its_own_target():
    # Upstream looks targets up by history text, so two rows with one history share the last target (8.1 C).
    completions = [A, B, A, B]
    rewards = rule_reward(completions, [A, A, B, B])
    assert rewards == [1.0, 0.0, 0.0, 1.0]
    ndcg = NdcgRuleReward(2)(completions, [A, A, B, B])
    normaliser = 1 + 1 / math.log2(3)
    assert ndcg == pytest.approx([0.0, -(1 / math.log2(3)) / normaliser, -1 / normaliser, 0.0])


def test_ndcg_rule_keeps_upstreams_narrower_strip():
    # rl.py strips "\n\" " for the rule but only "\n\"" for the rank penalty: a spaced hit is no hit there.
    assert rule_reward([f" {A}", B], [A, A]) == [1.0, 0.0]
    assert NdcgRuleReward(2)([f" {A}", B], [A, A]) == [0.0, 0.0]


def test_reward_input_errors_are_explicit():
    with pytest.raises(ValueError, match="groups of num_generations=4"):
        NdcgRuleReward(4)([A] * 6, [A] * 6)
    with pytest.raises(ValueError, match="3 completions but 2 targets"):
        rule_reward([A, A, A], [A, A])
    with pytest.raises(ValueError, match="unknown reward 'ndcg'"):
        reward_functions("ndcg", 16)


def test_rollout_counts_by_hand():
    completions = [A, B, A, "<a_1>"] + [C, D, C, C]
    counts = rollout_counts(completions, [A] * 4 + [B] * 4, 4, valid_sids={A, B, C})
    assert counts == {"groups": 2, "hit_groups": 1, "distinct": 3 + 2, "invalid": 2, "completions": 8}


def test_group_prompts_takes_one_prompt_per_group_and_rejects_mixed_groups():
    assert group_prompts([[1, 2]] * 3 + [[3]] * 3, 3) == [[1, 2], [3]]
    with pytest.raises(ValueError, match="group 1 mixes different prompts"):
        group_prompts([[1]] * 2 + [[2], [3]], 2)
    with pytest.raises(ValueError, match="5 prompts do not split"):
        group_prompts([[1]] * 5, 2)


# --- prompt mixture (docs/upstream.md 5.3) --------------------------------------------------------------------------------


def test_alignment_counts_match_upstreams_measured_sizes(industrial_files):
    catalogue = Catalogue.load(industrial_files)
    quirks = alignment_rows(catalogue, upstream_quirks=True)
    tasks = [row["task"] for row in quirks]
    # docs/upstream.md 5.3 (measured on upstream's code): 3,646 title2sid + 2,870 description2sid
    assert (tasks.count("title_to_sid"), tasks.count("description_to_sid")) == (3646, 2870)
    fixed = alignment_rows(catalogue)
    assert [row["task"] for row in fixed].count("description_to_sid") == 2869  # no empty-description prompt
    assert all(row["prompt"].endswith("### Response:\n") for row in fixed)
    leaked = [row for row in quirks if row["task"] == "title_to_sid"][0]
    assert leaked["prompt"].endswith("### Response:\n" + leaked["target"].strip("\n"))


def test_alignment_uses_the_last_item_of_a_shared_title(industrial_files):
    catalogue = Catalogue.load(industrial_files)
    by_title: dict[str, list[int]] = {}
    for item in catalogue.item_tokens:
        by_title.setdefault(catalogue.items[item]["title"], []).append(item)
    title, items = next((t, ids) for t, ids in by_title.items() if len({catalogue.item_sid[i] for i in ids}) > 1)
    question = f"### User Input: \nWhich item has the title: {title}?"
    row = next(r for r in alignment_rows(catalogue) if r["prompt"].startswith(question))
    assert row["target"] == catalogue.item_sid[max(items)] + "\n"


def test_first_description_of_a_list_string():
    assert first_description("['first part', 'second']") == "first part"
    assert first_description("plain text") == "plain text"
    assert first_description("") == ""


def test_prompt_set_mixture_and_seeded_subsets(industrial_files):
    full = build_prompt_set(industrial_files)
    assert full.task_rows == {"sid_history": 12243, "title_to_sid": 3646, "description_to_sid": 2869,
                              "title_history_to_sid": 10000}
    assert len(full.train) == sum(full.task_rows.values())
    assert len(full.eval) == 4532
    first = full.train[0]
    assert set(first) == {"prompt", "target", "task", "history_item_ids"}
    assert not first["prompt"].startswith("Below is an instruction")  # RL prompts have no preamble (8.2)
    small = build_prompt_set(industrial_files, max_train_prompts=50, max_eval_prompts=10)
    assert list(small.train["prompt"]) == list(full.train["prompt"])[:50]
    assert len(small.eval) == 10


def test_tasks_select_parts_of_the_mixture(industrial_files):
    only = build_prompt_set(industrial_files, tasks=("sid_history", "title_to_sid"))
    assert only.task_rows == {"sid_history": 12243, "title_to_sid": 3646, "description_to_sid": 0,
                              "title_history_to_sid": 0}
    assert set(only.train["task"]) == {"sid_history", "title_to_sid"}
    with pytest.raises(ValueError, match="unknown or no GRPO prompt tasks"):
        build_prompt_set(industrial_files, tasks=("sid_to_title",))
    with pytest.raises(SettingsError, match=r"tasks = \['sid_history', 'titles'\] is not allowed: expected some of"):
        GRPOSettings.resolve("tiny", {"tasks": "sid_history,titles"})


def test_sid_history_prompt_of_a_valid_row(industrial_files):
    from minirec.data import read_split

    frame = read_split(industrial_files.valid).head(1)
    row = sid_history_rows(frame, industrial_files.valid)[0]
    history = ", ".join(frame["history_item_sid_list"][0])
    assert row["prompt"] == (f"### User Input: \nThe user has interacted with items {history} in chronological order. "
                             "Can you predict the next possible item that the user may expect?\n\n### Response:\n")
    assert row["target"] == frame["item_sid"][0] + "\n"


def test_a_broken_history_cell_names_file_row_and_field(industrial_files, tmp_path):
    from minirec.data import read_split

    frame = read_split(industrial_files.valid).head(3)
    frame.loc[1, "history_item_sid"] = "not a list"
    broken = tmp_path / "valid.csv"
    frame.drop(columns=[c for c in frame.columns if c.endswith("_list")]).to_csv(broken, index=False)
    with pytest.raises(GrpoDataError, match=r"valid\.csv: row 1 \(line 3\), field history_item_sid"):
        sid_history_rows(read_split(broken), broken)


# --- settings ---------------------------------------------------------------------------------------------------


def test_presets_resolve_and_paper_is_64_prompts_per_step():
    paper = GRPOSettings.resolve("paper")
    assert (paper.per_device_batch_size, paper.gradient_accumulation_steps(), paper.num_gpus) == (64, 4, 4)
    assert paper.prompts_per_step == 64 and paper.completions_per_step == 1024
    tiny = GRPOSettings.resolve("tiny", {"learning_rate": "3e-4", "beam_search": "false"})
    assert (tiny.learning_rate, tiny.beam_search, tiny.preset) == (3e-4, False, "tiny")


@pytest.mark.parametrize("gpus, accumulation", [(1, 16), (2, 8), (4, 4), (8, 2)])
def test_paper_is_64_prompts_of_16_beams_per_step_on_any_number_of_gpus(gpus, accumulation, capsys):
    """rl.sh's 64 prompts x 16 beams per optimiser step; --print_config shows it without loading a model."""
    import yaml

    from minirec.grpo.recipe import GRPORecipe
    from minirec.stage import main

    assert main(GRPORecipe, ["--preset", "paper", "--num_gpus", str(gpus), "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["prompts_per_step"], printed["completions_per_step"]) == (64, 1024)
    assert printed["gradient_accumulation_steps"] == accumulation
    assert printed["per_device_batch_size"] * accumulation * gpus == 1024


def test_batches_that_do_not_divide_or_split_groups_are_rejected_with_the_numbers():
    with pytest.raises(SettingsError, match=r"prompts_per_step 64 x num_generations 16 = 1024 completions per "
                                            r"optimiser step is not a multiple of per_device_batch_size 64 x 3 "
                                            r"processes = 192"):
        GRPOSettings.resolve("paper", {"num_gpus": 3})
    with pytest.raises(SettingsError, match=r"roll out 24 completions per step .* not whole groups of "
                                            r"num_generations 16"):
        GRPOSettings.resolve("tiny", {"per_device_batch_size": 24, "prompts_per_step": 3, "num_gpus": 2})
    with pytest.raises(SettingsError, match=r"num_generations = 1 is out of range: expected an integer from 2"):
        GRPOSettings.resolve("tiny", {"num_generations": 1, "per_device_batch_size": 4})
    with pytest.raises(SettingsError, match="unknown grpo setting 'lr'"):
        GRPOSettings.resolve("tiny", {"lr": 1})
