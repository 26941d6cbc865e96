"""Row allocation: exact counts, TRIM's mean and its never-worse-than-uniform guarantee."""

from __future__ import annotations

import pytest
import torch

from paretoprune.errors import InputError
from paretoprune.metrics.masks import keep_mask_from_scores
from paretoprune.metrics.row_allocation import (
    MAX_ROW_SPARSITY,
    ROW_ALLOCATIONS,
    _layer_quality,
    _to_mean,
    keep_mask_with_row_counts,
    row_counts,
    row_qualities,
    trim_row_sparsities,
)


def _layer(seed: int, rows: int = 24, width: int = 40, samples: int = 32):
    generator = torch.Generator().manual_seed(seed)
    # Rows of very different scales, inputs with a few loud channels: rows differ in how
    # much pruning hurts them, which is what TRIM exploits.
    weight = torch.randn(rows, width, generator=generator) * torch.logspace(-1, 1, rows)[:, None]
    inputs = torch.randn(samples, width, generator=generator) * torch.logspace(0, 1.5, width)[None, :]
    scores = weight.abs() * inputs.norm(dim=0)[None, :]  # Wanda's score
    return weight, scores, inputs


def test_row_counts_hit_the_total_exactly_within_bounds() -> None:
    sparsities = torch.tensor([0.0, 0.33, 0.5, 0.95, 1.2, -0.1])
    for total in (0, 7, 20, 31, 50):
        counts = row_counts(sparsities, 10, total)
        assert int(counts.sum()) == total and bool(((counts >= 0) & (counts <= 10)).all())


def test_mask_drops_each_rows_count_and_matches_uniform_masks() -> None:
    weight, scores, _ = _layer(0)
    counts = torch.arange(weight.shape[0]) % weight.shape[1]
    keep = keep_mask_with_row_counts(scores, counts)
    assert torch.equal((~keep).sum(dim=1), counts)
    kept_min = torch.where(keep, scores, torch.inf).min(dim=1).values
    dropped_max = torch.where(~keep, scores, -torch.inf).max(dim=1).values
    assert bool((kept_min >= dropped_max).all())  # the lowest scores go
    uniform = torch.full((weight.shape[0],), 20)
    assert torch.equal(keep_mask_with_row_counts(scores, uniform), keep_mask_from_scores(scores, 0.5, "row"))


def test_row_qualities_against_a_naive_loop() -> None:
    weight, scores, inputs = _layer(1)
    keep = keep_mask_from_scores(scores, 0.6, "row")
    fast = row_qualities(weight, keep, inputs)
    for row in range(weight.shape[0]):
        dense, pruned = inputs @ weight[row], inputs @ (weight[row] * keep[row])
        assert float(fast[row]) == pytest.approx(float(dense @ pruned / (dense.norm() * pruned.norm())), abs=1e-5)


def test_to_mean_is_exact_and_bounded() -> None:
    values = _to_mean(torch.tensor([0.99, 0.9, 0.1, -0.3, 0.7], dtype=torch.float64), 0.6)
    assert float(values.mean()) == pytest.approx(0.6, abs=1e-12)
    assert float(values.min()) >= 0.0 and float(values.max()) <= MAX_ROW_SPARSITY


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("target", [0.5, 0.8])
def test_trim_keeps_the_layer_count_and_never_loses_to_uniform_rows(seed: int, target: float) -> None:
    weight, scores, inputs = _layer(seed)
    width = weight.shape[1]
    sparsities = trim_row_sparsities(weight, scores, inputs, target)
    total = weight.shape[0] * round(target * width)
    keep = keep_mask_with_row_counts(scores, row_counts(sparsities, width, total))
    assert int((~keep).sum()) == total  # the layer's sparsity is exactly uniform rows' sparsity
    uniform = keep_mask_from_scores(scores, round(target * width) / width, "row")
    assert _layer_quality(weight, keep, inputs) >= _layer_quality(weight, uniform, inputs)


def test_trim_beats_uniform_rows_where_rows_differ() -> None:
    weight, scores, inputs = _layer(3)
    sparsities = trim_row_sparsities(weight, scores, inputs, 0.8)
    assert float(sparsities.std()) > 0  # it moved sparsity between rows
    keep = keep_mask_with_row_counts(scores, row_counts(sparsities, 40, 24 * 32))
    uniform = keep_mask_from_scores(scores, 0.8, "row")
    assert _layer_quality(weight, keep, inputs) > _layer_quality(weight, uniform, inputs)


def test_registry_and_bad_input() -> None:
    assert ROW_ALLOCATIONS.names() == ("uniform", "trim")
    assert ROW_ALLOCATIONS["trim"].needs_inputs and "N:M" not in ROW_ALLOCATIONS["trim"].structures
    weight, scores, inputs = _layer(0)
    with pytest.raises(InputError, match="inputs \\[n, 40\\]"):
        trim_row_sparsities(weight, scores, inputs[:, :10], 0.5)
    with pytest.raises(InputError, match="outside \\[0, 1\\]"):
        trim_row_sparsities(weight, scores, inputs, 1.2)


def test_a_layer_at_or_beyond_the_row_cap_keeps_uniform_rows() -> None:
    # A searched allocation may give a layer 0.99 (SmolLM2's 70 % sensitivity recipe does); every
    # row would sit at TRIM's cap, so there is nothing to move among them.
    weight, scores, inputs = _layer(0)
    for target in (MAX_ROW_SPARSITY, 0.99):
        assert torch.equal(trim_row_sparsities(weight, scores, inputs, target), torch.full((weight.shape[0],), target,
                                                                                          dtype=torch.float64))
