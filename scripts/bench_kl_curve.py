"""Best ``kl`` so far against candidates evaluated: how fast each search converges.

``kl`` is what the searches minimise, and every evaluation records it, so this curve costs
nothing to draw (``scripts/bench_curve.py`` scores the WikiText-2 perplexity of a few of its
points). Used by ``scripts/bench_search.py`` after each search: ``curves.csv`` and ``curves.png``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from bench_io import panel_row, read_rows, save_figure_atomic, write_rows
from bench_plan import RANGE_LEVELS, SHAPES, SearchSpec, search_kind, spec_named

__all__ = ["CURVE_COLUMNS", "curve_rows", "plot_curves", "update_curves"]

CURVE_COLUMNS = ("search", "level", "candidates", "eval_id", "generation", "best_kl")
# A range-search candidate counts toward a level's best-so-far curve when it is at least this
# sparse, less this slack (the repair hits a target to within rounding, not exactly).
LEVEL_SLACK = 0.005


def curve_rows(spec: SearchSpec, frame: pd.DataFrame) -> list[dict[str, str]]:
    """Best ``kl`` so far against evaluations made, one curve per level.

    WikiText-2 perplexity per candidate would cost a full evaluation each; ``kl`` is what the
    search itself minimises, so its best-so-far curve shows how fast the search converges.
    For the range search a level's curve counts the candidates at least that sparse.
    """
    frame = frame.sort_values("eval_id").reset_index(drop=True)
    ok = frame["status"] == "ok"
    levels = RANGE_LEVELS if spec.sparsity_range is not None else (spec.target,)
    rows = []
    for level in levels:
        usable = ok & (frame["sparsity"] >= level - LEVEL_SLACK) if spec.sparsity_range is not None else ok
        best = frame["kl"].where(usable).cummin().ffill()
        for position, record in frame.iterrows():
            value = best[position]
            rows.append({
                "search": spec.name, "level": f"{level:g}", "candidates": str(position + 1),
                "eval_id": str(record["eval_id"]), "generation": str(record["generation"]),
                "best_kl": "" if math.isnan(value) else f"{value:.6f}",
            })  # fmt: skip
    return rows


def update_curves(spec: SearchSpec, frame: pd.DataFrame, out: Path, order: Sequence[str]) -> None:
    """Replace this search's rows of ``curves.csv`` and redraw ``curves.png``."""
    path = out / "curves.csv"
    kept = [row for row in read_rows(path) if row["search"] != spec.name]
    rank = {name: index for index, name in enumerate(order)}

    def position(row: Mapping[str, str]) -> tuple[int, float, int]:
        return rank.get(row["search"], len(rank)), float(row["level"]), int(row["candidates"])

    rows = sorted([*kept, *curve_rows(spec, frame)], key=position)
    write_rows(path, rows, CURVE_COLUMNS)
    plot_curves(rows, out / "curves.png")


def plot_curves(rows: Sequence[Mapping[str, str]], path: Path) -> None:
    """One panel per sparsity (2:4 apart), one line per search: best kl against candidates."""
    curves: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for row in rows:
        if row["best_kl"]:
            point = (int(row["candidates"]), float(row["best_kl"]))
            curves.setdefault((row["search"], row["level"]), []).append(point)
    order = [_panel_title(shape) for shape in SHAPES]
    panels = sorted({_panel(search, level) for search, level in curves}, key=order.index)
    if not panels:
        return
    fig, axes = panel_row(len(panels), width=4.5, height=3.8)
    for axis, panel in zip(axes, panels):
        for (search, level), points in curves.items():
            if _panel(search, level) == panel:
                xs, ys = zip(*points)
                axis.step(xs, ys, where="post", label=_curve_label(search, level))
        axis.set_title(panel)
        axis.set_xlabel("candidates evaluated")
        axis.set_ylabel("best kl so far")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    fig.tight_layout()
    save_figure_atomic(fig, path)


def _panel(search: str, level: str) -> str:
    spec = spec_named(search)
    structure = spec.structure if spec is not None else "unstructured"
    return _panel_title((structure, float(level)))


def _panel_title(shape: tuple[str, float]) -> str:
    structure, sparsity = shape
    return f"{sparsity:.0%} unstructured" if structure == "unstructured" else structure


def _curve_label(search: str, level: str) -> str:
    kind = search_kind(search)
    return f"range search (>= {float(level):.0%})" if kind == "range" else f"{kind} search"
