"""The truth statement sets: short statements labelled true (1) or false (0), one topic a file.

A folder holds one ``<topic>.csv`` per topic with at least the columns ``statement`` and
``label``; other columns are ignored. TPLO's allocation reads :data:`TPLO_TOPICS`. The folder is
named by the user (``--truth-dir DIR``, else ``$PARETOPRUNE_TRUTH_DIR``); everything wrong with
it is one :class:`~paretoprune.errors.InputError` line that names the file and the fix.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from paretoprune.errors import InputError

__all__ = ["TPLO_TOPICS", "TRUTH_DIR_ENV", "StatementSet", "load_statements", "truth_dir"]

TPLO_TOPICS = ("cities", "neg_cities", "sp_en_trans", "neg_sp_en_trans")
TRUTH_DIR_ENV = "PARETOPRUNE_TRUTH_DIR"
_HOW_TO_PASS = f"pass --truth-dir DIR (or set {TRUTH_DIR_ENV})"
_COLUMNS = ("statement", "label")


@dataclass(frozen=True)
class StatementSet:
    """One topic's statements and their labels (int64, 1 = true, 0 = false), in file order."""

    statements: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.statements)


def truth_dir(explicit: Path | str | None) -> Path:
    """The folder of statement sets: ``explicit``, else ``$PARETOPRUNE_TRUTH_DIR``."""
    folder = explicit or os.environ.get(TRUTH_DIR_ENV)
    if not folder:
        raise InputError(f"truthfulness needs the truth statement sets: {_HOW_TO_PASS}")
    return Path(folder)


def load_statements(
    folder: Path | str,
    topics: Sequence[str] = TPLO_TOPICS,
    limit: int | None = None,
    seed: int = 0,
) -> dict[str, StatementSet]:
    """Read ``<topic>.csv`` for each topic.

    With ``limit``, each set keeps at most that many statements, drawn at random (``seed``)
    in proportion to its true and false counts, so both classes stay and the balance holds.
    """
    folder = Path(folder)
    _check_folder(folder, topics)
    if limit is not None and limit < 2:
        raise InputError(f"a statement limit must be at least 2 (one true, one false), got {limit}")
    rng = np.random.default_rng(seed)
    sets = {topic: _read_set(folder / f"{topic}.csv") for topic in topics}
    if limit is None:
        return sets
    return {topic: _subsample(statement_set, limit, rng) for topic, statement_set in sets.items()}


def _check_folder(folder: Path, topics: Sequence[str]) -> None:
    if not topics:
        raise InputError("no topics asked for: name at least one statement set")
    if not folder.is_dir():
        raise InputError(f"truth folder {folder} does not exist: {_HOW_TO_PASS}")
    missing = [f"{topic}.csv" for topic in topics if not (folder / f"{topic}.csv").is_file()]
    if missing:
        raise InputError(
            f"truth folder {folder} lacks {', '.join(missing)}: {_HOW_TO_PASS} with the truth statement sets"
        )


def _read_set(path: Path) -> StatementSet:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            absent = [column for column in _COLUMNS if column not in (reader.fieldnames or [])]
            if absent:
                raise InputError(
                    f"{path} has no {' or '.join(absent)} column: a statement set needs the columns statement and label"
                )
            rows = [(row["statement"], row["label"]) for row in reader]
    except (UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"cannot read {path} as a UTF-8 CSV file: {error}") from error
    statements = [_statement(path, number, text) for number, (text, _) in enumerate(rows, start=2)]
    labels = np.array([_label(path, number, value) for number, (_, value) in enumerate(rows, start=2)], dtype=np.int64)
    _check_both_classes(path, labels)
    return StatementSet(statements=statements, labels=labels)


def _statement(path: Path, line: int, text: str | None) -> str:
    if text is None or not text.strip():
        raise InputError(f"{path} line {line}: the statement is empty")
    return text


def _label(path: Path, line: int, value: str | None) -> int:
    cleaned = (value or "").strip()
    if cleaned not in ("0", "1"):
        raise InputError(f"{path} line {line}: label {value!r} is not 0 (false) or 1 (true)")
    return int(cleaned)


def _check_both_classes(path: Path, labels: np.ndarray) -> None:
    if labels.size == 0:
        raise InputError(f"{path} holds no statements")
    if labels.min() == labels.max():
        kind = "true" if labels[0] == 1 else "false"
        raise InputError(f"{path} holds only {kind} statements: a probe needs both true and false ones")


def _subsample(statement_set: StatementSet, limit: int, rng: np.random.Generator) -> StatementSet:
    """At most ``limit`` statements, classes in proportion (each at least one), in file order."""
    total = len(statement_set)
    if limit >= total:
        return statement_set
    true_rows = np.flatnonzero(statement_set.labels == 1)
    false_rows = np.flatnonzero(statement_set.labels == 0)
    true_count = int(np.clip(round(limit * true_rows.size / total), 1, limit - 1))
    true_count = min(true_count, true_rows.size)
    false_count = min(limit - true_count, false_rows.size)
    picks = [rng.choice(true_rows, true_count, replace=False), rng.choice(false_rows, false_count, replace=False)]
    chosen = np.sort(np.concatenate(picks))
    return StatementSet(
        statements=[statement_set.statements[index] for index in chosen], labels=statement_set.labels[chosen]
    )
