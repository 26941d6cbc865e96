"""Allocations: exact weighted means within bounds, OWL, and the search's genome mapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paretoprune.errors import InputError
from paretoprune.metrics.allocation import (
    block_totals,
    expand_block_genes,
    genes_from_sparsities,
    outlier_ratio,
    owl_block_sparsities,
    repair_to_mean,
    sparsities_from_genes,
    uniform_sparsities,
    weighted_mean,
)

# Six SmolLM2-135M-like blocks of seven linears.
BLOCK_SHAPES = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]
LINEAR_SIZES = np.array([out * width for out, width in BLOCK_SHAPES] * 6, dtype=float)
BLOCK_OF_LINEAR = np.repeat(np.arange(6), 7)


def uneven_weights(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1_000, 900_000, size=count).astype(float)


# ----------------------------------------------------------------------------------------------
# repair_to_mean.


@pytest.mark.parametrize("target", [0.0, 0.1, 0.5, 0.73, 0.9])
def test_repair_hits_the_weighted_mean_within_bounds(target: float) -> None:
    rng = np.random.default_rng(1)
    values = rng.uniform(-0.5, 1.5, size=40)
    weights = uneven_weights(40)
    lower = rng.uniform(0.0, 0.1, size=40) * (target > 0)
    upper = np.full(40, 0.95)
    repaired = repair_to_mean(values, weights, target, lower, upper)
    assert abs(weighted_mean(repaired, weights) - target) < 1e-9
    assert np.all(repaired >= lower) and np.all(repaired <= upper)


def test_repair_is_a_common_shift_where_nothing_is_clipped() -> None:
    values = np.array([0.40, 0.50, 0.55, 0.70])
    repaired = repair_to_mean(values, [1, 2, 3, 4], 0.6, 0.0, 0.99)
    shifts = repaired - values
    assert np.allclose(shifts, shifts[0], atol=1e-12) and shifts[0] > 0


def test_repair_leaves_an_exact_allocation_alone() -> None:
    values = np.array([0.3, 0.7])
    assert np.allclose(repair_to_mean(values, [1, 1], 0.5, 0.0, 0.99), values, atol=1e-12)


def test_unreachable_target_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unreachable"):
        repair_to_mean([0.5, 0.5], [1, 1], 0.95, 0.0, 0.9)
    with pytest.raises(InputError, match="unreachable"):
        repair_to_mean([0.5, 0.5], [1, 1], 0.05, [0.1, 0.2], 0.9)


@pytest.mark.parametrize(
    ("values", "weights"),
    [([0.5, 0.5], [1]), ([0.5], [0]), ([0.5, 0.4], [1, -1]), ([], []), ([0.5, float("nan")], [1, 1])],
)
def test_malformed_allocations_are_input_errors(values: list, weights: list) -> None:
    with pytest.raises(InputError):
        repair_to_mean(values, weights, 0.5, 0.0, 0.99)


def test_uniform() -> None:
    assert uniform_sparsities(3, 0.6).tolist() == [0.6, 0.6, 0.6]
    with pytest.raises(InputError):
        uniform_sparsities(3, 1.0)


# ----------------------------------------------------------------------------------------------
# OWL.


def test_outlier_ratio_by_hand() -> None:
    # Mean 10.9, so only 100 lies above 5 * mean = 54.5: one in ten.
    scores = torch.tensor([[1.0] * 9 + [100.0]])
    assert outlier_ratio(scores) == pytest.approx(0.1)
    assert outlier_ratio(scores, m=10.0) == 0.0
    assert outlier_ratio(torch.ones(4, 4)) == 0.0


def test_outlier_ratio_of_a_block_pools_its_linears() -> None:
    parts = [torch.rand(8, 16), torch.rand(4, 16) * 30, torch.rand(8, 4)]
    pooled = torch.cat([part.flatten() for part in parts])
    assert outlier_ratio(parts, m=3.0) == pytest.approx(outlier_ratio(pooled, m=3.0))
    with pytest.raises(InputError):
        outlier_ratio([])


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
def test_owl_has_the_exact_weighted_mean_and_the_right_order(target: float) -> None:
    ratios = np.array([0.010, 0.030, 0.005, 0.020, 0.012, 0.008])
    weights = block_totals(LINEAR_SIZES * np.linspace(0.5, 1.5, 42), BLOCK_OF_LINEAR)
    sparsities = owl_block_sparsities(ratios, weights, target)
    assert abs(weighted_mean(sparsities, weights) - target) < 1e-6
    # More outliers, more weights kept.
    assert np.array_equal(np.argsort(sparsities), np.argsort(-ratios))
    # Without clipping the spread is exactly 2 * lambda.
    assert sparsities.max() - sparsities.min() == pytest.approx(0.16)


def test_owl_matches_the_paper_recipe_with_equal_blocks() -> None:
    # OWL's own code: densities ranged over [0, 2*lam], minus their plain mean, plus 1 - target.
    ratios = np.array([0.02, 0.05, 0.01, 0.03])
    spread = (ratios - ratios.min()) / (ratios.max() - ratios.min()) * 0.2
    expected = 1.0 - (spread - spread.mean() + (1.0 - 0.6))
    assert np.allclose(owl_block_sparsities(ratios, np.ones(4), 0.6, lam=0.1), expected, atol=1e-9)


def test_owl_respects_bounds_near_zero_target() -> None:
    ratios = np.array([0.0, 0.01, 0.05, 0.02])
    sparsities = owl_block_sparsities(ratios, [1, 2, 3, 4], 0.05, lam=0.08)
    assert np.all(sparsities >= 0.0)
    assert abs(weighted_mean(sparsities, [1, 2, 3, 4]) - 0.05) < 1e-6


def test_owl_with_equal_ratios_is_uniform() -> None:
    assert np.allclose(owl_block_sparsities([0.02] * 5, [1, 2, 3, 4, 5], 0.5), 0.5)


# ----------------------------------------------------------------------------------------------
# Genomes.


@pytest.mark.parametrize(("target", "delta"), [(0.5, 0.2), (0.1, 0.3), (0.9, 0.2), (0.6, 0.0)])
def test_genes_map_to_the_exact_mean_within_the_band(target: float, delta: float) -> None:
    rng = np.random.default_rng(2)
    weights = uneven_weights(42, seed=3)
    for _ in range(20):
        genes = rng.uniform(-1.0, 1.0, size=42)
        sparsities = sparsities_from_genes(genes, weights, target, delta)
        assert abs(weighted_mean(sparsities, weights) - target) < 1e-6
        assert sparsities.min() >= max(0.0, target - delta) - 1e-12
        assert sparsities.max() <= min(0.99, target + delta) + 1e-12


def test_zero_genes_are_uniform_and_genes_are_monotone() -> None:
    weights = uneven_weights(10)
    assert np.allclose(sparsities_from_genes(np.zeros(10), weights, 0.5, 0.2), 0.5)
    genes = np.linspace(-1, 1, 10)
    assert np.all(np.diff(sparsities_from_genes(genes, weights, 0.5, 0.2)) >= 0)


def test_genes_outside_the_range_are_clipped() -> None:
    weights = np.ones(4)
    wild = sparsities_from_genes([-7.0, 3.0, 0.0, 0.0], weights, 0.5, 0.1)
    tame = sparsities_from_genes([-1.0, 1.0, 0.0, 0.0], weights, 0.5, 0.1)
    assert np.allclose(wild, tame)


def test_known_allocations_round_trip_through_genes() -> None:
    weights = block_totals(LINEAR_SIZES, BLOCK_OF_LINEAR)
    owl = owl_block_sparsities([0.01, 0.03, 0.005, 0.02, 0.012, 0.008], weights, 0.6)
    delta = 0.2  # at least the allocation's largest distance from the target
    genes = genes_from_sparsities(owl, 0.6, delta)
    assert np.all(np.abs(genes) <= 1.0)
    assert np.allclose(sparsities_from_genes(genes, weights, 0.6, delta), owl, atol=1e-9)
    uniform = uniform_sparsities(6, 0.6)
    assert np.allclose(genes_from_sparsities(uniform, 0.6, delta), 0.0)


def test_block_genes_expand_to_linears_with_the_same_weighted_mean() -> None:
    weights = block_totals(LINEAR_SIZES, BLOCK_OF_LINEAR)
    assert weights.tolist() == [LINEAR_SIZES[:7].sum()] * 6
    block_sparsities = sparsities_from_genes(np.linspace(-1, 1, 6), weights, 0.55, 0.15)
    per_linear = expand_block_genes(block_sparsities, BLOCK_OF_LINEAR)
    assert per_linear.shape == (42,)
    assert np.all(per_linear[7:14] == block_sparsities[1])
    assert abs(weighted_mean(per_linear, LINEAR_SIZES) - 0.55) < 1e-9
    with pytest.raises(InputError):
        expand_block_genes(block_sparsities, [0, 6])


def test_target_outside_the_layer_bounds_is_an_input_error() -> None:
    with pytest.raises(InputError, match="outside"):
        sparsities_from_genes([0.0, 0.0], [1, 1], 0.995, 0.1)
