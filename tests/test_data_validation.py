"""The ``data`` stage: great-expectations validation of the bundled categories and of corrupted copies.

Corrupted copies are small (the first rows of each split, the whole catalogue) so each check runs in about a
second; every failure test asserts the exit status and that the message names file, line, column and value.
Line numbers are derived independently of the code: the CSV header is line 1, and the test also checks that
the named physical line of the file holds the corrupted value.
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import INDUSTRIAL, OFFICE, stage_exit

from minirec.data.recipe import DataRecipe
from minirec.data import locate, read_split
from minirec.data.validate import validate_category

ROWS_PER_SPLIT = 150

# data/README.md, "Facts worth knowing", and the partial train sizes stated there.
BUNDLED = {
    INDUSTRIAL: dict(items=3686, valid=(4532, 2011), test=(4533, 1987), sids=3670, collisions=(15, 31),
                     level1=48, train=12243),
    OFFICE: dict(items=3459, valid=(4866, 1795), test=(4866, 2024), sids=3444, collisions=(15, 30),
                 level1=88, train=7648),
}


def copy_category(category: str, dest: Path, rows: int = ROWS_PER_SPLIT) -> Path:
    """The bundled category with each split cut to its first ``rows`` rows; returns the new data dir."""
    source = locate(category)
    for path in source.root.rglob("*"):
        if not path.is_file():
            continue
        target = dest / category / path.relative_to(source.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".csv":
            read_split(path, parse_histories=False).head(rows).to_csv(target, index=False)
        else:
            shutil.copyfile(path, target)
    return dest


@pytest.fixture
def office_copy(tmp_path):
    return copy_category(OFFICE, tmp_path / "data")


@pytest.fixture(scope="module")
def tracking_db(tmp_path_factory):
    """One real sqlite store for the module (creating one costs seconds); runs are told apart by source."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    mlflow.MlflowClient(uri).search_experiments()
    return uri


@pytest.fixture
def store(tracking_db, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_db)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    mlflow.set_tracking_uri(tracking_db)
    yield tracking_db
    while mlflow.active_run():
        mlflow.end_run()


def runs_from(data_dir: Path) -> list:
    source = str(data_dir.resolve())
    return mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.source = '{source}'")


def edit_cell(path: Path, line: int, column: str, value: str) -> None:
    """Set one CSV cell; ``line`` counts the header as line 1."""
    frame = read_split(path, parse_histories=False)
    frame.at[line - 2, column] = value
    frame.to_csv(path, index=False)
    assert value in path.read_text(encoding="utf-8").splitlines()[line - 1]


def cell(path: Path, line: int, column: str) -> str:
    return read_split(path, parse_histories=False).at[line - 2, column]


def run_cli(data_dir: Path, capsys, category: str = OFFICE) -> tuple[int, str]:
    code = stage_exit(DataRecipe, "--category", category, "--data-dir", data_dir)
    return code, capsys.readouterr().err


def assert_reported(message: str, path: Path, line: int | None, column: str, value) -> None:
    """One message line names the file, the line, the column and the value."""
    where = f"line {line}" if line is not None else "item "
    matches = [
        text for text in message.splitlines()
        if str(path) in text and where in text and f"column {column}" in text and repr(value) in text
    ]
    assert matches, f"no line names {path.name}, {where}, column {column}, {value!r} in:\n{message}"


# Clean data -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("category", [INDUSTRIAL, OFFICE])
def test_bundled_category_validates_clean_with_documented_figures(category):
    report = validate_category(locate(category))
    assert report.ok, report.message()
    expected, summary = BUNDLED[category], report.summary
    assert summary["items"] == expected["items"]
    assert summary["distinct_sids"] == expected["sids"]
    assert (summary["collision_groups"], summary["collision_items"]) == expected["collisions"]
    assert summary["codes_per_level"][0] == expected["level1"]
    for split in ("valid", "test"):
        assert (summary["splits"][split]["rows"], summary["splits"][split]["users"]) == expected[split]
    assert summary["splits"]["train"]["rows"] == expected["train"]
    assert summary["train_is_partial"] is True
    assert summary["seconds"] < 60


def test_clean_run_logs_datasets_results_and_tags(tmp_path, store, capsys):
    data_dir = copy_category(INDUSTRIAL, tmp_path / "data")
    copy_category(OFFICE, data_dir)
    assert stage_exit(DataRecipe, "--category", "all", "--data_dir", data_dir) == 0
    printed = capsys.readouterr().out
    assert f"{INDUSTRIAL}: valid" in printed and f"{OFFICE}: valid" in printed

    runs = runs_from(data_dir)
    assert sorted(run.data.tags["category"] for run in runs) == sorted([INDUSTRIAL, OFFICE])
    run = next(run for run in runs if run.data.tags["category"] == OFFICE)
    assert run.info.status == "FINISHED"
    assert mlflow.get_experiment(run.info.experiment_id).name == f"minirec-{OFFICE}"
    tags = run.data.tags
    assert (tags["stage"], tags["entry_point"], tags["source"]) == ("data", "data", str(data_dir.resolve()))
    assert run.data.metrics["rows_valid"] == ROWS_PER_SPLIT
    assert run.data.metrics["items"] == BUNDLED[OFFICE]["items"]
    assert run.data.params["data.train.rows"] == str(ROWS_PER_SPLIT)

    files = locate(OFFICE, data_dir)
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert set(inputs) == {f"{OFFICE}/{split}" for split in ("train", "valid", "test")}
    for split in ("train", "valid", "test"):
        logged = inputs[f"{OFFICE}/{split}"]
        assert json.loads(logged.dataset.source)["uri"] == str(files.split(split).resolve())
        recomputed = mlflow.data.from_pandas(pd.read_csv(files.split(split), dtype=str, keep_default_na=False))
        assert logged.dataset.digest == recomputed.digest
        assert [t.value for t in logged.tags if t.key == "mlflow.data.context"] == [split]

    results = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/validation/results.json")
    assert results["ok"] is True and results["failed"] == []
    assert {"train/entries", "valid/heldout", "info/info", "index/index", "items/items"} <= set(results["results"])
    assert all(result["success"] for result in results["results"].values())
    evaluated = results["results"]["test/entries"]["results"]
    assert {r["expectation_config"]["type"] for r in evaluated} >= {
        "expect_column_values_to_match_regex", "expect_column_pair_values_to_be_equal",
    }


# One test per failure type ----------------------------------------------------------------------------------


def test_bad_column_set(office_copy, store, capsys):
    path = locate(OFFICE, office_copy).valid
    frame = read_split(path, parse_histories=False).rename(columns={"item_sid": "item_sids"})
    frame.to_csv(path, index=False)
    code, message = run_cli(office_copy, capsys)
    assert code == 1
    assert_reported(message, path, 1, "header", sorted(frame.columns))
    assert "missing: item_sid" in message and "unexpected: item_sids" in message
    (run,) = runs_from(office_copy)
    assert run.info.status == "FAILED" and run.data.tags["validation"] == "failed"


def test_all_checks_every_category_before_it_fails(tmp_path, store, capsys):
    data_dir = copy_category(INDUSTRIAL, tmp_path / "data")
    copy_category(OFFICE, data_dir)
    path = locate(INDUSTRIAL, data_dir).valid  # the first category checked is broken
    frame = read_split(path, parse_histories=False).rename(columns={"item_sid": "item_sids"})
    frame.to_csv(path, index=False)
    assert stage_exit(DataRecipe, "--category", "all", "--data_dir", data_dir) == 1
    captured = capsys.readouterr()
    assert f"{OFFICE}: valid" in captured.out
    assert captured.err.strip().splitlines()[-1] == "data: error: 1 of 2 categories failed validation"
    status = {run.data.tags["category"]: run.info.status for run in runs_from(data_dir)}
    assert status == {INDUSTRIAL: "FAILED", OFFICE: "FINISHED"}


def test_unparsable_history(office_copy, store, capsys):
    path = locate(OFFICE, office_copy).test
    broken = "['Avery Labels', 'BIC Pens'"
    edit_cell(path, 7, "history_item_title", broken)
    code, message = run_cli(office_copy, capsys)
    assert code == 1
    assert_reported(message, path, 7, "history_item_title", broken)
    assert "is a Python-literal list" in message


def test_history_of_eleven_entries(office_copy, store, capsys):
    files = locate(OFFICE, office_copy)
    index = json.loads(files.index.read_text())
    items = json.loads(files.items.read_text())
    ids = list(range(11))
    edit_cell(files.train, 12, "history_item_id", str(ids))
    edit_cell(files.train, 12, "history_item_title", str([items[str(i)]["title"] for i in ids]))
    edit_cell(files.train, 12, "history_item_sid", str(["".join(index[str(i)]) for i in ids]))
    code, message = run_cli(office_copy, capsys)
    assert code == 1
    assert_reported(message, files.train, 12, "history_item_id", str(ids))
    assert "11 entries" in message and "holds 1..10 entries" in message
    # The lists agree with the catalogue: only the length rule fails, once per history column.
    report = validate_category(files)
    assert {(f.column, f.row) for f in report.failures} == {
        ("history_item_id", 12), ("history_item_title", 12), ("history_item_sid", 12),
    }
    assert {f.expectation for f in report.failures} == {"expect_column_values_to_be_between"}


def test_unequal_history_lengths(office_copy, store, capsys):
    path = locate(OFFICE, office_copy).valid
    sids = read_split(path)["history_item_sid_list"]
    line = int(sids.map(len).gt(1).idxmax()) + 2
    shortened = str(ast.literal_eval(cell(path, line, "history_item_sid"))[:-1])
    edit_cell(path, line, "history_item_sid", shortened)
    code, message = run_cli(office_copy, capsys)
    assert code == 1
    n = len(ast.literal_eval(shortened))
    assert_reported(message, path, line, "history_item_sid", shortened)
    assert f"{n} entries, history_item_id has {n + 1}" in message


def test_sid_not_matching_pattern(office_copy, store, capsys):
    path = locate(OFFICE, office_copy).test
    bad = "<a_60><b_159>c_203"
    edit_cell(path, 3, "item_sid", bad)
    code, message = run_cli(office_copy, capsys)
    assert code == 1
    assert_reported(message, path, 3, "item_sid", bad)
    assert "expect_column_values_to_match_regex" in message


def test_sid_differs_from_index(office_copy, store, capsys):
    files = locate(OFFICE, office_copy)
    index = json.loads(files.index.read_text())
    line = int(read_split(files.valid)["history_item_sid_list"].map(len).gt(1).idxmax()) + 2
    sids = ast.literal_eval(cell(files.valid, line, "history_item_sid"))
    ids = ast.literal_eval(cell(files.valid, line, "history_item_id"))
    other = next(sid for sid in ("".join(tokens) for tokens in index.values()) if sid != sids[1])
    sids[1] = other
    edit_cell(files.valid, line, "history_item_sid", str(sids))
    code, message = run_cli(office_copy, capsys)
    assert code == 1
    assert_reported(message, files.valid, line, "history_item_sid entry 2", other)
    assert f"index.json has {''.join(index[str(ids[1])])!r} for item {ids[1]}" in message


def test_title_differs_from_item_json(office_copy, store, capsys):
    path = locate(OFFICE, office_copy).train
    wrong = "A Title That No Item Has"
    true_title = cell(path, 20, "item_title")
    edit_cell(path, 20, "item_title", wrong)
    code, message = run_cli(office_copy, capsys)
    assert code == 1
    assert_reported(message, path, 20, "item_title", wrong)
    assert f"item.json has {true_title!r}" in message


def test_unknown_item_id(office_copy, store, capsys):
    path = locate(OFFICE, office_copy).train
    edit_cell(path, 9, "item_id", "999999")
    code, message = run_cli(office_copy, capsys)
    assert code == 1
    assert_reported(message, path, 9, "item_id", "999999")
    assert "is an item id of index.json" in message


def test_info_title_disagrees_with_item_json(office_copy, store, capsys):
    files = locate(OFFICE, office_copy)
    lines = files.info.read_text(encoding="utf-8").splitlines()
    sid, title, item = lines[9].split("\t")
    lines[9] = f"{sid}\tRenamed In Info\t{item}"
    files.info.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, message = run_cli(office_copy, capsys)
    assert code == 1
    assert_reported(message, files.info, 10, "title", "Renamed In Info")
    assert f"item.json has {title!r} for item {item}" in message


def test_info_lines_out_of_item_order(office_copy, store, capsys):
    files = locate(OFFICE, office_copy)
    lines = files.info.read_text(encoding="utf-8").splitlines()
    lines[4], lines[5] = lines[5], lines[4]
    files.info.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, message = run_cli(office_copy, capsys)
    assert code == 1
    assert_reported(message, files.info, 5, "item_id", "5")
    assert_reported(message, files.info, 6, "item_id", "4")


def test_item_missing_from_item_json(office_copy, store, capsys):
    files = locate(OFFICE, office_copy)
    items = json.loads(files.items.read_text())
    del items["42"]
    files.items.write_text(json.dumps(items), encoding="utf-8")
    code, message = run_cli(office_copy, capsys)
    assert code == 1
    assert_reported(message, files.index, None, "key", "42")
    assert "is an item id of item.json" in message
    report = validate_category(files)
    assert [(f.file, f.item, f.value) for f in report.failures] == [(str(files.index), "42", "42")]


def test_train_row_copied_into_test(office_copy, store, capsys):
    files = locate(OFFICE, office_copy)
    train = read_split(files.train, parse_histories=False)
    test = read_split(files.test, parse_histories=False)
    pd.concat([test, train.iloc[[30]]]).to_csv(files.test, index=False)
    copied_line, train_line = len(test) + 2, 30 + 2
    code, message = run_cli(office_copy, capsys)
    assert code == 1
    row = train.iloc[30]
    key = f"{row['user_id']} {row['history_item_id']} -> {row['item_id']}"
    assert_reported(message, files.test, copied_line, "user_id+history_item_id+item_id", key)
    assert f"train line {train_line}" in message


def test_failures_beyond_the_first_few_are_counted(office_copy):
    path = locate(OFFICE, office_copy).valid
    frame = read_split(path, parse_histories=False)
    frame["user_id"] = "U" + frame["user_id"]
    frame.to_csv(path, index=False)
    report = validate_category(locate(OFFICE, office_copy))
    (failed,) = report.failed
    assert failed.unexpected_count == ROWS_PER_SPLIT
    assert [f.row for f in failed.failures] == [2, 3, 4, 5, 6]
    assert f"... and {ROWS_PER_SPLIT - 5} more" in report.message()


def test_unreadable_json_names_file_and_line(office_copy, store, capsys):
    files = locate(OFFICE, office_copy)
    lines = files.items.read_text(encoding="utf-8").splitlines()
    broken = next(i for i, text in enumerate(lines) if '"title":' in text)
    lines[broken] = lines[broken].replace('"title":', '"title"')
    files.items.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, message = run_cli(office_copy, capsys)
    assert code == 1
    assert f"{files.items}, line {broken + 1}, column (file)" in message and "not JSON" in message


def test_help_names_the_command_and_both_option_spellings(capsys):
    with pytest.raises(SystemExit) as exit_info:
        stage_exit(DataRecipe, "--help")
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert "--category" in usage and "--data-dir" in usage and "--data_dir" in usage and "all" in usage


def test_all_under_mlflow_run_makes_one_child_run_per_category(tmp_path, store, monkeypatch):
    data_dir = copy_category(INDUSTRIAL, tmp_path / "data", rows=40)
    copy_category(OFFICE, data_dir, rows=40)
    experiment = mlflow.create_experiment(f"project-{tmp_path.name}", (tmp_path / "artifacts").as_uri())
    project_run = mlflow.MlflowClient().create_run(experiment)
    monkeypatch.setenv("MLFLOW_RUN_ID", project_run.info.run_id)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment)
    mlflow.set_experiment(experiment_id=experiment)  # as in the fresh process `mlflow run` starts
    assert stage_exit(DataRecipe, "--category", "all", "--data-dir", data_dir) == 0
    runs = {run.data.tags["category"]: run for run in runs_from(data_dir)}
    assert set(runs) == {INDUSTRIAL, OFFICE}
    for category in (INDUSTRIAL, OFFICE):
        # each category's run lives in its own experiment, where later stages look; mlflow run's run is parent
        assert runs[category].data.tags["mlflow.parentRunId"] == project_run.info.run_id
        assert mlflow.get_experiment(runs[category].info.experiment_id).name == f"minirec-{category}"
        assert runs[category].data.metrics["rows_test"] == 40
