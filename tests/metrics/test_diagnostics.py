"""Diagnostics: ERank, top-k Kendall tau, energy and W1 against definitions computed by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from paretoprune.metrics.diagnostics import (
    effective_rank,
    energy,
    kendall_tau,
    topk_kendall_tau,
    wasserstein_1d,
)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# Effective rank


def _signed_basis_rows(counts: list[int], scales: list[float], dim: int) -> torch.Tensor:
    """For axis i, ``counts[i]`` copies of +scales[i] e_i and as many of -scales[i] e_i.

    The rows already have mean 0 and, once scaled to unit length, are +-e_i; the covariance is
    diagonal with entry 2 counts[i] / n on axis i, so its normalised spectrum is counts / sum.
    """
    rows = []
    for axis, (count, scale) in enumerate(zip(counts, scales)):
        row = torch.zeros(dim)
        row[axis] = scale
        rows += [row, -row] * count
    return torch.stack(rows)


def test_erank_of_k_equally_used_axes_is_k() -> None:
    for k in (1, 2, 5, 8):
        rows = _signed_basis_rows([3] * k, [0.5 + i for i in range(k)], dim=8)
        assert float(effective_rank(rows)) == pytest.approx(k, rel=1e-12)


def test_erank_of_unequally_used_axes_is_exp_of_their_entropy() -> None:
    rows = _signed_basis_rows([1, 3], [2.0, 7.0], dim=6)  # spectrum (1/4, 3/4)
    expected = math.exp(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    assert float(effective_rank(rows)) == pytest.approx(expected, rel=1e-12)
    # A rotation and a common shift of every row change nothing: both are undone by the definition.
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=_generator(0), dtype=torch.float64))
    moved = rows.double() @ rotation + torch.randn(6, generator=_generator(1), dtype=torch.float64)
    assert float(effective_rank(moved)) == pytest.approx(expected, rel=1e-10)


def test_erank_of_identical_rows_is_zero() -> None:
    assert float(effective_rank(torch.ones(5, 3))) == 0.0
    assert float(effective_rank(torch.randn(1, 4))) == 0.0


def _numpy_erank(rows: np.ndarray) -> float:
    centred = rows - rows.mean(axis=0)
    unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    eigenvalues = np.clip(np.linalg.eigvalsh(unit.T @ unit / len(unit)), 0.0, None)
    share = eigenvalues / eigenvalues.sum()
    share = share[share > 0]
    return float(np.exp(-(share * np.log(share)).sum()))


@pytest.mark.parametrize("shape", [(50, 8), (8, 50), (40, 40)])
def test_erank_equals_a_numpy_computation_on_random_data(shape: tuple[int, int]) -> None:
    # Correlated columns, so that the spectrum is far from flat.
    mixing = torch.randn(shape[1], shape[1], generator=_generator(3))
    rows = torch.randn(*shape, generator=_generator(2)) @ mixing
    got = float(effective_rank(rows))
    assert got == pytest.approx(_numpy_erank(rows.double().numpy()), rel=1e-9)
    assert 1.0 < got < min(shape[0] - 1, shape[1])


# ----------------------------------------------------------------------------------------------
# Kendall tau


def _naive_tau_b(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b by counting pairs."""
    concordant = discordant = tied_x = tied_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = x[i] - x[j], y[i] - y[j]
        if dx == 0 or dy == 0:
            tied_x += dx == 0
            tied_y += dy == 0
        elif (dx > 0) == (dy > 0):
            concordant += 1
        else:
            discordant += 1
    pairs = len(x) * (len(x) - 1) // 2
    return (concordant - discordant) / math.sqrt((pairs - tied_x) * (pairs - tied_y))


def _naive_topk_tau(reference: torch.Tensor, other: torch.Tensor, k: int) -> list[float]:
    taus = []
    for ref_row, other_row in zip(reference.tolist(), other.tolist()):
        top = sorted(range(len(ref_row)), key=lambda v: ref_row[v], reverse=True)[:k]
        taus.append(_naive_tau_b([ref_row[v] for v in top], [other_row[v] for v in top]))
    return taus


@pytest.mark.parametrize("k", [3, 10, 20])
def test_topk_tau_equals_a_naive_pair_count(k: int) -> None:
    dense = torch.randn(40, 300, generator=_generator(4))
    pruned = dense + 0.7 * torch.randn(40, 300, generator=_generator(5))
    got = topk_kendall_tau(dense, pruned, k)
    assert got.shape == (40,)
    assert got.tolist() == pytest.approx(_naive_topk_tau(dense, pruned, k), abs=1e-6)
    assert -1.0 < float(got.mean()) < 1.0  # neither trivially equal nor reversed


def test_topk_tau_is_one_for_identical_and_minus_one_for_reversed_order() -> None:
    dense = torch.randn(16, 100, generator=_generator(6))
    assert torch.equal(topk_kendall_tau(dense, dense.clone(), 10), torch.ones(16))
    assert torch.equal(topk_kendall_tau(dense, -dense, 10), -torch.ones(16))


def test_kendall_tau_handles_ties_as_tau_b_and_chunks_change_nothing() -> None:
    x = torch.tensor([[1.0, 2.0, 2.0, 3.0, 5.0], [4.0, 4.0, 4.0, 4.0, 4.0]])
    y = torch.tensor([[1.0, 3.0, 2.0, 2.0, 4.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    got = kendall_tau(x, y)
    assert float(got[0]) == pytest.approx(_naive_tau_b(x[0].tolist(), y[0].tolist()), abs=1e-7)
    assert float(got[1]) == 0.0  # all of x tied: no order to compare
    many_x = torch.randn(3, 7, 20, generator=_generator(7))
    many_y = torch.randn(3, 7, 20, generator=_generator(8))
    assert torch.equal(kendall_tau(many_x, many_y, chunk=4), kendall_tau(many_x, many_y))
    assert kendall_tau(many_x, many_y).shape == (3, 7)


# ----------------------------------------------------------------------------------------------
# Energy and W1


def test_energy_is_minus_logsumexp_per_position() -> None:
    logits = 5.0 * torch.randn(6, 4, 50, generator=_generator(9), dtype=torch.float64)
    expected = torch.tensor(
        [[-math.log(sum(math.exp(v) for v in row)) for row in block] for block in logits.tolist()],
        dtype=torch.float64,
    )
    torch.testing.assert_close(energy(logits), expected, rtol=1e-12, atol=1e-12)
    # Adding a constant to every logit of a position shifts its energy by minus that constant.
    torch.testing.assert_close(energy(logits + 3.0), energy(logits) - 3.0)


def _naive_w1(a: list[float], b: list[float]) -> float:
    """W1 as the integral of |F_a - F_b| over the real line (the CDFs, not the quantiles)."""
    points = sorted(a + b)
    total = 0.0
    for left, right in zip(points, points[1:]):
        cdf_a = sum(v <= left for v in a) / len(a)
        cdf_b = sum(v <= left for v in b) / len(b)
        total += abs(cdf_a - cdf_b) * (right - left)
    return total


def test_wasserstein_1d_equals_naive_computations() -> None:
    a = torch.randn(64, generator=_generator(10))
    b = 2.0 * torch.randn(64, generator=_generator(11)) + 0.3
    sorted_gap = float((a.double().sort().values - b.double().sort().values).abs().mean())
    assert float(wasserstein_1d(a, b)) == pytest.approx(sorted_gap, rel=1e-12)
    assert float(wasserstein_1d(a, b)) == pytest.approx(_naive_w1(a.tolist(), b.tolist()), rel=1e-9)
    # Unequal sizes have no sorted pairing; the CDF integral still applies.
    c = torch.randn(37, generator=_generator(12)) - 1.0
    assert float(wasserstein_1d(a, c)) == pytest.approx(_naive_w1(a.tolist(), c.tolist()), rel=1e-9)
    assert float(wasserstein_1d(c, a)) == pytest.approx(float(wasserstein_1d(a, c)), rel=1e-12)


def test_wasserstein_1d_of_a_shifted_copy_is_the_shift() -> None:
    a = torch.arange(10, dtype=torch.float64) * 0.25
    assert float(wasserstein_1d(a, a + 1.5)) == 1.5
    assert float(wasserstein_1d(a, a.flip(0))) == 0.0
