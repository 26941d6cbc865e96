"""The archive: every evaluation of a search, on disk, and the front of all of them.

Layout in the run folder:

    evaluations.parquet          the compacted table; its metadata names the objectives and
                                 the current epoch
    evaluations.parts/           one small file per evaluation appended since the last
        part-EEEEEE-IIIIIIIII.parquet   compaction (E: epoch, I: eval_id)

Appending one evaluation writes one part file (atomically). Rewriting the whole table per
evaluation would cost O(n) each time; instead the parts are folded into the main table once
they hold a quarter as many rows as it does, so the total cost stays linear. The parts are the
crash-safe journal of a running search: the driver compacts once more when a search ends or is
interrupted, so that the main table alone then holds every evaluation.

Why the epoch: a compaction or a rollback rewrites the main table with a new epoch before it
deletes the parts it absorbed or dropped. Readers only take parts of the current epoch, so a
crash between the two steps leaves stale parts that nobody reads (the writer removes them
when it next opens the archive). At every instant the folder reads as a consistent table.

Damaged files (truncated by a full disk, a bad copy, a dying machine): an unreadable main
table stops both readers and the writer with one line, since the evaluations it held cannot
be recovered here. An unreadable part file stops a reader with one line naming it; the writer
(a resumed search) renames it to ``<name>.unreadable``, which no reader takes for a part, logs
a warning and goes on without that one evaluation. If it belonged to the generation that was
unfinished, the resumed search replays the generation and recomputes it, so nothing is lost.
If it belonged to a finished generation, the algorithm has already learnt from it but the
archive no longer holds it: the front simply lacks that row, and its eval_id may be given to
a later evaluation if it was the newest one. The renamed file stays for inspection.

The archive's front is the non-dominated set of all its successful evaluations, each objective
taken in its own direction (see :mod:`paretoprune.search.pareto`).

Fidelity: each row names what scored it in ``fidelity``: ``base`` for the search's own rows, or
a finalist stage such as ``16384+update`` (:mod:`paretoprune.search.fidelity`), whose rows also
name the search row they score again in ``source_id``. Tables written before these columns
existed (version 1) read as base rows with no source.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.io import atomic_write, remove_stale_temp_files
from paretoprune.search.fidelity import BASE, Fidelity
from paretoprune.search.pareto import Objectives
from paretoprune.search.run import EVALUATIONS_FILE, PARTS_FOLDER

__all__ = ["FIXED_COLUMNS", "STATUSES", "Archive", "candidate_of"]

STATUSES = ("ok", "failed")
FIXED_COLUMNS = ("eval_id", "generation", "genome", "candidate", "worker", "node_id", "seconds", "status", "error",
                 "fidelity", "source_id")

logger = logging.getLogger(__name__)

_META_KEY = b"paretoprune.archive"
_PART_NAME = re.compile(r"^part-(\d{6})-(\d{9})\.parquet$")
_READ_ATTEMPTS = 20
_UNREADABLE_SUFFIX = ".unreadable"  # what a part set aside is renamed with


# ---------------------------------------------------------------------------------------------
# Table layout
# ---------------------------------------------------------------------------------------------


def _schema(objectives: Sequence[str]) -> pa.Schema:
    """Column order: identity, genome and candidate, objectives, where and how it ran."""
    head = [("eval_id", pa.int64()), ("generation", pa.int64()), ("genome", pa.list_(pa.float64())),
            ("candidate", pa.string())]
    tail = [("worker", pa.string()), ("node_id", pa.string()), ("seconds", pa.float64()),
            ("status", pa.string()), ("error", pa.string()), ("fidelity", pa.string()), ("source_id", pa.int64())]
    return pa.schema(head + [(name, pa.float64()) for name in objectives] + tail)


def _with_fidelity(table: pa.Table) -> pa.Table:
    """A table written before rows named their fidelity: every row is the search's own (base).

    ``source_id`` (which search row a finalist row scores again) is empty for search rows.
    """
    if "fidelity" not in table.column_names:
        table = table.append_column("fidelity", pa.array([BASE] * table.num_rows, pa.string()))
    if "source_id" not in table.column_names:
        table = table.append_column("source_id", pa.nulls(table.num_rows, pa.int64()))
    return table


def _check_objective_names(objectives: Sequence[str]) -> tuple[str, ...]:
    names = tuple(objectives)
    if not names or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise InputError(f"objectives must be distinct non-empty names, got {list(names)}")
    clashes = sorted(set(names) & set(FIXED_COLUMNS))
    if clashes:
        raise InputError(f"objective names {clashes} clash with archive columns; rename the objectives")
    return names


def _part_name(epoch: int, eval_id: int) -> str:
    return f"part-{epoch:06d}-{eval_id:09d}.parquet"


def candidate_of(row: Mapping[str, Any]) -> Candidate:
    """The candidate an archive row evaluated (the row's ``candidate`` cell, parsed)."""
    return Candidate.from_dict(json.loads(row["candidate"]))


def _candidate_text(candidate: Mapping[str, Any] | str | None) -> str | None:
    if candidate is None or isinstance(candidate, str):
        return candidate
    return json.dumps(candidate, sort_keys=True)


def _file_identity(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_ino, stat.st_mtime_ns


class _UnreadableFile(Exception):
    """A file of the archive that exists but cannot be read as the table it should hold."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path


def _read_parquet(path: Path) -> pa.Table:
    """The file read through one open handle.

    pyarrow given a path may open it more than once (footer, then pages); a writer replacing
    the file in between would mix two files. An open handle keeps reading the file it opened.
    A missing file is left to the caller (a compaction may just have removed it); any other
    failure means the file itself is damaged.
    """
    try:
        with open(path, "rb") as handle:
            return pq.read_table(handle)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as error:
        raise _UnreadableFile(path, str(error)) from error


def _set_aside(path: Path) -> Path:
    """Rename a damaged file out of the way (never delete: it may be wanted for inspection)."""
    target = path.with_name(path.name + _UNREADABLE_SUFFIX)
    count = 1
    while target.exists():  # a part with this name was damaged before
        target = path.with_name(f"{path.name}{_UNREADABLE_SUFFIX}.{count}")
        count += 1
    os.replace(path, target)
    return target


def _write_parquet(path: Path, table: pa.Table) -> None:
    atomic_write(path, lambda handle: pq.write_table(table, handle))


# ---------------------------------------------------------------------------------------------
# The archive
# ---------------------------------------------------------------------------------------------


class Archive:
    """All evaluations of one run folder; append-only, crash-safe, single writer.

    ``Archive(run_dir, objectives)`` opens the folder for writing (creating it, or continuing
    what is there, e.g. on resume). ``Archive.load(run_dir)`` reads a snapshot without writing,
    so it is safe beside a running search.
    """

    def __init__(self, run_dir: str | os.PathLike[str], objectives: Sequence[str], *,
                 compact_min_parts: int = 32) -> None:
        self.run_dir = Path(run_dir)
        self.objectives = _check_objective_names(objectives)
        self._schema = _schema(self.objectives)
        self._compact_min_parts = max(1, int(compact_min_parts))
        self._writable = True
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._parts_dir.mkdir(exist_ok=True)
        if self._main_path.exists():
            self._read_disk(expected_objectives=self.objectives)
        else:
            self._epoch, self._main, self._parts = 0, self._schema.empty_table(), []
            self._write_main(self._main, epoch=0)
        self._remove_leftovers()
        self._index_ids()

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str]) -> "Archive":
        """A read-only snapshot of the archive in ``run_dir``."""
        folder = Path(run_dir)
        if not (folder / EVALUATIONS_FILE).is_file():
            raise InputError(f"no {EVALUATIONS_FILE} in {run_dir}; pass the folder a search wrote with --out")
        archive = cls.__new__(cls)
        archive.run_dir = folder
        archive._writable = False
        archive._compact_min_parts = 1
        archive._read_disk(expected_objectives=None)
        archive._index_ids()
        return archive

    # -- reading -----------------------------------------------------------------------------

    @property
    def _main_path(self) -> Path:
        return self.run_dir / EVALUATIONS_FILE

    @property
    def _parts_dir(self) -> Path:
        return self.run_dir / PARTS_FOLDER

    def _read_disk(self, expected_objectives: tuple[str, ...] | None) -> None:
        """Main table plus the parts of its epoch, as one consistent snapshot.

        A writer compacting meanwhile replaces the main table (a new inode) and deletes parts:
        the read is retried until the main table is the same file before and after.
        """
        for attempt in range(_READ_ATTEMPTS):
            try:
                before = _file_identity(self._main_path)
                self._read_disk_once(expected_objectives)
                if _file_identity(self._main_path) == before:
                    return
            except FileNotFoundError:
                if attempt == _READ_ATTEMPTS - 1:
                    raise
        raise RuntimeError(f"the archive in {self.run_dir} kept changing while being read; try again")

    def _read_disk_once(self, expected_objectives: tuple[str, ...] | None) -> None:
        table = self._read_main()
        metadata = json.loads((table.schema.metadata or {}).get(_META_KEY, b"null"))
        if not isinstance(metadata, dict):
            raise InputError(f"{self._main_path} was not written by paretoprune")
        stored = tuple(metadata["objectives"])
        if expected_objectives is not None and stored != expected_objectives:
            raise InputError(f"the archive in {self.run_dir} has objectives {list(stored)}, not "
                             f"{list(expected_objectives)}; use another --out folder")
        self.objectives = stored
        self._schema = _schema(stored)
        self._epoch = int(metadata["epoch"])
        # Casting pins the in-memory layout (Parquet may rename a list's child field).
        self._main = _with_fidelity(table.replace_schema_metadata(None)).cast(self._schema)
        self._parts = [part for part in map(self._read_part, self._current_part_paths()) if part is not None]

    def _read_main(self) -> pa.Table:
        try:
            return _read_parquet(self._main_path)
        except _UnreadableFile as error:
            raise InputError(
                f"{EVALUATIONS_FILE} in {self.run_dir} is unreadable (truncated?): restore it from a copy, "
                "or start a new search with another --out (its evaluations cannot be recovered)"
            ) from error

    def _read_part(self, path: Path) -> pa.Table | None:
        """One part file; None when it is damaged and this archive, the writer, set it aside."""
        try:
            return _with_fidelity(_read_parquet(path)).cast(self._schema)
        except (_UnreadableFile, pa.ArrowException) as error:  # a failed cast: not a row of this archive
            self._handle_damaged_part(path, error)
            return None

    def _handle_damaged_part(self, path: Path, error: Exception) -> None:
        """A reader stops with one line; the writer renames the part away and goes on."""
        name = f"{PARTS_FOLDER}/{path.name}"
        if not self._writable:
            raise InputError(
                f"{name} in {self.run_dir} is unreadable (truncated?); resume the search with --resume "
                f"{self.run_dir} to set it aside (it is recomputed if its generation was unfinished)"
            ) from error
        moved = _set_aside(path)
        logger.warning(
            "set aside the unreadable %s (truncated?) as %s: the resumed search recomputes its evaluation if "
            "its generation was unfinished, else the front lacks it", name, moved.name,
        )  # fmt: skip

    def _current_part_paths(self) -> list[Path]:
        if not self._parts_dir.is_dir():
            return []
        found = (_PART_NAME.match(p.name) for p in self._parts_dir.iterdir())
        mine = sorted(m.group(0) for m in found if m and int(m.group(1)) == self._epoch)
        return [self._parts_dir / name for name in mine]

    def _index_ids(self) -> None:
        ids = self._table().column("eval_id").to_pylist()
        self._ids = set(ids)
        self._next_id = max(ids) + 1 if ids else 0

    def _table(self) -> pa.Table:
        table = pa.concat_tables([self._main, *self._parts]) if self._parts else self._main
        return table.sort_by("eval_id")

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def next_eval_id(self) -> int:
        """The id the next append gets when none is given: one past the largest so far."""
        return self._next_id

    def frame(self) -> pd.DataFrame:
        """Every evaluation, one row each, in eval_id order (``genome`` cells are arrays)."""
        return self._table().to_pandas()

    def front(self, objectives: Sequence[str] | None = None) -> pd.DataFrame:
        """The non-dominated successful evaluations over ``objectives`` (default: all).

        Each objective counts in its own direction (sparsity is maximised). Equal objective
        vectors are kept once (the lowest eval_id); rows are sorted by the objectives in order,
        then by eval_id.
        """
        names = list(self.objectives if objectives is None else objectives)
        unknown = [name for name in names if name not in self.objectives]
        if unknown or not names:
            raise InputError(f"unknown objectives {unknown}; the archive has {list(self.objectives)}")
        return Objectives.of(names).front(self.frame())

    # -- writing -----------------------------------------------------------------------------

    def append(
        self,
        *,
        generation: int,
        genome: Sequence[float] | np.ndarray,
        candidate: Mapping[str, Any] | str | None = None,
        objectives: Mapping[str, float] | None = None,
        worker: str = "",
        node_id: str = "",
        seconds: float = 0.0,
        status: str = "ok",
        error: str | None = None,
        eval_id: int | None = None,
        fidelity: str = BASE,
        source_id: int | None = None,
    ) -> int:
        """Store one evaluation durably before returning its eval_id.

        ``eval_id`` defaults to ``next_eval_id``; a driver that wants ids independent of the
        order results arrive in passes its own (e.g. generation start + index). A finalist row
        names its ``fidelity`` (see :mod:`paretoprune.search.fidelity`) and the ``source_id`` of
        the search row whose candidate it scores again.
        """
        self._require_writable()
        eval_id = self._next_id if eval_id is None else int(eval_id)
        row = self._row(eval_id, generation, genome, candidate, objectives or {}, worker, node_id, seconds, status,
                        error)
        row |= self._lineage(fidelity, source_id)
        table = pa.Table.from_pylist([row], schema=self._schema)
        _write_parquet(self._parts_dir / _part_name(self._epoch, eval_id), table)
        self._parts.append(table)
        self._ids.add(eval_id)
        self._next_id = max(self._next_id, eval_id + 1)
        if len(self._parts) >= max(self._compact_min_parts, self._main.num_rows // 4):
            self.compact()
        return eval_id

    def _row(self, eval_id: int, generation: int, genome: Any, candidate: Any, objectives: Mapping[str, float],
             worker: str, node_id: str, seconds: float, status: str, error: str | None) -> dict[str, Any]:
        if eval_id < 0 or eval_id in self._ids:
            raise ValueError(f"eval_id {eval_id} is negative or already in the archive")
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        unknown = sorted(set(objectives) - set(self.objectives))
        if unknown:
            raise ValueError(f"objectives {unknown} are not archive objectives {list(self.objectives)}")
        values = {name: float(objectives.get(name, math.nan)) for name in self.objectives}
        if status == "ok" and not all(math.isfinite(v) for v in values.values()):
            raise ValueError(f"an ok evaluation needs a finite value for every objective, got {values}")
        return {"eval_id": eval_id, "generation": int(generation), "genome": [float(g) for g in genome],
                "candidate": _candidate_text(candidate), **values, "worker": str(worker),
                "node_id": str(node_id), "seconds": float(seconds), "status": status,
                "error": None if error is None else str(error)}

    def _lineage(self, fidelity: str, source_id: int | None) -> dict[str, Any]:
        """The fidelity cells of a row: a finalist row must name a search row it scores again."""
        Fidelity.parse(fidelity)  # refuse a label nobody could order
        if (fidelity == BASE) != (source_id is None):
            raise ValueError(f"a {fidelity} row needs source_id {'None' if fidelity == BASE else 'set'}")
        if source_id is not None and int(source_id) not in self._ids:
            raise ValueError(f"source_id {source_id} is not an evaluation of this archive")
        return {"fidelity": fidelity, "source_id": None if source_id is None else int(source_id)}

    def compact(self) -> None:
        """Fold the part files into the main table (atomically), then delete them."""
        self._require_writable()
        if not self._parts:
            return
        table = self._table()
        self._write_main(table, epoch=self._epoch + 1)
        self._main, self._parts = table, []
        self._remove_leftovers()

    def discard_after(self, generation: int) -> int:
        """Drop every evaluation of a generation later than ``generation``; returns how many.

        A run resumed from the checkpoint of ``generation`` evaluates the next generation
        again: what an interrupted attempt archived of it must go first.
        """
        self._require_writable()
        table = self._table()
        kept = table.filter(pc.less_equal(table.column("generation"), int(generation)))
        dropped = table.num_rows - kept.num_rows
        if dropped or self._parts:
            self._write_main(kept, epoch=self._epoch + 1)
            self._main, self._parts = kept, []
            self._remove_leftovers()
            self._index_ids()
        return dropped

    def _write_main(self, table: pa.Table, epoch: int) -> None:
        # Version 2 added the fidelity and source_id columns; version 1 tables read as base rows.
        metadata = {"version": 2, "objectives": list(self.objectives), "epoch": epoch}
        _write_parquet(self._main_path, table.replace_schema_metadata({_META_KEY: json.dumps(metadata)}))
        self._epoch = epoch

    def _remove_leftovers(self) -> None:
        """Parts of older epochs and temporary files of interrupted writes."""
        remove_stale_temp_files(self.run_dir, EVALUATIONS_FILE)
        remove_stale_temp_files(self._parts_dir, "part-*")
        for path in self._parts_dir.iterdir():
            match = _PART_NAME.match(path.name)
            if match and int(match.group(1)) != self._epoch:
                path.unlink(missing_ok=True)

    def _require_writable(self) -> None:
        if not self._writable:
            raise RuntimeError("this archive was opened read-only by Archive.load; "
                               "open it with Archive(run_dir, objectives) to write")
