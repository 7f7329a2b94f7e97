"""radar_tasks.staging.replacing: a folder tree appears whole, with the mode a plain mkdir gives, or not at all."""

from __future__ import annotations

import os
import stat

import pytest

from radar_tasks.staging import replacing


def test_the_folder_appears_whole_with_mkdirs_mode(tmp_path):
    (tmp_path / "plain").mkdir()
    out = tmp_path / "out"
    with replacing(out) as staging:
        (staging / "a.txt").write_text("a")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "a"
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert sorted(os.listdir(tmp_path)) == ["out", "plain"]  # no staging folder left


def test_a_failure_leaves_the_target_as_it_was(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), replacing(out) as staging:
        (staging / "new.txt").write_text("new")
        raise RuntimeError("interrupted")
    assert os.listdir(out) == ["old.txt"] and os.listdir(tmp_path) == ["out"]
    with replacing(out) as staging:  # success replaces what the folder held
        (staging / "new.txt").write_text("new")
    assert os.listdir(out) == ["new.txt"]
