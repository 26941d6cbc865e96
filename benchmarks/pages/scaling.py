"""The scaling page: candidates per minute by workers and threads (the rest is people's prose)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from benchmarks.files import write_text
from benchmarks.pages.markdown import fill, table
from benchmarks.scaling import ScalingSummary
from benchmarks.table import read_table

__all__ = ["TABLE", "render_scaling", "scaling_page"]

TABLE = "scaling.csv"
HEADER = ("setup", "evaluations", "s per candidate, in its actor", "wall s, whole run", "candidates/min, wall",
          "candidates/min, evaluation makespan")  # fmt: skip


def render_scaling(folder: Path) -> None:
    write_text(folder / "README.md", scaling_page(read_table(folder / TABLE, ScalingSummary)))


def scaling_page(rows: Sequence[ScalingSummary]) -> str:
    lines = [[row.setup, str(row.evaluations), f"{row.candidate_s:.1f}", f"{row.wall_s:.0f}",
              f"{row.per_minute_wall:.1f}", f"{row.per_minute_busy:.1f}"] for row in rows]  # fmt: skip
    return fill("scaling.md", table=table(HEADER, lines, "l" * len(HEADER), compact=True))
