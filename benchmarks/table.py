"""Typed tables: each row is a dataclass, each file a CSV whose header is the row's fields.

A row class names its columns as dataclass fields, in order. A field is a ``str``, ``int``,
``float`` or ``bool``, any of them ``| None`` (an empty cell), or another row dataclass (also
``| None``) whose fields become columns of their own. ``column(".4f")`` gives a float field
its format, so that a table written again is the same text.

A file whose header is not the row's schema is refused in one line: a table from an older
harness is converted once, not patched up while it is read.
"""

from __future__ import annotations

import csv
import io
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

from paretoprune.errors import InputError

from benchmarks.files import write_text

__all__ = ["column", "columns", "read_table", "replace_rows", "write_table"]

Row = TypeVar("Row")

_FORMAT = "format"
_SCALARS = (str, int, float, bool)
_BOOLEANS = {"true": True, "false": False}


def column(fmt: str, **options: Any) -> Any:
    """A dataclass field whose float is written with ``fmt`` (``".4f"``, ``"g"``, ...)."""
    return field(metadata={_FORMAT: fmt}, **options)


@dataclass(frozen=True)
class _Field:
    """One field of a row class: a column, or a nested row with columns of its own."""

    name: str
    kind: type  # str, int, float, bool, or a row dataclass
    optional: bool  # ``| None``: an empty cell (every cell empty, for a nested row)
    fmt: str | None  # how a float is written; None: as Python writes it, all digits kept
    children: tuple[_Field, ...] = ()  # a nested row's fields

    @property
    def width(self) -> int:
        """How many columns this field takes."""
        return sum(child.width for child in self.children) if self.children else 1


def _schema(row_type: type) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(row_type)
    schema = []
    for item in fields(row_type):
        kind, optional = _unwrap(hints[item.name])
        if is_dataclass(kind):
            schema.append(_Field(item.name, kind, optional, None, _schema(kind)))
        elif kind in _SCALARS:
            schema.append(_Field(item.name, kind, optional, item.metadata.get(_FORMAT)))
        else:
            raise TypeError(f"{row_type.__name__}.{item.name}: a table cell holds str, int, float or bool")
    return tuple(schema)


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); ``X`` -> (X, False)."""
    if typing.get_origin(hint) not in (typing.Union, types.UnionType):
        return hint, False
    kinds = [kind for kind in typing.get_args(hint) if kind is not type(None)]
    if len(kinds) != 1:
        raise TypeError(f"{hint}: a table cell holds one type, or that type | None")
    return kinds[0], True


def columns(row_type: type) -> list[str]:
    """The CSV header of ``row_type``: its fields, nested rows' fields in their place."""
    return _names(_schema(row_type))


def _names(schema: Sequence[_Field]) -> list[str]:
    return [name for item in schema for name in (_names(item.children) if item.children else [item.name])]


# --------------------------------------------------------------------------------------------
# Writing


def write_table(path: Path, rows: Sequence[Row], row_type: type[Row]) -> None:
    """Write every row to ``path`` (the whole file at once)."""
    schema = _schema(row_type)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_names(schema))
    writer.writerows(_cells(row, schema) for row in rows)
    write_text(path, buffer.getvalue())


def _cells(row: Any, schema: Sequence[_Field]) -> list[str]:
    cells: list[str] = []
    for item in schema:
        value = None if row is None else getattr(row, item.name)
        cells += _cells(value, item.children) if item.children else [_text(value, item)]
    return cells


def _text(value: Any, item: _Field) -> str:
    if value is None:
        return ""
    if item.kind is bool:
        return "true" if value else "false"
    if item.kind is float:
        return format(value, item.fmt) if item.fmt else repr(float(value))
    return str(value)


# --------------------------------------------------------------------------------------------
# Reading


def read_table(path: Path, row_type: type[Row]) -> list[Row]:
    """Every row of ``path`` (none when the file is not there yet)."""
    if not path.exists():
        return []
    schema = _schema(row_type)
    with path.open(newline="", encoding="utf-8") as handle:
        lines = list(csv.reader(handle))
    header, body = (lines[0], lines[1:]) if lines else ([], [])
    _check_header(path, header, _names(schema), row_type)
    return [_build(row_type, schema, cells, f"{path}, line {number}") for number, cells in enumerate(body, 2)]


def _check_header(path: Path, header: list[str], expected: list[str], row_type: type) -> None:
    if header == expected:
        return
    missing = [name for name in expected if name not in header]
    unexpected = [name for name in header if name not in expected]
    found = f"missing {', '.join(missing) or 'none'}; unexpected {', '.join(unexpected) or 'none'}"
    raise InputError(f"{path} does not have the columns of a {row_type.__name__} ({found}): convert it to the schema")


def _build(row_type: type, schema: Sequence[_Field], cells: Sequence[str], where: str) -> Any:
    values, start = {}, 0
    for item in schema:
        part = cells[start : start + item.width]
        start += item.width
        if item.children:
            empty = item.optional and not any(part)
            values[item.name] = None if empty else _build(item.kind, item.children, part, where)
        else:
            values[item.name] = _value(part[0] if part else "", item, where)
    return row_type(**values)


def _value(text: str, item: _Field, where: str) -> Any:
    if text == "" and (item.optional or item.kind is str):
        return None if item.optional else ""
    try:
        if item.kind is bool:
            return _BOOLEANS[text]
        return item.kind(text)
    except (KeyError, ValueError):
        raise InputError(f"{where}: {item.name} is {text!r}, not a {item.kind.__name__}") from None


def replace_rows(path: Path, row_type: type[Row], keep: Callable[[Row], bool], new: Sequence[Row],
                 order: Callable[[Row], Any]) -> list[Row]:  # fmt: skip
    """Keep the rows of ``path`` that ``keep`` accepts, add ``new``, sort, write; return them all."""
    rows = sorted([*(row for row in read_table(path, row_type) if keep(row)), *new], key=order)
    write_table(path, rows, row_type)
    return rows
