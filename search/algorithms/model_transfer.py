"""Local models carried from the anchors to the rest of a front.

A sensitivity round fits, at one point, a separable quadratic per gene: a slope and a curvature.
The best allocations at neighbouring sparsities are related (the same layers are sensitive), so
the models fitted at a few anchor levels also say which way to move a front member at a level
between them, with no probes of its own: its slope is each anchor's slope carried to the
member's genes along that anchor's curvature, blended linearly by level.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from paretoprune.search.algorithms.sensitivity import model_step

__all__ = ["LocalModel", "level_weights", "transferred_step"]

# slope, curvature, the point it was fitted at, trust radius (a fraction of the box width)
LocalModel = tuple[np.ndarray, np.ndarray, np.ndarray, float]


def level_weights(levels: np.ndarray, level: float) -> np.ndarray:
    """Weights over the anchors for a point at ``level``: linear between the two anchors around
    it, all on the nearest one outside their span. The weights sum to one."""
    levels = np.asarray(levels, dtype=float)
    weights = np.zeros(len(levels))
    order = np.argsort(levels, kind="stable")
    ordered = levels[order]
    if level <= ordered[0] or len(levels) == 1:
        weights[order[0] if level <= ordered[0] else order[-1]] = 1.0
        return weights
    if level >= ordered[-1]:
        weights[order[-1]] = 1.0
        return weights
    upper = int(np.searchsorted(ordered, level, side="right"))
    share = (level - ordered[upper - 1]) / (ordered[upper] - ordered[upper - 1])
    weights[order[upper - 1]], weights[order[upper]] = 1.0 - share, share
    return weights


def transferred_step(genes: np.ndarray, models: Sequence[LocalModel], weights: np.ndarray,
                     width: np.ndarray) -> np.ndarray:  # fmt: skip
    """The model step for ``genes`` from the blended anchor models (moves summing to zero).

    Each model's slope is carried from its own centre to ``genes`` along its curvature
    (``g + 2 a (x - centre)``), so a member already moved where the model pointed gets a
    smaller step; slopes, curvatures and radii are then blended with ``weights``.
    """
    slope = np.zeros(len(genes))
    curvature = np.zeros(len(genes))
    radius = 0.0
    for (model_slope, model_curvature, centre, model_radius), weight in zip(models, weights):
        slope += weight * (model_slope + 2 * model_curvature * (genes - centre))
        curvature += weight * model_curvature
        radius += weight * model_radius
    return model_step(slope, curvature, radius * width)
