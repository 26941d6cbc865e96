"""Best ``kl`` so far against candidates evaluated: how fast each search converges.

``kl`` is what the searches minimise and every evaluation records it, so this curve costs
nothing (``ppl_curves.py`` scores the WikiText-2 perplexity of a few of its points). The
searched study replaces a search's points in ``curves.csv`` each time it runs that search.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmarks.labels import GRANULARITY_LABELS
from benchmarks.plots import Figure, Line, Panel, panel_title
from benchmarks.searches import RANGE_LEVELS, SEARCHES, SHAPES, SearchSpec
from benchmarks.table import column, replace_rows

__all__ = ["LEVEL_SLACK", "KlPoint", "kl_figure", "kl_points", "record_kl_points"]

# A range-search candidate counts toward a level's curve when it is at least this sparse, less
# this slack (the repair hits a target to within rounding, not exactly).
LEVEL_SLACK = 0.005


@dataclass(frozen=True)
class KlPoint:
    search: str
    level: float = column("g")
    candidates: int  # the first n evaluations, in evaluation order
    eval_id: int  # the n-th
    generation: int  # its generation
    best_kl: float | None = column(".6f")  # None: no successful candidate (at this level) yet


def kl_points(spec: SearchSpec, frame: pd.DataFrame) -> list[KlPoint]:
    """Best ``kl`` among the first n evaluations, for every n; one curve per level (the range
    search's level counts the candidates at least that sparse)."""
    frame = frame.sort_values("eval_id").reset_index(drop=True)
    ok = frame["status"] == "ok"
    ranged = spec.sparsity_range is not None
    points = []
    for level in RANGE_LEVELS if ranged else (spec.target,):
        usable = ok & (frame["sparsity"] >= level - LEVEL_SLACK) if ranged else ok
        best = frame["kl"].where(usable).cummin().ffill()
        for position, record in frame.iterrows():
            value = float(best[position])
            points.append(KlPoint(spec.name, level, position + 1, int(record["eval_id"]), int(record["generation"]),
                                  None if math.isnan(value) else value))  # fmt: skip
    return points


def record_kl_points(path: Path, spec: SearchSpec, frame: pd.DataFrame) -> list[KlPoint]:
    """Replace this search's points in ``path``; the searches stay in plan order."""
    rank = {search.name: index for index, search in enumerate(SEARCHES)}
    return replace_rows(path, KlPoint, lambda point: point.search != spec.name, kl_points(spec, frame),
                        lambda point: (rank.get(point.search, len(rank)), point.level, point.candidates))  # fmt: skip


def kl_figure(points: Sequence[KlPoint]) -> Figure:
    """One panel per sparsity (2:4 apart), a staircase per search."""
    specs = {spec.name: spec for spec in SEARCHES}
    curves: dict[tuple[str, float], list[KlPoint]] = {}
    for point in points:
        if point.best_kl is not None:
            curves.setdefault((point.search, point.level), []).append(point)
    titles: dict[str, list[Line]] = {}
    for (search, level), curve in curves.items():
        spec = specs.get(search)
        title = panel_title(spec.structure if spec else "unstructured", level)
        xs, ys = [p.candidates for p in curve], [p.best_kl for p in curve]
        titles.setdefault(title, []).append(Line(_curve_label(spec, search, level), xs, ys, step=True))
    order = [panel_title(structure, level) for structure, level in SHAPES]
    ranked = sorted(titles, key=lambda title: order.index(title) if title in order else len(order))
    return Figure("candidates evaluated", "best kl so far", [Panel(t, titles[t]) for t in ranked], width=4.5,
                  height=3.8)  # fmt: skip


def _curve_label(spec: SearchSpec | None, search: str, level: float) -> str:
    if spec is None:
        return search
    if spec.sparsity_range is not None:
        family = "memetic range search" if spec.kind == "memetic range" else "range search"
        return f"{family} (>= {level:.0%})"
    genes = "" if spec.granularity == "block" else f", {GRANULARITY_LABELS.get(spec.granularity, spec.granularity)}"
    return f"{spec.kind} search{genes}"
