"""Every file the benchmarks write is written whole, or not at all.

Benchmarks run for hours and are killed and resumed, so a table or a page must never be left
half written: each goes through ``paretoprune.io.atomic_write`` (a temporary file beside the
target, then a rename; the folder is created if needed).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from paretoprune.io import atomic_write

__all__ = ["copy_file", "write_figure", "write_text"]


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path``, creating its folder."""
    data = text.encode("utf-8")
    atomic_write(path, lambda handle: handle.write(data))


def write_figure(path: Path, figure: Any) -> None:
    """Save a matplotlib figure as PNG to ``path``, then close it."""
    import matplotlib.pyplot as plt

    try:
        atomic_write(path, lambda handle: figure.savefig(handle, dpi=110, format="png"))
    finally:
        plt.close(figure)


def copy_file(source: Path, target: Path) -> None:
    """Copy ``source`` over ``target``."""
    with source.open("rb") as reading:
        atomic_write(target, lambda handle: shutil.copyfileobj(reading, handle))
