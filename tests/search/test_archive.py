"""The archive: crash-safe parquet of every evaluation, and its Pareto front."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from paretoprune import io as io_module
from paretoprune.errors import InputError
from paretoprune.search.archive import Archive
from paretoprune.search.run import EVALUATIONS_FILE, PARTS_FOLDER
from tests.search.test_pareto import brute_force_front

OBJECTIVES = ["kl", "sparsity"]


def fill(archive: Archive, count: int, rng: np.random.Generator, generation_size: int = 10) -> None:
    for _ in range(count):
        index = archive.next_eval_id
        failed = rng.random() < 0.1
        archive.append(
            generation=index // generation_size,
            genome=rng.random(4),
            candidate={"metric": "wanda", "sparsities": {"layers.0.q_proj": 0.5}},
            objectives={} if failed else {"kl": float(rng.integers(0, 8)), "sparsity": float(rng.integers(0, 8))},
            worker="worker-0:123",
            node_id="node-a",
            seconds=0.5,
            status="failed" if failed else "ok",
            error="ValueError: boom" if failed else None,
        )


def test_append_and_reload_round_trip(tmp_path: Path) -> None:
    archive = Archive(tmp_path, OBJECTIVES)
    first = archive.append(generation=0, genome=[0.1, 0.2], candidate={"b": 1, "a": [0.5]},
                           objectives={"kl": 0.4, "sparsity": 0.6}, worker="w", node_id="n", seconds=1.5)
    second = archive.append(generation=0, genome=[0.3, 0.4], status="failed", error="RuntimeError: out of memory")
    assert (first, second, archive.next_eval_id) == (0, 1, 2)

    table = Archive.load(tmp_path).frame()
    assert list(table.columns) == ["eval_id", "generation", "genome", "candidate", "kl", "sparsity", "worker",
                                   "node_id", "seconds", "status", "error", "fidelity", "source_id"]
    assert table["eval_id"].tolist() == [0, 1]
    assert list(table["genome"][0]) == [0.1, 0.2]
    assert json.loads(table["candidate"][0]) == {"a": [0.5], "b": 1}
    assert (table["kl"][0], table["sparsity"][0], table["seconds"][0]) == (0.4, 0.6, 1.5)
    assert table["status"].tolist() == ["ok", "failed"]
    assert table["error"].isna()[0] and table["error"][1] == "RuntimeError: out of memory"
    assert np.isnan(table["kl"][1])


def test_bad_rows_and_names_are_refused(tmp_path: Path) -> None:
    archive = Archive(tmp_path, OBJECTIVES)
    with pytest.raises(ValueError, match="finite"):
        archive.append(generation=0, genome=[0.0], objectives={"kl": 1.0})
    with pytest.raises(ValueError, match="not archive objectives"):
        archive.append(generation=0, genome=[0.0], objectives={"kl": 1.0, "sparsity": 0.1, "ppl": 3.0})
    archive.append(generation=0, genome=[0.0], objectives={"kl": 1.0, "sparsity": 0.1}, eval_id=5)
    with pytest.raises(ValueError, match="already"):
        archive.append(generation=0, genome=[0.0], objectives={"kl": 1.0, "sparsity": 0.1}, eval_id=5)
    assert archive.next_eval_id == 6
    with pytest.raises(InputError, match="objectives"):
        Archive(tmp_path, ["kl", "ppl"])
    with pytest.raises(InputError, match="clash"):
        Archive(tmp_path / "other", ["kl", "status"])
    with pytest.raises(InputError, match="no evaluations.parquet"):
        Archive.load(tmp_path / "missing")
    with pytest.raises(RuntimeError, match="read-only"):
        Archive.load(tmp_path).append(generation=0, genome=[0.0], status="failed")


def test_front_is_the_brute_force_front_of_all_ok_rows(tmp_path: Path) -> None:
    archive = Archive(tmp_path, OBJECTIVES, compact_min_parts=16)
    fill(archive, 150, np.random.default_rng(1))
    table = archive.frame()
    ok = table[table["status"] == "ok"]
    F = ok[OBJECTIVES].to_numpy() * [1.0, -1.0]  # kl is minimised, sparsity maximised
    expected = set(ok["eval_id"][brute_force_front(F, keep_duplicates=False)])

    front = Archive.load(tmp_path).front()
    assert set(front["eval_id"]) == expected
    assert (front["status"] == "ok").all()
    assert front[OBJECTIVES].to_numpy().tolist() == sorted(front[OBJECTIVES].to_numpy().tolist())
    assert front["sparsity"].is_monotonic_increasing and front["kl"].is_monotonic_increasing  # a true trade-off

    by_kl = archive.front(["kl"])
    assert len(by_kl) == 1 and by_kl["kl"][0] == ok["kl"].min()
    assert by_kl["eval_id"][0] == ok[ok["kl"] == ok["kl"].min()]["eval_id"].min()  # first of equals
    with pytest.raises(InputError):
        archive.front(["ppl"])


def test_compaction_folds_parts_and_keeps_every_row(tmp_path: Path) -> None:
    archive = Archive(tmp_path, OBJECTIVES, compact_min_parts=4)
    fill(archive, 37, np.random.default_rng(2))
    parts = list((tmp_path / PARTS_FOLDER).glob("part-*.parquet"))
    assert 0 < len(parts) < 37
    assert Archive.load(tmp_path).frame()["eval_id"].tolist() == list(range(37))
    archive.compact()
    assert not list((tmp_path / PARTS_FOLDER).glob("part-*.parquet"))
    assert Archive.load(tmp_path).frame().equals(archive.frame())


def test_leftover_temporary_files_are_ignored_then_removed(tmp_path: Path) -> None:
    archive = Archive(tmp_path, OBJECTIVES)
    fill(archive, 12, np.random.default_rng(3))
    expected = archive.frame()
    main_temp = tmp_path / f".{EVALUATIONS_FILE}.999.deadbeef.tmp"
    part_temp = tmp_path / PARTS_FOLDER / ".part-000000-000000012.parquet.999.deadbeef.tmp"
    main_temp.write_bytes(b"PAR1 half a table")
    part_temp.write_bytes(b"PAR1")

    assert Archive.load(tmp_path).frame().equals(expected)
    assert main_temp.exists()  # a reader never deletes: the writer may be alive
    reopened = Archive(tmp_path, OBJECTIVES)
    assert not main_temp.exists() and not part_temp.exists()
    assert reopened.frame().equals(expected)
    assert reopened.append(generation=9, genome=[0.0], status="failed") == 12


def test_a_failed_write_leaves_the_previous_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = Archive(tmp_path, OBJECTIVES)
    fill(archive, 5, np.random.default_rng(4))
    expected = archive.frame()

    def crash(*args: object) -> None:
        raise OSError("disk vanished")

    monkeypatch.setattr(io_module.os, "replace", crash)
    with pytest.raises(OSError):
        archive.append(generation=1, genome=[0.0], status="failed")
    monkeypatch.undo()

    assert Archive.load(tmp_path).frame().equals(expected)
    assert not list(tmp_path.rglob("*.tmp"))
    assert Archive(tmp_path, OBJECTIVES).append(generation=1, genome=[0.0], status="failed") == 5


def test_a_crash_between_compaction_and_cleanup_loses_and_duplicates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = Archive(tmp_path, OBJECTIVES, compact_min_parts=1000)
    fill(archive, 20, np.random.default_rng(5))
    expected = archive.frame()

    def crash(self: Archive) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Archive, "_remove_leftovers", crash)
    with pytest.raises(KeyboardInterrupt):
        archive.compact()
    monkeypatch.undo()

    assert len(list((tmp_path / PARTS_FOLDER).glob("part-*.parquet"))) == 20  # stale, of the old epoch
    assert Archive.load(tmp_path).frame().equals(expected)
    Archive(tmp_path, OBJECTIVES)
    assert not list((tmp_path / PARTS_FOLDER).glob("part-*.parquet"))


WRITER = textwrap.dedent(
    """
    import sys
    from paretoprune.search.archive import Archive
    archive = Archive(sys.argv[1], ["kl", "sparsity"], compact_min_parts=8)
    for i in range(100000):
        archive.append(generation=i // 10, genome=[i / 7] * 50, candidate={"i": i},
                       objectives={"kl": i / 3, "sparsity": 1 / (i + 1)})
    """
)


def test_a_killed_writer_leaves_a_readable_consistent_archive(tmp_path: Path) -> None:
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)])
    try:
        deadline = time.monotonic() + 60
        seen = 0
        while seen < 40 and time.monotonic() < deadline:
            time.sleep(0.2)
            if (tmp_path / EVALUATIONS_FILE).exists():
                seen = len(Archive.load(tmp_path))  # reading beside a live writer
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.wait()
    table = Archive.load(tmp_path).frame()
    assert len(table) >= 40
    assert table["eval_id"].tolist() == list(range(len(table)))
    assert np.allclose(table["kl"], table["eval_id"] / 3)
    reopened = Archive(tmp_path, OBJECTIVES)
    assert reopened.next_eval_id == len(table)
    assert not list(tmp_path.rglob("*.tmp"))


def test_discard_after_drops_an_interrupted_generation_for_good(tmp_path: Path) -> None:
    archive = Archive(tmp_path, OBJECTIVES, compact_min_parts=4)
    fill(archive, 35, np.random.default_rng(6))  # generations 0..3, the last one partial
    assert archive.discard_after(2) == 5
    assert archive.next_eval_id == 30
    reopened = Archive(tmp_path, OBJECTIVES)
    assert reopened.frame()["generation"].max() == 2
    assert reopened.frame()["eval_id"].tolist() == list(range(30))
    assert reopened.append(generation=3, genome=[0.0], status="failed") == 30

