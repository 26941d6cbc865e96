"""Row allocation: how a layer's sparsity is shared among its output rows.

Uniform rows prune every row to the layer's target. TRIM (per-output-row sparsity) instead
moves sparsity toward the rows that pruning hurts least, judged by how well each row's output
survives on calibration inputs, and keeps the layer's mean exact:

    x = T for every row
    repeat R rounds:
        q_i  = cos(W_i X, (M_i * W_i) X)            quality of row i under its current mask
        d    = (q - min q) / (max q - min q), centred to zero mean
        x   += 2 * lr * d                           better kept rows take more sparsity
        x    = clip(x, 0, 0.95), moved back to mean T
    keep the round whose whole-layer output cosine is highest (uniform rows are round 0)

``X`` are calibration inputs of the layer (TRIM uses each sequence's last token). A small sweep
over ``lr`` picks the best; negative rates are tried only when no positive one beats uniform
rows. Everything here is pure tensor math: the caller gathers ``X`` and applies the masks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from paretoprune.errors import InputError
from paretoprune.metrics.masks import pruned_count
from paretoprune.registry import Registry

__all__ = [
    "ROW_ALLOCATIONS",
    "RowAllocation",
    "TrimSettings",
    "allocated_row_counts",
    "keep_mask_with_row_counts",
    "row_counts",
    "row_qualities",
    "trim_row_sparsities",
    "uniform_row_sparsities",
]

MAX_ROW_SPARSITY = 0.95  # no row is pruned beyond this: a row with nothing left says nothing


@dataclass(frozen=True)
class TrimSettings:
    rounds: int = 10  # TRIM's iterations per learning rate
    learning_rates: tuple[float, ...] = (0.01, 0.02, 0.04, 0.08, 0.16)  # swept in order
    # Tried only when no positive rate beats uniform rows.
    negative_rates: tuple[float, ...] = (-0.01, -0.02, -0.04)


# ------------------------------------------------------------------------------------------------
# Counts and masks


def row_counts(sparsities: torch.Tensor, in_features: int, total_pruned: int) -> torch.Tensor:
    """Weights to prune per row: ``sparsities * in_features`` rounded so that they sum to
    ``total_pruned`` exactly (largest remainders first) and stay within ``[0, in_features]``."""
    raw = sparsities.double().clamp(0, 1) * in_features
    counts = raw.floor().long()
    if not 0 <= total_pruned <= in_features * len(counts):
        raise ValueError(f"{total_pruned} pruned weights do not fit {len(counts)} rows of {in_features}")
    short = int(total_pruned - counts.sum())
    while short != 0:  # one weight more (or less) for the rows nearest to rounding that way
        step = 1 if short > 0 else -1
        movable = counts < in_features if step > 0 else counts > 0
        priority = torch.where(movable, (raw - counts) * step, torch.full_like(raw, -math.inf))
        chosen = torch.topk(priority, min(abs(short), int(movable.sum()))).indices
        counts[chosen] += step
        short -= step * len(chosen)
    return counts


def keep_mask_with_row_counts(scores: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    """Keep mask [out, in]: row i drops its ``pruned[i]`` lowest scores (ties by position)."""
    return _keep_by_ranks(_ranks_in_rows(scores), pruned)


def _ranks_in_rows(scores: torch.Tensor) -> torch.Tensor:
    """Each weight's rank within its row, lowest score first (ties by position)."""
    order = torch.argsort(scores.float(), dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return ranks


def _keep_by_ranks(ranks: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    return ranks >= pruned.to(ranks.device)[:, None]


# ------------------------------------------------------------------------------------------------
# Quality


def row_qualities(weight: torch.Tensor, keep: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Cosine, per output row, between the dense and the pruned row's outputs on ``inputs``
    [n, in]; a row whose dense output is zero counts as perfectly kept (1)."""
    return _row_cosines(_outputs(weight, inputs), _outputs(weight, inputs, keep))


def _layer_quality(weight: torch.Tensor, keep: torch.Tensor, inputs: torch.Tensor) -> float:
    return _layer_cosine(_outputs(weight, inputs), _outputs(weight, inputs, keep))


def _outputs(weight: torch.Tensor, inputs: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """The layer's outputs [n, out] on ``inputs``, with only the ``keep`` weights if given."""
    matrix = weight.float() if keep is None else weight.float() * keep
    return inputs.float() @ matrix.t()


def _row_cosines(dense: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    cosine = torch.nn.functional.cosine_similarity(dense, pruned, dim=0, eps=1e-12)
    silent = dense.abs().sum(dim=0) == 0
    return torch.where(silent, torch.ones_like(cosine), cosine)


def _layer_cosine(dense: torch.Tensor, pruned: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(dense.flatten(), pruned.flatten(), dim=0, eps=1e-12))


# ------------------------------------------------------------------------------------------------
# TRIM


def _centred_step(qualities: torch.Tensor) -> torch.Tensor:
    low, high = qualities.min(), qualities.max()
    if float(high - low) <= 0.0:
        return torch.zeros_like(qualities)
    scaled = (qualities - low) / (high - low)
    return scaled - scaled.mean()


def _to_mean(sparsities: torch.Tensor, target: float) -> torch.Tensor:
    """Clip to [0, MAX_ROW_SPARSITY] and shift the free rows until the mean is ``target``."""
    values = sparsities.double().clamp(0.0, MAX_ROW_SPARSITY)
    for _ in range(50):  # each pass pins rows at a bound; few passes are ever needed
        gap = target - float(values.mean())
        if abs(gap) < 1e-12:
            break
        free = (values < MAX_ROW_SPARSITY) if gap > 0 else (values > 0.0)
        if not bool(free.any()):
            break
        values = torch.where(free, values + gap * len(values) / int(free.sum()), values)
        values = values.clamp(0.0, MAX_ROW_SPARSITY)
    return values


def uniform_row_sparsities(rows: int, target: float) -> torch.Tensor:
    return torch.full((rows,), float(target), dtype=torch.float64)


def trim_row_sparsities(
    weight: torch.Tensor,
    scores: torch.Tensor,
    inputs: torch.Tensor,
    target: float,
    settings: TrimSettings = TrimSettings(),
) -> torch.Tensor:
    """TRIM's per-row sparsities for one layer [out, in] at mean ``target``; never worse than
    uniform rows by the whole layer's output cosine on ``inputs`` (uniform is the fallback)."""
    if weight.shape != scores.shape or inputs.dim() != 2 or inputs.shape[1] != weight.shape[1]:
        raise InputError(f"TRIM needs scores of the weight's shape {tuple(weight.shape)} and inputs [n, {weight.shape[1]}]")
    if not 0.0 <= target <= 1.0:
        raise InputError(f"TRIM's layer sparsity {target} is outside [0, 1]")
    rows, width = weight.shape
    if target >= MAX_ROW_SPARSITY:  # rows are capped there: no room to move sparsity among them
        return uniform_row_sparsities(rows, target)
    total = rows * round(target * width)  # what uniform rows prune, kept exactly
    evaluate = _scorer(weight, scores, inputs, width, total)
    best = uniform_row_sparsities(rows, target)
    best_quality = evaluate(best)[0]
    uniform_quality = best_quality
    for rates in (settings.learning_rates, settings.negative_rates):
        previous = -math.inf
        for lr in rates:
            candidate, quality = _trim_at_rate(evaluate, best.new_full((rows,), target), target, lr, settings.rounds)
            if quality > best_quality:
                best, best_quality = candidate, quality
            if quality < previous:  # early stop: a larger rate made it worse
                break
            previous = quality
        if best_quality > uniform_quality:  # a positive rate helped: no negative ones
            break
    return best


def _scorer(
    weight: torch.Tensor, scores: torch.Tensor, inputs: torch.Tensor, width: int, total: int
) -> Callable[[torch.Tensor], tuple[float, torch.Tensor]]:
    """Layer quality and per-row qualities of a row-sparsity vector (masks made from scores).

    The rounds try dozens of vectors per layer: the ranks and the dense outputs, which do not
    depend on the vector, are computed once here rather than once per vector.
    """
    ranks, dense = _ranks_in_rows(scores), _outputs(weight, inputs)

    def evaluate(sparsities: torch.Tensor) -> tuple[float, torch.Tensor]:
        keep = _keep_by_ranks(ranks, row_counts(sparsities, width, total))
        pruned = _outputs(weight, inputs, keep)
        return _layer_cosine(dense, pruned), _row_cosines(dense, pruned)

    return evaluate


def _trim_at_rate(
    evaluate: Callable[[torch.Tensor], tuple[float, torch.Tensor]],
    start: torch.Tensor,
    target: float,
    lr: float,
    rounds: int,
) -> tuple[torch.Tensor, float]:
    """TRIM's rounds at one learning rate; the best round (by layer quality) and its quality."""
    sparsities = start
    quality, qualities = evaluate(sparsities)
    best, best_quality = sparsities, quality
    for _ in range(rounds):
        sparsities = _to_mean(sparsities + 2 * lr * _centred_step(qualities.double()), target)
        quality, qualities = evaluate(sparsities)
        if quality > best_quality:
            best, best_quality = sparsities, quality
    return best, best_quality


# ------------------------------------------------------------------------------------------------
# The registry of row allocations


@dataclass(frozen=True)
class RowAllocation:
    """``allocate(weight, scores, inputs, target) -> per-row sparsities``; ``needs_inputs``:
    whether it reads calibration inputs of the layer (``inputs`` may be None otherwise)."""

    allocate: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, float], torch.Tensor]
    needs_inputs: bool
    structures: Sequence[str] = ("unstructured",)  # what it can do; N:M fixes every row already


ROW_ALLOCATIONS: Registry[RowAllocation] = Registry("row allocation", option="--rows")
ROW_ALLOCATIONS.register(
    "uniform", RowAllocation(lambda weight, scores, inputs, target: uniform_row_sparsities(weight.shape[0], target),
                             needs_inputs=False, structures=("unstructured", "N:M")),
    summary="every row of a layer at the layer's sparsity",
)  # fmt: skip
ROW_ALLOCATIONS.register(
    "trim", RowAllocation(lambda weight, scores, inputs, target: trim_row_sparsities(weight, scores, inputs, target),
                          needs_inputs=True),
    summary="TRIM: rows whose outputs survive pruning best take more of the layer's sparsity (unstructured)",
)  # fmt: skip


def allocated_row_counts(
    rows: str, weight: torch.Tensor, scores: torch.Tensor, inputs: torch.Tensor | None, sparsity: float
) -> torch.Tensor:
    """Weights each row of one layer [out, in] loses under the row allocation named ``rows`` at
    the layer's ``sparsity``: as many in all as uniform rows lose, so the layer's sparsity holds."""
    per_row = ROW_ALLOCATIONS.lookup(rows).allocate(weight, scores, inputs, sparsity)
    total = weight.shape[0] * pruned_count(weight.shape[1], sparsity)
    return row_counts(per_row, weight.shape[1], total)
