"""NSGA-III's reference directions: evenly spaced points on the unit simplex."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np

from paretoprune.errors import InputError

__all__ = ["das_dennis", "reference_directions"]


def das_dennis(n_obj: int, n_partitions: int) -> np.ndarray:
    """Das and Dennis' evenly spaced points on the unit simplex, one row per direction.

    Each row is a composition of ``n_partitions`` into ``n_obj`` non-negative parts, divided by
    ``n_partitions``; there are C(n_partitions + n_obj - 1, n_obj - 1) of them.
    """
    if n_obj < 1 or n_partitions < 0:
        raise InputError(f"das-dennis needs n_obj >= 1 and n_partitions >= 0, got {n_obj}, {n_partitions}")
    if n_obj == 1:
        return np.ones((1, 1))
    if n_partitions == 0:
        return np.full((1, n_obj), 1.0 / n_obj)
    rows = []
    # Stars and bars: choosing n_obj - 1 bar positions among n_partitions + n_obj - 1 slots.
    for bars in combinations(range(n_partitions + n_obj - 1), n_obj - 1):
        edges = (-1, *bars, n_partitions + n_obj - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(n_obj)])
    return np.asarray(rows, dtype=float) / n_partitions


def _direction_count(n_obj: int, n_partitions: int) -> int:
    return math.comb(n_partitions + n_obj - 1, n_obj - 1)


def reference_directions(n_obj: int, pop_size: int) -> np.ndarray:
    """The densest das-dennis set with no more directions than the population has members.

    NSGA-III keeps about one survivor per direction, so more directions than members would
    leave some unserved; one objective needs a single direction.
    """
    if n_obj == 1:
        return das_dennis(1, 1)
    if pop_size < n_obj:
        raise InputError(f"population size {pop_size} is below the number of objectives {n_obj}; raise --pop")
    n_partitions = 1
    while _direction_count(n_obj, n_partitions + 1) <= pop_size:
        n_partitions += 1
    return das_dennis(n_obj, n_partitions)
