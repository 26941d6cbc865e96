"""The hypervolume of a two-objective front: one number for how far a search has come.

For a range search the lowest error alone says nothing (it is the least sparse point); the
area a front dominates, up to a fixed reference point, grows whenever any part of the front
improves, and is the usual way to compare fronts.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["hypervolume_2d", "reference_point"]


def hypervolume_2d(points: np.ndarray, reference: Sequence[float]) -> float:
    """The area that ``points`` (rows of two minimised values) dominate, up to ``reference``.

    Points that are not strictly better than the reference in both values add nothing, nor do
    rows holding NaN or infinities (failed evaluations). Dominated points add nothing either:
    sweeping the points by the first value, each adds the strip below the lowest second value
    seen so far.
    """
    values = np.asarray(points, dtype=float).reshape(-1, 2)
    ref = np.asarray(reference, dtype=float)
    inside = np.all(np.isfinite(values), axis=1) & np.all(values < ref, axis=1)
    values = values[inside]
    values = values[np.lexsort((values[:, 1], values[:, 0]))]
    area, ceiling = 0.0, float(ref[1])
    for first, second in values:
        if second >= ceiling:
            continue  # dominated by a point to its left
        # This point's strip reaches right to the reference and up to the ceiling.
        area += (float(ref[0]) - first) * (ceiling - second)
        ceiling = float(second)
    return area


def reference_point(points: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """The worst finite value of each column, pushed out by ``margin`` of the column's spread.

    Taken once from a search's first generation, it stays fixed, so that hypervolumes of later
    generations compare; the margin lets the worst points of that generation still count. A
    column without spread is pushed out by ``margin`` of its magnitude (or by ``margin``).
    """
    values = np.asarray(points, dtype=float).reshape(-1, 2)
    values = values[np.all(np.isfinite(values), axis=1)]
    if len(values) == 0:
        raise ValueError("a reference point needs at least one finite point")
    worst, best = values.max(axis=0), values.min(axis=0)
    spread = worst - best
    fallback = np.where(worst != 0, np.abs(worst), 1.0)
    return worst + margin * np.where(spread > 0, spread, fallback)
