"""Atomic folder swaps: the target is the old folder or the complete new one, never a mix or a half."""

from __future__ import annotations

import stat

import pytest

from minirec.atomic import atomic_directory


def test_a_finished_folder_replaces_the_old_one_whole(tmp_path):
    target = tmp_path / "checkpoint"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with atomic_directory(target, mode=0o755) as staging:
        assert staging.parent == tmp_path and not any(staging.iterdir())
        (staging / "new.bin").write_text("new")
        assert (target / "old.bin").exists()  # nothing changes until the block ends
    assert sorted(p.name for p in target.iterdir()) == ["new.bin"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # no staging or previous folder left


def test_a_failed_write_leaves_the_old_folder_and_no_leftovers(tmp_path):
    target = tmp_path / "checkpoint"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_directory(target) as staging:
            (staging / "half.bin").write_text("half")
            raise RuntimeError("disk full")
    assert sorted(p.name for p in target.iterdir()) == ["old.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
