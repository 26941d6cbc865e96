"""Damaged archive files: a reader stops with one line, a resumed search sets a bad part aside."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from paretoprune.cli import main
from paretoprune.errors import InputError
from paretoprune.search.archive import Archive
from paretoprune.search.run import CONFIG_FILE, EVALUATIONS_FILE, PARTS_FOLDER
from paretoprune.testing import save_tiny_model, tiny_model

OBJECTIVES = ("kl", "sparsity")


def _archive_of(run_dir: Path, generations: int, per_generation: int = 3) -> None:
    """A real archive: parts for every evaluation (too few to be compacted)."""
    archive = Archive(run_dir, OBJECTIVES)
    for generation in range(generations):
        for index in range(per_generation):
            archive.append(generation=generation, genome=[0.1 * index],
                           objectives={"kl": 1.0 + generation - 0.1 * index, "sparsity": 0.4 + 0.1 * index})  # fmt: skip


def _truncate(path: Path) -> None:
    """Cut a file to half its bytes, as a full disk or a bad copy would leave it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _part(run_dir: Path, eval_id: int) -> Path:
    return next((run_dir / PARTS_FOLDER).glob(f"part-*-{eval_id:09d}.parquet"))


def test_a_truncated_part_stops_a_reader_with_one_line_naming_it(tmp_path: Path) -> None:
    _archive_of(tmp_path, generations=2)
    damaged = _part(tmp_path, 4)
    _truncate(damaged)
    with pytest.raises(InputError) as caught:
        Archive.load(tmp_path)
    message = str(caught.value)
    assert f"{PARTS_FOLDER}/{damaged.name}" in message and "unreadable" in message
    assert f"--resume {tmp_path}" in message
    assert damaged.exists()  # a reader never moves anything


def test_the_writer_sets_a_truncated_part_aside_and_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _archive_of(tmp_path, generations=2)
    damaged = _part(tmp_path, 4)
    _truncate(damaged)
    with caplog.at_level(logging.WARNING, logger="paretoprune.search.archive"):
        archive = Archive(tmp_path, OBJECTIVES)
    assert "set aside" in caplog.text and damaged.name in caplog.text
    assert not damaged.exists()
    assert damaged.with_name(damaged.name + ".unreadable").exists()  # kept, not deleted
    assert sorted(archive.frame()["eval_id"]) == [0, 1, 2, 3, 5]
    # The resumed search replays generation 1: its evaluations are dropped, then appended again.
    assert archive.discard_after(0) == 2
    for index in range(3):
        archive.append(generation=1, genome=[0.1 * index], objectives={"kl": 2.0, "sparsity": 0.5})
    archive.compact()
    reread = Archive.load(tmp_path).frame()
    assert list(reread["eval_id"]) == [0, 1, 2, 3, 4, 5]
    assert damaged.with_name(damaged.name + ".unreadable").exists()  # a compaction leaves it too


def test_a_lost_part_of_a_finished_generation_is_missing_from_the_front(tmp_path: Path) -> None:
    _archive_of(tmp_path, generations=2)
    lost = _part(tmp_path, 2)  # generation 0, the lowest kl of that generation
    _truncate(lost)
    archive = Archive(tmp_path, OBJECTIVES)
    archive.discard_after(1)  # both generations finished: nothing to replay
    assert 2 not in set(archive.front()["eval_id"])
    assert sorted(archive.frame()["eval_id"]) == [0, 1, 3, 4, 5]


def test_a_truncated_main_table_gives_one_line_to_readers_and_the_writer(tmp_path: Path) -> None:
    _archive_of(tmp_path, generations=1)
    Archive(tmp_path, OBJECTIVES).compact()
    _truncate(tmp_path / EVALUATIONS_FILE)
    for open_it in (lambda: Archive.load(tmp_path), lambda: Archive(tmp_path, OBJECTIVES)):
        with pytest.raises(InputError, match=f"{EVALUATIONS_FILE} in .* is unreadable"):
            open_it()
    assert (tmp_path / EVALUATIONS_FILE).exists()  # nothing was touched


def _run_config(run_dir: Path) -> None:
    settings = {"model": "tiny", "out": str(run_dir), "objectives": list(OBJECTIVES)}
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(settings))


@pytest.mark.parametrize("damage", ["part", "main"])
def test_front_of_a_damaged_run_exits_2_in_one_line(tmp_path: Path, capsys, damage: str) -> None:
    _archive_of(tmp_path, generations=2)
    _run_config(tmp_path)
    if damage == "main":
        Archive(tmp_path, OBJECTIVES).compact()
    damaged = tmp_path / EVALUATIONS_FILE if damage == "main" else _part(tmp_path, 4)
    _truncate(damaged)
    with pytest.raises(SystemExit) as exited:
        main(["front", str(tmp_path)])
    assert exited.value.code == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and damaged.name in errors[0] and "unreadable" in errors[0]


def _journal_again(run_dir: Path, generation: int) -> None:
    """Put one generation's rows back into part files, where they sit until a search ends.

    A finished or interrupted search compacts its archive; a killed one leaves the journal.
    """
    frame = Archive.load(run_dir).frame()
    archive = Archive(run_dir, ("kl",))
    archive.discard_after(generation - 1)
    for row in frame[frame["generation"] == generation].to_dict("records"):
        archive.append(eval_id=row["eval_id"], generation=generation, genome=row["genome"],
                       candidate=row["candidate"], objectives={"kl": row["kl"]}, worker=row["worker"],
                       node_id=row["node_id"], seconds=row["seconds"], status=row["status"],
                       error=row["error"])  # fmt: skip
    assert len(list((run_dir / PARTS_FOLDER).glob("part-*.parquet"))) == len(frame[frame["generation"] == generation])


@pytest.mark.ray
def test_a_resumed_search_sets_a_truncated_part_aside_and_finishes(tmp_path: Path) -> None:
    model_dir, run = tmp_path / "model", tmp_path / "run"
    save_tiny_model(model_dir, tiny_model("llama", layers=2))
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", TOKENIZERS_PARALLELISM="false")
    search = [sys.executable, "-m", "paretoprune", "search", "--quiet", "--json"]
    first = subprocess.run([*search, "--model", str(model_dir), "--calib", "builtin", "--nsamples", "2", "--seqlen",
                            "32", "--sparsity", "0.5", "--pop", "4", "--generations", "2", "--workers", "1",
                            "--out", str(run)], env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    _journal_again(run, generation=1)  # as a driver killed (not interrupted) after generation 1 leaves it
    damaged = _part(run, 5)  # generation 1, finished: the resumed search cannot recompute it
    _truncate(damaged)
    resumed = subprocess.run([*search, "--resume", str(run), "--generations", "3"], env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Traceback" not in resumed.stderr
    assert f"set aside the unreadable {PARTS_FOLDER}/{damaged.name}" in resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["evaluations"] == 4 + 3 + 4
    assert sorted(Archive.load(run).frame()["eval_id"]) == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert damaged.with_name(damaged.name + ".unreadable").exists()
