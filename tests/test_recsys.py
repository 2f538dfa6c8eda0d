"""The learned baselines (minirec.recsys): shapes, upstream's SASRec, learning, rankings, resume, CF reward."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import yaml

from minirec.data import Catalogue, read_split
from minirec.recsys import (
    CONFIG_DIR,
    ID_METHODS,
    METHODS,
    CfReward,
    RecSettings,
    Sequences,
    SettingsError,
    build,
    evaluate,
    load_model,
    load_settings,
    rank_scores,
    rank_split,
    train_recommender,
)
from minirec.recsys.rank import SidTable
from minirec.recsys.sasrec import SASRec
from minirec.recsys.sequences import SequenceError
from minirec.recsys.train import ResumeError, bce_one_negative, sample_negatives, seed_everything

N_INDUSTRIAL = 3686


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # The models are small: on 2 shared cores, a second intra-op thread only waits for the other processes.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def splits(industrial_files):
    return read_split(industrial_files.train), read_split(industrial_files.valid)


def _settings(method: str, **overrides) -> RecSettings:
    return load_settings(method, overrides=overrides)


def _check_ranking(frame: pd.DataFrame, split: pd.DataFrame, catalogue: Catalogue, k: int = 50) -> None:
    assert list(frame.columns) == ["row", "user_id", "target", "predict", "scores"]
    assert frame["row"].tolist() == list(range(len(split)))
    assert frame["target"].tolist() == split["item_sid"].tolist()
    for predict, scores in zip(frame["predict"], frame["scores"]):
        assert len(predict) == k and len(set(predict)) == k
        assert set(predict) <= catalogue.valid_sids
        assert len(scores) == k and all(a >= b for a, b in zip(scores, scores[1:]))


# -- sequences -------------------------------------------------------------------------------------------------

def test_sequences_right_pad_with_the_item_count(splits):
    _, valid = splits
    rows = valid.head(50)
    seq = Sequences.from_frame(rows, N_INDUSTRIAL)
    assert seq.history.shape == (50, 10) and seq.history.dtype == torch.long and seq.pad_id == N_INDUSTRIAL
    for row, (history, target) in enumerate(zip(rows["history_item_id_list"], rows["item_id"])):
        ids = [int(i) for i in history]
        assert seq.lengths[row] == len(ids)
        assert seq.history[row].tolist() == ids + [N_INDUSTRIAL] * (10 - len(ids))
        assert seq.targets[row] == int(target)


def test_sequences_keep_the_last_items_and_reject_bad_ids():
    seq = Sequences.from_histories([list(range(12)), ["3"]], [5, "7"], num_items=20, max_len=10)
    assert seq.history[0].tolist() == list(range(2, 12)) and seq.lengths.tolist() == [10, 1]
    assert seq.history[1].tolist() == [3] + [20] * 9 and seq.targets.tolist() == [5, 7]
    with pytest.raises(SequenceError, match="row 1"):
        Sequences.from_histories([[1], [20]], [1, 2], num_items=20)
    with pytest.raises(SequenceError, match="empty"):
        Sequences.from_histories([[]], [1], num_items=20)


# -- SASRec against docs/upstream.md 7 ---------------------------------------------------------------------------

@pytest.mark.parametrize("num_items,hidden", [(N_INDUSTRIAL, 32), (50, 8)])
def test_sasrec_parameter_count_matches_the_spec(num_items, hidden):
    # Spec 7: item embeddings (N+1) x H, 10 learned positions, one attention block (Q, K, V with bias),
    # Conv1d feed-forward (two kernel-1 convolutions), LayerNorms ln_1..ln_3 + the feed-forward's, Linear H -> N.
    n, h = num_items, hidden
    expected = (n + 1) * h + 10 * h + 3 * (h * h + h) + 2 * (h * h + h) + 4 * 2 * h + (h * n + n)
    assert expected == 5 * h * h + 2 * n * h + 24 * h + n
    model = SASRec(num_items, hidden=hidden)
    assert sum(p.numel() for p in model.parameters()) == expected
    if (n, h) == (N_INDUSTRIAL, 32):
        assert expected == 245_478


def test_sasrec_structure_is_upstreams():
    model = build("sasrec", 100, _settings("sasrec"))
    assert model.item_embeddings.weight.shape == (101, 32) and model.positional_embeddings.weight.shape == (10, 32)
    assert model.s_fc.in_features == 32 and model.s_fc.out_features == 100
    assert model.mh_attn.num_heads == 1
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [c.kernel_size for c in convs] == [(1,), (1,)]
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in model.modules()) == 4
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.3}
    assert float(model.item_embeddings.weight.detach().std()) == pytest.approx(0.01, rel=0.1)


# The parameter names of upstream's SASRec (sasrec.py + SASRecModules_ori.py): its saved
# best_<...>_state.pth, which rl.py --cf_path loads, loads into ours as it is.
UPSTREAM_STATE_KEYS = [
    "item_embeddings.weight", "positional_embeddings.weight", "ln_1.weight", "ln_1.bias", "ln_2.weight",
    "ln_2.bias", "ln_3.weight", "ln_3.bias", "mh_attn.linear_q.weight", "mh_attn.linear_q.bias",
    "mh_attn.linear_k.weight", "mh_attn.linear_k.bias", "mh_attn.linear_v.weight", "mh_attn.linear_v.bias",
    "feed_forward.w_1.weight", "feed_forward.w_1.bias", "feed_forward.w_2.weight", "feed_forward.w_2.bias",
    "feed_forward.layer_norm.weight", "feed_forward.layer_norm.bias", "s_fc.weight", "s_fc.bias",
]


def test_sasrec_state_dict_has_upstreams_names():
    assert list(SASRec(7).state_dict()) == UPSTREAM_STATE_KEYS


def test_sasrec_reads_the_state_at_len_minus_one():
    torch.manual_seed(0)
    model = SASRec(40).eval()
    history = torch.tensor([[3, 5, 7, 40, 40, 40, 40, 40, 40, 40], [9, 40, 40, 40, 40, 40, 40, 40, 40, 40]])
    lengths = torch.tensor([3, 1])
    scores = model.scores(history, lengths)
    assert scores.shape == (2, 40)
    assert model.scores(history[1:], lengths[1:]).shape == (1, 40)  # a batch of one keeps its axis
    states = model.states(history)
    assert torch.allclose(scores, model.s_fc(states[torch.arange(2), lengths - 1]))
    # Right padding and causal attention: what follows position len-1 cannot change the scores...
    future = history.clone()
    future[0, 3:] = torch.tensor([1, 2, 3, 4, 5, 6, 7])
    assert torch.allclose(model.scores(future, lengths), scores, atol=1e-6)
    # ...while the item at len-1 does.
    changed = history.clone()
    changed[0, 2] = 8
    assert not torch.allclose(model.scores(changed, lengths)[0], scores[0])


def test_bce_with_one_negative_on_a_hand_made_batch():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -3.0]])
    targets, negatives = torch.tensor([0, 1]), torch.tensor([2, 0])

    def sig(x):
        return 1 / (1 + math.exp(-x))

    # pos logits 2.0 and 1.0 with label 1, neg logits 0.5 and 0.0 with label 0, averaged over the 4 terms.
    expected = -(math.log(sig(2.0)) + math.log(sig(1.0)) + math.log(1 - sig(0.5)) + math.log(1 - sig(0.0))) / 4
    assert float(bce_one_negative(logits, targets, negatives)) == pytest.approx(expected, rel=1e-6)


def test_negatives_are_uniform_over_the_other_items():
    generator = torch.Generator().manual_seed(0)
    targets = torch.full((60_000,), 2)
    negatives = sample_negatives(targets, 5, generator)
    assert not bool((negatives == targets).any())
    counts = torch.bincount(negatives, minlength=5).tolist()
    assert counts[2] == 0 and all(abs(c - 15_000) < 600 for i, c in enumerate(counts) if i != 2)


# -- training, ranking ---------------------------------------------------------------------------------------

LEARN = {  # a few epochs on real rows; a larger step than the presets so that a few epochs show learning
    "sasrec": dict(lr=5e-3, epochs=3),
    "gru4rec": dict(lr=5e-3, epochs=3),
    "caser": dict(lr=5e-3, epochs=3),
    "hstu": dict(lr=1e-2, epochs=4),  # untrained HSTU already scores repeats (tied, residual embeddings)
}


@pytest.mark.parametrize("method", ID_METHODS)
def test_each_id_model_learns_and_ranks_fifty_distinct_sids(method, splits, industrial_catalogue, tmp_path):
    train, valid = splits
    settings = _settings(method, train_rows=2000, valid_rows=1000, batch_size=128,
                         eval_every=LEARN[method]["epochs"], **LEARN[method])
    seed_everything(settings.seed)
    untrained = evaluate(build(method, N_INDUSTRIAL, settings),
                         Sequences.from_frame(valid.head(1000), N_INDUSTRIAL), settings)
    result = train_recommender(method, settings, None, industrial_catalogue, tmp_path, train=train, valid=valid,
                               progress=False)
    assert result.best_metrics["NDCG@20"] > untrained["NDCG@20"] + 0.005, (untrained, result.best_metrics)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    rows = valid.head(100)
    _check_ranking(rank_split(result.model, rows, industrial_catalogue), rows, industrial_catalogue)


def test_tiger_learns_and_ranks_by_constrained_beam_search(splits, industrial_catalogue, tmp_path):
    train, valid = splits
    settings = _settings("tiger", train_rows=600, valid_rows=64, epochs=3, eval_every=3, lr=3e-3, batch_size=64)
    result = train_recommender("tiger", settings, None, industrial_catalogue, tmp_path, train=train, valid=valid,
                               progress=False)
    # On 600 rows valid NDCG@20 stays near 0, so the check is the token loss (first epoch: ~ln(563) = 6.3).
    losses = [record["loss"] for record in result.history]
    assert losses[-1] < losses[0] - 0.5, losses
    assert 0.0 <= result.best_metrics["NDCG@20"] <= 1.0
    rows = valid.head(8)
    frame = rank_split(result.model, rows, industrial_catalogue)
    _check_ranking(frame, rows, industrial_catalogue)
    # The beam scores are the summed log-probabilities the model gives those SIDs.
    seq = Sequences.from_frame(rows.head(1), N_INDUSTRIAL)
    exact = result.model.scores(seq.history, seq.lengths)[0]
    item_of = {sid: items[0] for sid, items in industrial_catalogue.sid_items.items()}
    best = frame["predict"][0][0]
    assert float(exact[item_of[best]]) == pytest.approx(frame["scores"][0][0], abs=1e-4)


def test_tiger_tokenizer_and_inputs(industrial_catalogue):
    model = build("tiger", N_INDUSTRIAL, _settings("tiger"), industrial_catalogue)
    tokens = industrial_catalogue.item_tokens
    vocab = model.tokenizer.get_vocab()
    assert len(vocab) == 3 + len({t for sid in tokens.values() for t in sid})
    assert model.tokenizer(industrial_catalogue.item_sid[0], add_special_tokens=False).input_ids == \
        [vocab[t] for t in tokens[0]]
    seq = Sequences.from_histories([[0, 1], [2]], [3, 4], N_INDUSTRIAL)
    ids, mask = model.encoder_inputs(seq.history, seq.lengths)
    assert ids[0, :7].tolist() == [vocab[t] for t in tokens[0] + tokens[1]] + [model.eos_id]
    assert ids[1, :4].tolist() == [vocab[t] for t in tokens[2]] + [model.eos_id]
    assert mask.sum(1).tolist() == [7, 4] and int(ids[1, 4:].max()) == model.pad_id
    assert model.labels(seq.targets)[0].tolist() == [vocab[t] for t in tokens[3]] + [model.eos_id]
    assert model.constraint.max_new_tokens == 4 and model.constraint.num_sids == len(industrial_catalogue.valid_sids)


def test_rank_scores_keeps_each_sid_once_at_its_best_item():
    catalogue = Catalogue(item_tokens={0: ["<a_1>", "<b_1>"], 1: ["<a_1>", "<b_2>"], 2: ["<a_1>", "<b_2>"],
                                       3: ["<a_2>", "<b_1>"], 4: ["<a_2>", "<b_2>"]}, items={})
    scores = torch.tensor([[0.1, 0.9, 0.8, 0.5, 0.3], [0.5, 0.1, 0.7, 0.5, 0.9]])
    predict, values = rank_scores(scores, SidTable.of(catalogue), k=4)
    for row in range(2):  # the rule of minirec.baselines' floors: walk the ranked items, keep each SID once
        order = sorted(range(5), key=lambda i: (-float(scores[row, i]), i))
        expected = []
        for item in order:
            if catalogue.item_sid[item] not in expected:
                expected.append(catalogue.item_sid[item])
        assert predict[row] == expected[:4]
    assert predict[0] == ["<a_1><b_2>", "<a_2><b_1>", "<a_2><b_2>", "<a_1><b_1>"]
    assert values[0] == pytest.approx([0.9, 0.5, 0.3, 0.1])
    assert predict[1][:2] == ["<a_2><b_2>", "<a_1><b_2>"] and values[1][1] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="distinct SIDs"):
        rank_scores(scores, SidTable.of(catalogue), k=5)


# -- checkpoints, resume, early stopping, progress ---------------------------------------------------------------

def _small(method="sasrec", **overrides):
    return _settings(method, **{"train_rows": 400, "valid_rows": 200, "batch_size": 64, "epochs": 4, **overrides})


def test_resume_continues_exactly(splits, industrial_catalogue, tmp_path):
    train, valid = splits
    settings = _small()
    full = train_recommender("sasrec", settings, None, industrial_catalogue, tmp_path / "full", train=train,
                             valid=valid, progress=False)

    def stop_after_two(epoch, metrics):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_recommender("sasrec", settings, None, industrial_catalogue, tmp_path / "cut", train=train, valid=valid,
                          on_epoch=stop_after_two, progress=False)
    resumed = train_recommender("sasrec", settings, None, industrial_catalogue, tmp_path / "cut", train=train,
                                valid=valid, resume_from=tmp_path / "cut", progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]

    def untimed(history):
        return [{k: v for k, v in record.items() if not k.endswith("seconds")} for record in history]

    assert untimed(resumed.history) == untimed(full.history)
    last = [torch.load(p / "checkpoint.pt", weights_only=False)["model"] for p in (tmp_path / "full", tmp_path / "cut")]
    assert last[0].keys() == last[1].keys() and all(torch.equal(last[0][k], last[1][k]) for k in last[0])
    best = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(best[0][k], best[1][k]) for k in best[0])
    assert resumed.best_epoch == full.best_epoch
    with pytest.raises(ResumeError, match="lr"):
        train_recommender("sasrec", _small(lr=0.01), None, industrial_catalogue, tmp_path / "other", train=train,
                          valid=valid, resume_from=tmp_path / "cut", progress=False)


@pytest.mark.parametrize("log_seconds", [0.0, 3600.0])
def test_early_stopping_keeps_the_best_and_reports_each_epoch(splits, industrial_catalogue, tmp_path, capsys,
                                                              monkeypatch, log_seconds):
    import minirec.recsys.train as recsys_train

    monkeypatch.setattr(recsys_train, "LOG_SECONDS", log_seconds)
    train, valid = splits
    seen = []
    # lr 0: the weights never move, so no evaluation after the first improves; patience 1 stops after epoch 3.
    result = train_recommender("sasrec", _small(lr=0.0, weight_decay=0.0, patience=1, epochs=10), None,
                               industrial_catalogue, tmp_path, train=train, valid=valid,
                               on_epoch=lambda epoch, metrics: seen.append((epoch, metrics)))
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1
    assert [epoch for epoch, _ in seen] == [1, 2, 3]
    assert {"loss", "seconds", "valid_NDCG@20", "valid_HR@10", "best_valid_NDCG@20"} <= set(seen[0][1])
    # Every epoch is an MLflow metric; a log file gets the first epoch's line, then one every LOG_SECONDS.
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sasrec epoch")]
    assert len(lines) == (3 if log_seconds == 0 else 1) and "valid NDCG@20" in lines[0] and "ETA" in lines[0]
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "best.pt").exists()
    loaded = load_model(tmp_path, industrial_catalogue)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in result.model.state_dict().items())


# -- CF reward ----------------------------------------------------------------------------------------------------

class LastItemTable(torch.nn.Module):
    """A stand-in CF model: the logits of a history are row ``table[last item]``."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.num_items, self.max_len = table.shape[1], 10
        self.table = torch.nn.Parameter(table, requires_grad=False)

    def scores(self, history, lengths):
        return self.table[history.gather(1, (lengths - 1).view(-1, 1)).squeeze(1)]


@pytest.fixture
def tiny_catalogue():
    # Items 2 and 3 share a SID (a collision group, docs/upstream.md 1.6).
    tokens = {0: ["<a_1>", "<b_1>"], 1: ["<a_1>", "<b_2>"], 2: ["<a_2>", "<b_1>"], 3: ["<a_2>", "<b_1>"],
              4: ["<a_2>", "<b_2>"]}
    return Catalogue(item_tokens=tokens, items={}, info_lines=[("".join(t), "", str(i)) for i, t in tokens.items()])


def test_cf_reward_on_hand_made_groups(tiny_catalogue):
    table = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0],
                          [5.0, 6.0, -7.0, 8.0, 9.0],
                          [1.5, 2.5, 3.5, 4.5, 5.5],
                          [0.0, 0.0, 0.0, 0.0, 0.0],
                          [-1.0, -2.0, 9.0, -4.0, -5.0]])
    reward = CfReward(LastItemTable(table), tiny_catalogue)
    # Group 1: SID history ending in item 1 (ids as strings, as read_split gives them); group 2: a
    # title-history prompt's row, which carries the same item ids; group 3: title -> SID, no history.
    completions = ["<a_1><b_1>\n", "\"<a_2><b_1>\"", "<a_9><b_9>", "<a_2><b_2>",
                   "<a_2><b_1>", "<a_1><b_2>", "garbage", "<a_1><b_1>",
                   "<a_1><b_1>", "<a_2><b_2>"]
    histories = [["0", "1"]] * 4 + [[3, 4]] * 4 + [[]] * 2
    rewards = reward(completions, ["x"] * 10, history_item_ids=histories)
    assert rewards == [5.0, 8.0, 0.0, 9.0,      # the SID of items 2 and 3 scores max(-7, 8)
                       9.0, -2.0, 0.0, -1.0,    # last item 4: max(9, -4) for the shared SID
                       0.0, 0.0]                # no history: nothing to score
    assert reward(completions, ["x"] * 10, history_item_ids=histories) == rewards  # deterministic
    probabilities = CfReward(LastItemTable(table), tiny_catalogue, score="probability")(
        completions[:4], None, history_item_ids=histories[:4])
    softmax = table[1].softmax(0)
    assert probabilities == pytest.approx([float(softmax[0]), float(softmax[3]), 0.0, float(softmax[4])])
    with pytest.raises(ValueError, match="history_item_ids"):
        reward(completions, ["x"] * 10)


def test_cf_reward_is_the_trained_sasrec_logit(splits, industrial_catalogue, tmp_path):
    train, valid = splits
    train_recommender("sasrec", _small(epochs=1), None, industrial_catalogue, tmp_path, train=train, valid=valid,
                      progress=False)
    reward = CfReward.from_checkpoint(tmp_path, industrial_catalogue)
    rows = valid.head(4)
    completions = rows["item_sid"].tolist()
    rewards = reward(completions, completions, history_item_ids=rows["history_item_id_list"].tolist())
    model = load_model(tmp_path, industrial_catalogue)
    seq = Sequences.from_frame(rows, N_INDUSTRIAL)
    with torch.no_grad():
        logits = model.scores(seq.history, seq.lengths)
    for row, sid in enumerate(completions):
        items = industrial_catalogue.sid_items[sid]
        assert rewards[row] == pytest.approx(float(logits[row, items].max()), rel=1e-5)


# -- configs --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_each_config_names_its_command_and_loads_both_presets(method, industrial_catalogue):
    path = CONFIG_DIR / f"{method}.yaml"
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first == (f"# mlflow run . -e baselines -P method={method} -P category=Industrial_and_Scientific "
                     "--env-manager local")
    assert isinstance(yaml.safe_load(path.read_text())["paper"], dict)
    cpu, paper, tiny = (load_settings(method, preset=preset) for preset in ("cpu", "paper", "tiny"))
    assert cpu.method == paper.method == tiny.method == method and cpu.preset.endswith(":cpu")
    assert tiny.epochs <= 5 and tiny.model == cpu.model  # the smoke test trains the CPU model briefly
    model = build(method, N_INDUSTRIAL, cpu, industrial_catalogue)
    assert hasattr(model, "scores")


def test_settings_overrides_and_errors(tmp_path):
    (tmp_path / "sasrec.yaml").write_text("epochs: 3\n")
    settings = load_settings("hstu", overrides={"epochs": "3", "model.hidden": 32})
    assert settings.epochs == 3 and settings.model["hidden"] == 32 and settings.model["num_blocks"] == 2
    assert load_settings("hstu", preset="paper").model["num_blocks"] == 4
    # Command-line strings become numbers, model arguments included.
    typed = load_settings("sasrec", overrides={"model.hidden": "64", "model.dropout": "0.1", "lr": "1e-3"})
    assert typed.model["hidden"] == 64 and typed.model["dropout"] == 0.1 and typed.lr == 1e-3
    with pytest.raises(SettingsError, match="no tiny: section"):
        load_settings("sasrec", preset="tiny", config_dir=tmp_path)
    with pytest.raises(SettingsError, match="unknown baseline setting"):
        load_settings("sasrec", overrides={"epoch": 3})
    with pytest.raises(SettingsError, match="expects a int"):
        load_settings("sasrec", overrides={"epochs": 2.5})
    with pytest.raises(SettingsError, match="seq2seq"):
        RecSettings(method="sasrec", loss="seq2seq")
    with pytest.raises(SettingsError, match="unknown method"):
        load_settings("bert4rec")


# -- the CPU presets against the popularity floor (minutes) ----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("method", ["sasrec", "gru4rec", "caser"])
def test_cpu_preset_beats_popularity_on_industrial_test(method, industrial_files, industrial_catalogue, tmp_path):
    from minirec.baselines import rank
    from minirec.score import score_predictions

    train, test = read_split(industrial_files.train), read_split(industrial_files.test)
    popularity = score_predictions(rank("popularity", train, test, industrial_catalogue), industrial_catalogue,
                                   n_boot=10)["HR@10"]
    result = train_recommender(method, load_settings(method), industrial_files, industrial_catalogue, tmp_path)
    scores = score_predictions(rank_split(result.model, test, industrial_catalogue), industrial_catalogue, n_boot=10)
    assert scores["HR@10"] > popularity, (method, scores["HR@10"], popularity)
