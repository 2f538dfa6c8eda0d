"""The new data directory: SID fields rebuilt from item ids, everything else byte for byte, written atomically."""

from __future__ import annotations

import filecmp

import pytest

from minirec.data import Catalogue, read_split
from minirec.sid import join_sid
from minirec.sids.writer import SidRewriteError, write_data_dir


@pytest.mark.parametrize("category", ["Industrial_and_Scientific", "Office_Products"])
def test_rewriting_with_the_official_index_reproduces_every_file(category, tmp_path):
    """The bundled files were written by upstream's convert_dataset.py; our formatting must match it exactly."""
    from minirec.data import locate

    files = locate(category)
    new = write_data_dir(files, Catalogue.load(files).item_tokens, tmp_path)
    for role, path in files.all_files().items():
        assert filecmp.cmp(path, new.all_files()[role], shallow=False), role
    assert sorted(p.name for p in (new.root / "train").iterdir()) == sorted(p.name for p in (files.root / "train").iterdir())


def test_new_sids_follow_the_item_ids(industrial_files, tmp_path):
    shifted = {item: [f"<a_{item % 7}>", f"<b_{item // 7 % 11}>", f"<c_{item}>", "<d_1>"] for item in range(3686)}
    new = write_data_dir(industrial_files, shifted, tmp_path)
    valid = read_split(new.valid)
    for _, row in valid.head(200).iterrows():
        assert row["item_sid"] == join_sid(shifted[int(row["item_id"])])
        assert row["history_item_sid_list"] == [join_sid(shifted[i]) for i in row["history_item_id_list"]]
    original = read_split(industrial_files.valid, parse_histories=False)
    unchanged = ["user_id", "history_item_title", "item_title", "history_item_id", "item_id"]
    assert valid[unchanged].equals(original[unchanged])
    first_info = new.info.read_text(encoding="utf-8").splitlines()[5].split("\t")
    assert first_info[0] == join_sid(shifted[5]) and first_info[2] == "5"


def test_missing_item_is_named_and_previous_output_survives(industrial_files, tmp_path):
    complete = Catalogue.load(industrial_files).item_tokens
    first = write_data_dir(industrial_files, complete, tmp_path)
    before = first.index.read_bytes()
    partial = {item: tokens for item, tokens in complete.items() if item != 114}
    with pytest.raises(SidRewriteError, match=r"item 114 has no SID|item id '114'"):
        write_data_dir(industrial_files, partial, tmp_path)
    assert first.index.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["Industrial_and_Scientific"]  # no staging folder left behind


def test_refuses_to_overwrite_its_input(industrial_files):
    with pytest.raises(ValueError, match="refusing to overwrite"):
        write_data_dir(industrial_files, {}, industrial_files.root.parent)
