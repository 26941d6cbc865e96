"""Per-layer sparsity allocations: uniform, OWL, and the search's genome mapping.

An allocation gives each prunable unit (a decoder block or a single linear) its own sparsity while
the sparsity of the whole model, weighted by parameter count, stays at the target. Everything
here works on plain numpy float64 vectors in the order the caller chose; ``weights`` are the
parameter counts of the units.

The one invariant: :func:`repair_to_mean` brings any proposal back to the exact weighted mean by a
common shift, clipped to per-unit bounds, so two allocations at "60 %" really prune the same
number of weights (before the per-row rounding of :mod:`paretoprune.metrics.masks`).

Granularity: a genome may hold one gene per block or one per linear. Per block, map the genes to
block sparsities with the blocks' parameter totals as weights (:func:`block_totals`), then
:func:`expand_block_genes` gives every linear its block's value; the weighted mean over linears
is then the same as over blocks.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from paretoprune.errors import InputError

__all__ = [
    "block_totals",
    "expand_block_genes",
    "genes_from_sparsities",
    "outlier_ratio",
    "owl_block_sparsities",
    "repair_to_mean",
    "sparsities_from_genes",
    "uniform_sparsities",
    "weighted_mean",
]

# Bisection stops once the weighted mean is this close to the target (far below the 1e-6 promise).
_MEAN_TOLERANCE = 1e-12
_BISECTION_STEPS = 200
ArrayLike = Sequence[float] | np.ndarray


# ----------------------------------------------------------------------------------------------
# The exact weighted mean.


def weighted_mean(values: ArrayLike, weights: ArrayLike) -> float:
    """sum(w * v) / sum(w)."""
    values_ = _vector("values", values)
    weights_ = _checked_weights(weights, values_.size)
    return float(np.dot(values_, weights_) / weights_.sum())


def repair_to_mean(
    values: ArrayLike,
    weights: ArrayLike,
    target: float,
    lower: float | ArrayLike = 0.0,
    upper: float | ArrayLike = 0.99,
) -> np.ndarray:
    """``clip(values + t, lower, upper)`` with the common shift ``t`` that makes the weighted mean
    equal ``target`` (within 1e-6; in practice 1e-12).

    The mean is non-decreasing in ``t``, so bisection finds it. Raises InputError if even all
    units at ``lower`` (or all at ``upper``) cannot reach the target.
    """
    values_ = _vector("values", values)
    weights_ = _checked_weights(weights, values_.size)
    low, high = _bounds(lower, upper, values_.size)
    target = _finite("target", target)

    def mean_at(shift: float) -> float:
        return float(np.dot(np.clip(values_ + shift, low, high), weights_) / weights_.sum())

    shift_low, shift_high = float(np.min(low - values_)), float(np.max(high - values_))
    _check_reachable(target, mean_at(shift_low), mean_at(shift_high))
    shift = _bisect(mean_at, target, shift_low, shift_high)
    return np.clip(values_ + shift, low, high)


def _check_reachable(target: float, lowest: float, highest: float) -> None:
    if not lowest - 1e-12 <= target <= highest + 1e-12:
        raise InputError(
            f"target sparsity {target:g} is unreachable: within the per-layer bounds the weighted "
            f"mean can only lie in [{lowest:.6g}, {highest:.6g}]; widen the bounds or change the target"
        )


def _bisect(mean_at: Callable[[float], float], target: float, low: float, high: float) -> float:
    """The shift in [low, high] whose mean is the target, for a non-decreasing ``mean_at``."""
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        error = mean_at(middle) - target
        if abs(error) <= _MEAN_TOLERANCE or middle in (low, high):
            return middle
        if error < 0:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


# ----------------------------------------------------------------------------------------------
# Known allocations.


def uniform_sparsities(count: int, target: float) -> np.ndarray:
    """Every one of ``count`` units at ``target``."""
    if count < 1:
        raise InputError(f"an allocation needs at least one layer, got {count}")
    return np.full(count, _fraction("target sparsity", target))


def outlier_ratio(scores: torch.Tensor | Sequence[torch.Tensor], m: float = 5.0) -> float:
    """Fraction of scores above ``m`` times their mean (OWL's layer outlier ratio, as a fraction).

    Given several tensors (the linears of one block, as OWL does) the mean and the fraction are
    taken over all of them together.
    """
    parts = [scores] if isinstance(scores, torch.Tensor) else list(scores)
    count = sum(part.numel() for part in parts)
    if count == 0:
        raise InputError("outlier ratio of no scores: give at least one non-empty score tensor")
    mean = sum(float(part.detach().sum(dtype=torch.float64)) for part in parts) / count
    outliers = sum(int((part.detach() > m * mean).sum()) for part in parts)
    return outliers / count


def owl_block_sparsities(
    outlier_ratios: ArrayLike,
    block_weights: ArrayLike,
    target: float,
    lam: float = 0.08,
    lower: float = 0.0,
    upper: float = 0.99,
) -> np.ndarray:
    """OWL (Yin et al. 2024): blocks with more outliers keep more weights.

    Densities are ranged proportionally to the outlier ratios over [0, 2 * lam], then shifted so
    the parameter-weighted mean sparsity is exactly ``target`` (OWL's own code uses the plain
    mean; with blocks of equal size the two agree).
    """
    ratios = _vector("outlier_ratios", outlier_ratios)
    lam = _finite("lam", lam)
    if lam < 0:
        raise InputError(f"OWL lambda must be >= 0, got {lam}")
    span = float(ratios.max() - ratios.min())
    spread = (ratios - ratios.min()) / span * (2 * lam) if span > 0 else np.zeros_like(ratios)
    sparsities = _fraction("target sparsity", target) - (spread - weighted_mean(spread, block_weights))
    return repair_to_mean(sparsities, block_weights, target, lower, upper)


# ----------------------------------------------------------------------------------------------
# Genomes of the search.


def sparsities_from_genes(
    genes: ArrayLike,
    weights: ArrayLike,
    target: float,
    delta: float,
    lower: float = 0.0,
    upper: float = 0.99,
) -> np.ndarray:
    """Genes in [-1, 1] to sparsities ``target + delta * g``, at the exact weighted mean.

    Each sparsity stays within [max(lower, target - delta), min(upper, target + delta)]. Genes
    outside [-1, 1] are clipped (that range is all the bounds allow anyway).
    """
    target, delta = _finite("target", target), _finite("delta", delta)
    if not lower <= target <= upper:
        raise InputError(f"target sparsity {target:g} lies outside the layer bounds [{lower:g}, {upper:g}]")
    if delta < 0:
        raise InputError(f"delta must be >= 0, got {delta}")
    low, high = max(lower, target - delta), min(upper, target + delta)
    proposal = np.clip(target + delta * np.clip(_vector("genes", genes), -1.0, 1.0), low, high)
    return repair_to_mean(proposal, weights, target, low, high)


def genes_from_sparsities(sparsities: ArrayLike, target: float, delta: float) -> np.ndarray:
    """The genes whose mapping gives ``sparsities`` back (exactly when they lie within
    ``target +- delta`` and the layer bounds and have the target weighted mean)."""
    values = _vector("sparsities", sparsities)
    target, delta = _finite("target", target), _finite("delta", delta)
    if delta <= 0:
        return np.zeros_like(values)
    return np.clip((values - target) / delta, -1.0, 1.0)


def expand_block_genes(
    block_values: ArrayLike, block_index_of_linear: Sequence[int] | np.ndarray
) -> np.ndarray:
    """Per-block values to per-linear values: linear i gets ``block_values[block_index_of_linear[i]]``."""
    values = _vector("block_values", block_values)
    index = np.asarray(block_index_of_linear, dtype=np.int64)
    if index.size and (index.min() < 0 or index.max() >= values.size):
        raise InputError(f"block indices must lie in [0, {values.size}), got {index.min()}..{index.max()}")
    return values[index]


def block_totals(
    linear_weights: ArrayLike, block_index_of_linear: Sequence[int] | np.ndarray, blocks: int | None = None
) -> np.ndarray:
    """Parameter count of each block: the sum of its linears' counts (the weights of block genes)."""
    index = np.asarray(block_index_of_linear, dtype=np.int64)
    counts = _vector("linear_weights", linear_weights)
    if index.shape != counts.shape:
        raise InputError(f"{counts.size} linear weights but {index.size} block indices")
    return np.bincount(index, weights=counts, minlength=blocks or 0).astype(np.float64)


# ----------------------------------------------------------------------------------------------
# Checks.


def _vector(name: str, values: ArrayLike) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise InputError(f"{name} is empty; give one value per layer")
    if not np.all(np.isfinite(array)):
        raise InputError(f"{name} contains NaN or inf; give finite numbers")
    return array


def _checked_weights(weights: ArrayLike, size: int) -> np.ndarray:
    array = _vector("weights", weights)
    if array.size != size:
        raise InputError(f"{array.size} weights for {size} values; give one parameter count per layer")
    if np.any(array < 0) or array.sum() <= 0:
        raise InputError("weights (parameter counts) must be >= 0 with a positive total")
    return array


def _bounds(lower: float | ArrayLike, upper: float | ArrayLike, size: int) -> tuple[np.ndarray, np.ndarray]:
    low = np.broadcast_to(np.asarray(lower, dtype=np.float64), (size,))
    high = np.broadcast_to(np.asarray(upper, dtype=np.float64), (size,))
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))) or np.any(low > high):
        raise InputError("per-layer bounds must be finite with lower <= upper")
    return low, high


def _finite(name: str, value: float) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise InputError(f"{name} must be finite, got {value!r}")
    return number


def _fraction(name: str, value: float) -> float:
    number = _finite(name, value)
    if not 0.0 <= number < 1.0:
        raise InputError(f"{name} must lie in [0, 1), got {value!r}")
    return number
