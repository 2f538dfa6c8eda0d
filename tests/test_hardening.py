"""Issue 14, hardening: a hostile ``-P`` value, a moved registry alias, validation before standalone stages and
its gaps, a tracking server that is down or dies, a new sqlite store opened by three stages at once, file modes
of atomic writes, and the first ``train_loss`` window after a resume.

Items 8 and 11 are covered by tests/test_resume.py (a torn checkpoint falls back to the one before, an altered
one is refused), item 7's resume side there too (killed SFT and GRPO runs end KILLED, linked to the run that
resumes them; slow), its ``main`` side here; item 10 by tests/test_atomic.py and tests/test_compare.py (the
compare bundle is swapped in whole). The bad-argument table is tests/test_bad_input.py.
"""

from __future__ import annotations

import copy
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from conftest import INDUSTRIAL, OFFICE, mlflow_server, stage_exit
from mlflow import MlflowClient
from safetensors.torch import load_file
from test_data_validation import copy_category

from minirec.data import locate, read_split
from minirec.data.layout import PROJECT_ROOT
from minirec.data.validate import validate_category

VENV_BIN = Path(sys.executable).parent
MLFLOW_RUN_SECONDS = 300


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child stage: one thread, offline, no run of ours leaking in."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MINIREC_PARENT_RUN_ID", "MINIREC_STAGE_KEY"):
        env.pop(name, None)
    return env


def all_runs(uri: str) -> list:
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments) if experiments else []


# --- 1. MLproject: a -P value is one argument, never shell code --------------------------------------------------


def mlflow_run(tmp_path: Path, *params: str) -> subprocess.CompletedProcess:
    env = clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    command = [str(VENV_BIN / "mlflow"), "run", str(PROJECT_ROOT), "-e", "data", "--env-manager", "local"]
    for param in params:
        command += ["-P", param]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=MLFLOW_RUN_SECONDS)


@pytest.mark.slow  # a real `mlflow run` (about 15 s on an idle core, a minute on a loaded one)
def test_a_shell_payload_in_a_parameter_runs_nothing_and_fails_with_the_stages_error(tmp_path):
    marker = tmp_path / "INJECTED"
    payload = f"x; echo INJECTED > {marker}; #"
    done = mlflow_run(tmp_path, f"data_dir={payload}")
    assert not marker.exists(), "the payload ran as shell code"
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("data: error:")]
    assert errors == [f"data: error: data_dir {payload!r} is neither an existing folder nor a sids run id / "
                      "runs:/ URI"], done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    (run,) = all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")  # the run mlflow run opened
    assert run.info.status == "FAILED"
    # The doorway MLproject calls exits with the stage's own status (2: a user's mistake).
    doorway = subprocess.run([sys.executable, "-m", "entrypoints.data", "--category", "all", "--data_dir", payload],
                             cwd=PROJECT_ROOT, env=clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'b.db'}"),
                             capture_output=True, text=True, timeout=MLFLOW_RUN_SECONDS)
    assert doorway.returncode == 2 and not marker.exists(), doorway.stderr[-2000:]


@pytest.mark.slow  # a real `mlflow run`
def test_a_data_dir_with_a_space_reaches_the_stage_as_one_path(tmp_path):
    data_dir = copy_category(OFFICE, tmp_path / "my data", rows=40)
    done = mlflow_run(tmp_path, f"category={OFFICE}", f"data_dir={data_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = [run for run in all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}") if run.data.tags.get("stage") == "data"]
    assert run.info.status == "FINISHED" and run.data.tags["source"] == str(data_dir.resolve())
    assert run.data.tags["validation"] == "passed"


# --- 2. model cache: keyed by what a reference resolves to, verified before reuse ---------------------------------


def embedding(folder: Path) -> torch.Tensor:
    return load_file(folder / "model.safetensors")["model.embed_tokens.weight"]


def log_and_register(model, tokenizer, name: str) -> str:
    from minirec.models import log_hf_model

    with mlflow.start_run():
        uri = log_hf_model(model, tokenizer)
    return mlflow.register_model(uri, name).version


def use_store(uri: str, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)


def test_a_moved_alias_and_another_stores_version_resolve_to_their_own_weights(tiny_loaded, mlflow_uri, tmp_path,
                                                                                monkeypatch):
    from minirec.models import cache_dir, load_model_and_tokenizer, resolve_model, source_run

    monkeypatch.setenv("MINIREC_MODEL_CACHE", str(tmp_path / "cache"))
    first, tokenizer = tiny_loaded
    second = copy.deepcopy(first)
    with torch.no_grad():
        second.model.embed_tokens.weight.add_(0.5)
    mlflow.set_experiment("alias")
    v1, v2 = log_and_register(first, tokenizer, "ranker"), log_and_register(second, tokenizer, "ranker")
    client = MlflowClient()
    client.set_registered_model_alias("ranker", "champion", v1)
    before = resolve_model("models:/ranker@champion")
    assert torch.equal(embedding(before), first.model.embed_tokens.weight)
    client.set_registered_model_alias("ranker", "champion", v2)  # the alias moves: the next use must see v2
    after = resolve_model("models:/ranker@champion")
    assert after != before and torch.equal(embedding(after), second.model.embed_tokens.weight)
    loaded, _ = load_model_and_tokenizer("models:/ranker@champion")
    assert torch.equal(loaded.model.embed_tokens.weight, second.model.embed_tokens.weight)
    # The run behind a registry reference, as evaluate reads it for its stage tag and provenance, for every
    # spelling that resolve_model accepts (latest included).
    runs = {v: client.get_model_version("ranker", v).run_id for v in (v1, v2)}
    for ref, version in (("models:/ranker@champion", v2), ("models:/ranker/latest", v2), (f"models:/ranker/{v1}", v1)):
        assert source_run(ref).info.run_id == runs[version], ref

    # Another tracking store whose models:/ranker/1 is the second model: no collision with this one's.
    here = resolve_model("models:/ranker/1")
    use_store(f"sqlite:///{tmp_path / 'other.db'}", monkeypatch)
    mlflow.set_experiment("alias")
    assert str(log_and_register(second, tokenizer, "ranker")) == "1"
    there = resolve_model("models:/ranker/1")
    assert there != here and torch.equal(embedding(there), second.model.embed_tokens.weight)
    use_store(mlflow_uri, monkeypatch)
    assert torch.equal(embedding(resolve_model("models:/ranker/1")), first.model.embed_tokens.weight)

    # A cached file changed after the download: its manifest no longer matches, so it is fetched again.
    weights = here / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    assert resolve_model("models:/ranker/1") == here
    assert torch.equal(embedding(here), first.model.embed_tokens.weight)
    assert all(path.parent == cache_dir() for path in (before, after, here, there))


def test_the_default_model_cache_is_the_users_own(monkeypatch, tmp_path):
    import tempfile

    from minirec.models import cache_dir

    monkeypatch.delenv("MINIREC_MODEL_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "minirec" / "models"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "minirec" / "models"
    assert not str(cache_dir()).startswith(str(Path(tempfile.gettempdir()) / "minirec-models"))


# --- 4. standalone stages validate their data, once per digest ----------------------------------------------------


def test_data_is_validated_once_per_digest_and_a_change_is_caught(tmp_path, monkeypatch):
    import minirec.data.validate as validate
    from minirec.data.validate import InvalidDataError, require_valid

    data_dir = copy_category(OFFICE, tmp_path / "data", rows=60)
    files = locate(OFFICE, data_dir)
    cache = tmp_path / "validation"
    started = time.perf_counter()
    require_valid(files, cache)
    first = time.perf_counter() - started
    (entry,) = cache.iterdir()
    assert json.loads(entry.read_text())["category"] == OFFICE

    def no_validation(*args, **kwargs):
        raise AssertionError("validated again although the same bytes passed before")

    with monkeypatch.context() as patch:
        patch.setattr(validate, "validate_category", no_validation)
        started = time.perf_counter()
        require_valid(locate(OFFICE, data_dir), cache)
        cached = time.perf_counter() - started
    assert cached < min(first, 1.0)
    print(f"validation of a 60-row copy: {first:.2f} s first, {cached * 1000:.1f} ms cached")

    frame = read_split(files.valid, parse_histories=False)
    frame.at[2, "user_id"] = "U12"  # line 4
    frame.to_csv(files.valid, index=False)
    with pytest.raises(InvalidDataError) as error:
        require_valid(locate(OFFICE, data_dir), cache)
    message = str(error.value)
    assert "\n" not in message
    assert f"{files.valid}, line 4, column user_id: 'U12' breaks" in message


# --- 5. validation gaps ------------------------------------------------------------------------------------------


@pytest.fixture
def office_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIREC_VALIDATION_CACHE", str(tmp_path / "validation"))
    return copy_category(OFFICE, tmp_path / "data", rows=60)


def failures_of(files, expectation: str | None = None, rule: str | None = None) -> list:
    report = validate_category(files)
    return [f for f in report.failures if (expectation is None or f.expectation == expectation)
            and (rule is None or f.rule == rule)]


def test_a_header_only_split_fails_with_no_rows(office_copy, capsys, mlflow_uri):
    from minirec.data.recipe import DataRecipe

    files = locate(OFFICE, office_copy)
    header = files.test.read_text(encoding="utf-8").splitlines()[0]
    files.test.write_text(header + "\n", encoding="utf-8")
    (failure,) = failures_of(files)
    assert str(failure) == (f"{files.test}, column (rows): 0 breaks 'has data rows, not only a header' (no rows) "
                            "[expect_table_row_count_to_be_between]")
    assert stage_exit(DataRecipe, "--category", OFFICE, "--data_dir", office_copy) == 1
    assert str(failure) in capsys.readouterr().err


def test_a_repeated_test_row_fails_naming_both_lines(office_copy):
    files = locate(OFFICE, office_copy)
    test = read_split(files.test, parse_histories=False)
    pd.concat([test, test.iloc[[5]]]).to_csv(files.test, index=False)
    (failure,) = failures_of(files)
    assert failure.file == str(files.test) and failure.row == len(test) + 2 and failure.evidence == "same row as line 7"
    assert failure.rule == "occurs once in the split (same user_id, history_item_id and item_id)"


def test_mixed_sid_lengths_fail_unless_they_are_upstreams_dedup_token(office_copy):
    files = locate(OFFICE, office_copy)
    index = json.loads(files.index.read_text())
    by_sid: dict[str, list[str]] = {}
    for item, tokens in index.items():
        by_sid.setdefault("".join(tokens), []).append(item)
    group = next(items for items in by_sid.values() if len(items) == 2)
    for rank, item in enumerate(group, start=1):  # upstream's dedup: every member of a shared path gets <d_r>
        index[item] = index[item] + [f"<d_{rank}>"]
    lone = next(item for item in index if item not in group)
    index[lone] = index[lone] + ["<d_1>"]  # a 4th token on a path no other item has
    files.index.write_text(json.dumps(index))
    odd = failures_of(files, rule="has as many tokens as the catalogue's other SIDs")
    assert [(f.file, f.item) for f in odd] == [(str(files.index), lone)]
    assert odd[0].evidence.startswith("4 tokens; the other SIDs have 3, or 4 only as upstream's dedup token")
    # A 4-level catalogue with one SID cut short: the short one is named, not every unshared 4-token path.
    tokens = {item: sid[:3] + ["<d_0>"] for item, sid in json.loads(files.index.read_text()).items()}
    tokens[lone] = tokens[lone][:3]
    files.index.write_text(json.dumps(tokens))
    odd = failures_of(locate(OFFICE, office_copy), rule="has as many tokens as the catalogue's other SIDs")
    assert [(f.item, f.evidence) for f in odd] == [(lone, "3 tokens; most index.json SIDs have 4")]


def test_upstreams_dedup_token_alone_validates_and_is_shown(office_copy, tmp_path):
    from minirec.data import Catalogue
    from minirec.sids.writer import write_data_dir

    files = locate(OFFICE, office_copy)
    tokens = Catalogue.load(files).item_tokens
    by_sid: dict[str, list[int]] = {}
    for item, sid in tokens.items():
        by_sid.setdefault("".join(sid), []).append(item)
    group = next(items for items in by_sid.values() if len(items) == 2)
    for rank, item in enumerate(group, start=1):
        tokens[item] = tokens[item] + [f"<d_{rank}>"]
    written = write_data_dir(files, tokens, tmp_path / "dedup")
    report = validate_category(written)
    assert report.ok, report.message()
    assert report.summary["sid_lengths"] == {"3": len(tokens) - 2, "4": 2}
    assert "SID lengths: " in report.message()


def test_a_level_prefix_reused_at_another_level_fails(office_copy):
    files = locate(OFFICE, office_copy)
    index = json.loads(files.index.read_text())
    index["7"] = ["<a_60>", "<a_60>", "<c_203>"]
    files.index.write_text(json.dumps(index))
    (failure,) = failures_of(files, rule="has one token per level, in level order (<a_*><b_*><c_*>...)")
    assert (failure.file, failure.item, failure.value) == (str(files.index), "7", "<a_60><a_60><c_203>")


def test_an_unreadable_file_is_named_by_its_path(office_copy):
    files = locate(OFFICE, office_copy)
    files.items.unlink()
    files.items.mkdir()  # exists, but cannot be read as a file (root reads anything chmod would forbid)
    (failure,) = failures_of(files)
    assert str(failure).startswith(f"{files.items}, column (file): cannot be parsed (cannot be read: ")
    assert "item None" not in str(failure)


# --- 6. a tracking server that is down, or dies while a stage runs ------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_server_that_does_not_answer_is_one_line_before_any_run(monkeypatch, capsys, tmp_path):
    from minirec.score.recipe import ScoreRecipe

    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    started = time.monotonic()
    code = stage_exit(ScoreRecipe, "--predictions", tmp_path / "x.json", "--category", OFFICE)
    seconds = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 2 and seconds < 10
    assert err.strip().splitlines() == [f"score: error: the tracking server {uri} does not answer (GET /health: "
                                        "[Errno 111] Connection refused); start it, or point MLFLOW_TRACKING_URI "
                                        "at one that runs"]
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        assert os.environ[name]  # bounded retries are the default of every stage


@pytest.mark.slow
def test_a_server_killed_before_evaluate_logs_leaves_the_outputs_and_one_message(tiny_industrial, tmp_path):
    """The server dies once decoding is done: one message, the outputs kept, and the command it gives logs them
    into the same run once a server is back on the same store."""
    from minirec.data.validate import require_valid

    require_valid(locate(INDUSTRIAL))  # the stage then finds the bundled data validated (cached by digest)
    out = tmp_path / "out"
    root = tmp_path / "server"
    root.mkdir()
    with mlflow_server(root) as server:
        env = clean_env(MLFLOW_TRACKING_URI=server.uri)
        process = subprocess.Popen(
            [sys.executable, "-m", "minirec.evaluate", "--model", str(tiny_industrial), "--category", INDUSTRIAL,
             "--limit", "4", "--num_beams", "5", "--batch_size", "4", "--recall_rows", "0", "--device", "cpu",
             "--strict", "false", "--output_dir", str(out)],
            cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 600
        while not (out / "predictions.json").exists():  # decoding is done; the log step comes next
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        (server_pid,) = server_processes(root)
        killed = time.monotonic()
        os.killpg(server_pid, 9)  # the server leads its own process group (conftest.mlflow_server)
        _, err = process.communicate(timeout=300)
        seconds = time.monotonic() - killed
    assert process.returncode == 3, err[-3000:]
    assert "Traceback" not in err
    (message,) = [line for line in err.splitlines() if line.startswith("evaluate: error:")]
    run_id = message.split(" during evaluate run ")[1].split(" ")[0]
    assert f"the tracking server {server.uri} stopped answering during evaluate run {run_id}" in message
    assert f"its local outputs are kept in {out}" in message
    assert f"python -m minirec.evaluate --resume_from {run_id}" in message
    assert f"mlflow artifacts log-artifacts --local-dir {out} --run-id {run_id}" in message
    assert (out / "beams.parquet").is_file() and (out / "predictions.json").is_file()
    assert seconds < 60, f"{seconds:.0f} s from the kill to the message"
    print(f"server killed -> message in {seconds:.1f} s; the stage's stderr ended:\n{err[-1500:]}")

    # The server comes back (same store, another port): the command the message gave logs the kept outputs.
    with mlflow_server(root) as server:
        resumed = subprocess.run([sys.executable, "-m", "minirec.evaluate", "--resume_from", run_id],
                                 cwd=PROJECT_ROOT, env=clean_env(MLFLOW_TRACKING_URI=server.uri), capture_output=True,
                                 text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        client = MlflowClient(server.uri)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and "HR_at_1" in run.data.metrics
        assert {a.path for a in client.list_artifacts(run_id, "beams")} == {"beams/beams.parquet",
                                                                            "beams/predictions.json"}


def server_processes(root: Path) -> list[int]:
    """Pids of the ``mlflow server`` process whose backend store lives under ``root``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            words = [word.decode(errors="replace") for word in command]
            if "server" in words and any(f"sqlite:///{root}/" in word for word in words):
                found.append(int(entry.name))
    return found


# --- 9. three stages on a new sqlite store at once ----------------------------------------------------------------


def start_all(commands: list[list[str]], env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    processes = [subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for command in commands]
    outputs = [process.communicate(timeout=300) for process in processes]
    return [subprocess.CompletedProcess(p.args, p.returncode, out, err) for p, (out, err) in zip(processes, outputs)]


def test_three_processes_opening_a_new_sqlite_store_at_once_all_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    opens = ("from minirec.tracking import configure_environment, ensure_experiment; configure_environment(); "
             "print(ensure_experiment('minirec-race'))")
    done = start_all([[sys.executable, "-c", opens]] * 3, clean_env(MLFLOW_TRACKING_URI=uri))
    assert [d.returncode for d in done] == [0, 0, 0], "\n---\n".join(d.stderr[-1500:] for d in done)
    assert len({d.stdout.strip() for d in done}) == 1  # one experiment, the same id for all three


@pytest.mark.slow  # three stage processes on two loaded cores take about a minute
def test_three_stages_on_a_new_sqlite_store_at_once_all_succeed(tmp_path):
    from minirec.data.validate import require_valid

    files = locate(OFFICE)
    require_valid(files)  # validated once here; the three stages find it cached
    sid = read_split(files.test, parse_histories=False)["item_sid"][0]
    predictions = tmp_path / "results.json"
    predictions.write_text(json.dumps([{"input": "x", "output": sid + "\n", "predict": [sid]}]))
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    done = start_all([[sys.executable, "-m", "minirec.score", "--predictions", str(predictions), "--category", OFFICE,
                       "--n_boot", "10", "--output_dir", str(tmp_path / f"o{i}")] for i in range(3)],
                     clean_env(MLFLOW_TRACKING_URI=uri))
    assert [d.returncode for d in done] == [0, 0, 0], "\n---\n".join(d.stderr[-2000:] for d in done)
    runs = all_runs(uri)
    assert len(runs) == 3 and {run.info.status for run in runs} == {"FINISHED"}


# --- 7. main's rerun of an interrupted stage (the resume side is tests/test_resume.py's) -------------------------


def test_mains_rerun_marks_the_interrupted_run_killed_and_links_the_new_one(mlflow_uri, tmp_path):
    from minirec.pipeline.steps import RERUN_TAG, Step, run_or_reuse
    from minirec.tracking import STAGE_KEY_TAG, ensure_experiment

    files = locate(OFFICE)
    sid = read_split(files.test, parse_histories=False)["item_sid"][0]
    predictions = tmp_path / "results.json"
    predictions.write_text(json.dumps([{"input": "x", "output": sid + "\n", "predict": [sid]}]))
    client = MlflowClient()
    experiment = ensure_experiment(f"minirec-{OFFICE}")
    parent = client.create_run(experiment).info.run_id
    key = f"test-{tmp_path.name}"
    dead = client.create_run(experiment, tags={STAGE_KEY_TAG: key}).info.run_id  # left RUNNING, as by a kill
    step = Step("score", "score", ("--predictions", str(predictions), "--category", OFFICE, "--n_boot", "10",
                                   "--output_dir", str(tmp_path / "out")))
    outcome = run_or_reuse(step, key, parent, force=False)
    assert client.get_run(dead).info.status == "KILLED"
    rerun = client.get_run(outcome.run_id)
    assert rerun.info.status == "FINISHED" and rerun.data.tags[RERUN_TAG] == dead


# --- 12. file modes of atomic writes; the first train_loss window after a resume ----------------------------------


def test_atomic_writes_get_the_mode_a_plain_open_would_give(tmp_path):
    from minirec.atomic import atomic_directory, write_text

    previous = os.umask(0o027)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        written = write_text(tmp_path / "atomic.txt", "x")
        with atomic_directory(tmp_path / "folder") as staging:
            (staging / "inside.txt").write_text("x")
        os.mkdir(tmp_path / "plain-folder")
    finally:
        os.umask(previous)
    mode = lambda path: stat.S_IMODE(path.stat().st_mode)  # noqa: E731
    assert mode(written) == mode(plain) == 0o640
    assert mode(tmp_path / "folder") == mode(tmp_path / "plain-folder") == 0o750


def test_the_first_train_loss_after_a_resume_logs_its_window(mlflow_uri):
    from types import SimpleNamespace

    from minirec.sft.callbacks import MlflowStepLogger

    logger = MlflowStepLogger()
    state = SimpleNamespace(global_step=15, num_input_tokens_seen=0)  # resumed from checkpoint-15
    mlflow.set_experiment("windows")
    with mlflow.start_run() as run:
        logger.on_train_begin(None, state, None)
        for step in (20, 30):  # logging_steps 10: the first window after the resume holds 5 steps
            state.global_step = step
            logger.on_log(None, state, None, logs={"loss": 1.0})
    history = MlflowClient().get_metric_history(run.info.run_id, "train_loss_window")
    assert [(m.step, m.value) for m in history] == [(20, 5.0), (30, 10.0)]
