"""Crash-safe files: a failed write leaves the old file, and nothing half-written anywhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from paretoprune import io as io_module
from paretoprune.io import atomic_write, atomic_write_bytes, atomic_write_text, remove_stale_temp_files


def test_a_write_replaces_the_file_whole_and_creates_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "table.csv"
    assert atomic_write_text(path, "a,b\n1,2\n") == path
    assert path.read_text() == "a,b\n1,2\n"
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in path.parent.iterdir()) == ["table.csv"]  # no temporary file left


def test_a_writer_that_fails_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text("old")

    def half_then_fail(handle) -> None:
        handle.write(b"ne")
        raise KeyboardInterrupt  # Ctrl-C in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["recipe.yaml"]


def test_a_failed_rename_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pareto.png"
    path.write_bytes(b"old")

    def power_cut(*args: object) -> None:
        raise OSError("disk vanished")

    monkeypatch.setattr(io_module.os, "replace", power_cut)
    with pytest.raises(OSError, match="disk vanished"):
        atomic_write_bytes(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["pareto.png"]


def test_stale_temporary_files_of_one_name_are_removed(tmp_path: Path) -> None:
    mine = [tmp_path / ".checkpoint.json.17.cafe.tmp", tmp_path / ".checkpoint.json.18.beef.tmp"]
    others = [tmp_path / ".pareto.csv.17.cafe.tmp", tmp_path / "checkpoint.json"]
    for path in mine + others:
        path.write_text("x")
    assert remove_stale_temp_files(tmp_path, "checkpoint.json") == 2
    assert not any(path.exists() for path in mine) and all(path.exists() for path in others)
