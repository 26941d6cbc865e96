"""The scaling page: candidates per minute by workers and threads, and the GPU check's figures
against the targets when it has run (the rest is people's prose)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.files import write_text
from benchmarks.pages.gpu import GPU_CHECK, gpu_section, read_gpu_check
from benchmarks.pages.markdown import fill, table
from benchmarks.scaling import ScalingSummary
from benchmarks.table import read_table

__all__ = ["TABLE", "render_scaling", "scaling_page"]

TABLE = "scaling.csv"
HEADER = ("setup", "evaluations", "s per candidate, in its actor", "wall s, whole run", "candidates/min, wall",
          "candidates/min, evaluation makespan")  # fmt: skip


def render_scaling(folder: Path) -> None:
    """The page from ``scaling.csv`` and, beside the folder, the GPU check's report if there is one."""
    gpu_check = read_gpu_check(folder.parent / GPU_CHECK)
    write_text(folder / "README.md", scaling_page(read_table(folder / TABLE, ScalingSummary), gpu_check))


def scaling_page(rows: Sequence[ScalingSummary], gpu_check: Mapping[str, Any] | None = None) -> str:
    lines = [[row.setup, str(row.evaluations), f"{row.candidate_s:.1f}", f"{row.wall_s:.0f}",
              f"{row.per_minute_wall:.1f}", f"{row.per_minute_busy:.1f}"] for row in rows]  # fmt: skip
    measured = table(HEADER, lines, "l" * len(HEADER), compact=True)
    return fill("scaling.md", table=measured, gpu=gpu_section(gpu_check))
