"""Typed tables: rows written and read back through their dataclass schema."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from paretoprune.errors import InputError

from benchmarks.table import column, columns, read_table, replace_rows, write_table


@dataclass(frozen=True)
class Inner:
    count: int
    share: float = column(".2f")


@dataclass(frozen=True)
class Row:
    name: str
    level: float = column("g")
    flag: bool
    note: str | None
    exact: float  # no format: every digit kept
    inner: Inner | None = None


ROWS = [
    Row("a", 0.5, True, None, 1 / 3, Inner(3, 0.25)),
    Row("b,c", 0.0, False, "quoted, with a comma", 2.0),
]


def test_rows_round_trip_and_a_rewrite_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    assert read_table(path, Row) == []
    write_table(path, ROWS[:1], Row)
    write_table(path, ROWS, Row)
    assert read_table(path, Row) == ROWS
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(columns(Row)) == "name,level,flag,note,exact,count,share"
    assert lines[1] == "a,0.5,true,,0.3333333333333333,3,0.25"
    assert lines[2] == '"b,c",0,false,"quoted, with a comma",2.0,,'


def test_a_file_with_other_columns_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "old.csv"
    path.write_text("name,level,flag,extra\nx,1,true,y\n")
    with pytest.raises(InputError, match=r"missing note, exact, count, share; unexpected extra\): convert") as error:
        read_table(path, Row)
    assert "\n" not in str(error.value)


def test_a_cell_of_the_wrong_type_names_its_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("name,level,flag,note,exact,count,share\nx,0.5,maybe,,1.0,,\n")
    with pytest.raises(InputError, match=r"bad.csv, line 2: flag is 'maybe', not a bool"):
        read_table(path, Row)


def test_replacing_rows_keeps_the_others_and_sorts(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    write_table(path, ROWS, Row)
    new = [Row("0", 0.7, True, None, 0.0)]
    rows = replace_rows(path, Row, lambda row: row.name != "a", new, lambda row: row.name)
    assert rows == [new[0], ROWS[1]] == read_table(path, Row)
