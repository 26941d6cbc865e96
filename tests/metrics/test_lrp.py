"""The AttnLRP rules: each modified gradient computes its rule, checked against the rule written out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paretoprune.metrics.lrp import (
    EpsilonGrad,
    IdentityRule,
    constant_denominator,
    epsilon_rule,
    epsilon_weight_relevance,
    global_ranking_sparsities,
    half_rule,
    scale_grad,
    softmax_rule,
    stabilised,
    weight_relevance,
)


def _naive_weight_relevance(x: np.ndarray, weight: np.ndarray, relevance: np.ndarray, eps: float) -> np.ndarray:
    """R_ij = sum_t W_ij x_tj R_ti / (z_ti + eps sign z_ti), one multiply at a time."""
    out = np.zeros_like(weight)
    for t in range(x.shape[0]):
        for i in range(weight.shape[0]):
            z = sum(weight[i, j] * x[t, j] for j in range(weight.shape[1]))
            denominator = z + (eps if z >= 0 else -eps)
            for j in range(weight.shape[1]):
                out[i, j] += weight[i, j] * x[t, j] * relevance[t, i] / denominator
    return out


def _data(seed: int = 0, tokens: int = 5, inputs: int = 4, outputs: int = 3) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, inputs, generator=generator, dtype=torch.float64)
    weight = torch.randn(outputs, inputs, generator=generator, dtype=torch.float64)
    relevance = torch.randn(tokens, outputs, generator=generator, dtype=torch.float64)
    return x, weight, relevance


@pytest.mark.parametrize("eps", [1e-6, 0.5])
def test_the_epsilon_rule_of_one_linear_matches_a_naive_loop(eps: float) -> None:
    x, weight, relevance = _data()
    naive = _naive_weight_relevance(x.numpy(), weight.numpy(), relevance.numpy(), eps)
    ours = epsilon_weight_relevance(x, weight, relevance, eps=eps)
    np.testing.assert_allclose(ours.numpy(), naive, rtol=1e-10, atol=1e-12)
    # Summed over a weight's row, its relevance is what the rule passes on to the inputs.
    np.testing.assert_allclose(ours.sum().item(), epsilon_rule(x, weight, relevance, eps=eps).sum().item(), rtol=1e-10)


@pytest.mark.parametrize("bias", [False, True])
def test_a_linear_with_the_epsilon_gradient_computes_the_epsilon_rule(bias: bool) -> None:
    x, weight, upstream = _data(1)
    b = torch.randn(weight.shape[0], dtype=torch.float64) if bias else None
    x = x.requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    z = torch.nn.functional.linear(x, w, b)
    eps = 1e-3
    EpsilonGrad.apply(z, eps).backward(upstream)  # upstream is the gradient g: R_z = z * g
    relevance = z.detach() * upstream
    expected_in = epsilon_rule(x.detach(), weight, relevance, b, eps=eps)
    torch.testing.assert_close(x * x.grad, expected_in)
    torch.testing.assert_close(weight_relevance(weight, w.grad), epsilon_weight_relevance(x.detach(), weight, relevance, b, eps))
    # Conservation up to what the bias and the epsilon absorb: z - b of z reaches the inputs,
    # divided by z + eps instead of z.
    z = z.detach()
    kept = (relevance * (z - (0 if b is None else b)) / stabilised(z, eps)).sum()
    torch.testing.assert_close((x * x.grad).sum(), kept)
    if b is None:  # only the epsilon's share is missing: at most eps / |z| of each output's relevance
        bound = (relevance.abs() * eps / z.abs()).sum().item()
        assert abs(kept.item() - relevance.sum().item()) <= bound


def test_the_identity_rule_hands_relevance_through_an_activation() -> None:
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.silu(x)
    upstream = torch.randn_like(y)
    IdentityRule.apply(x, y, 1e-12).backward(upstream)
    torch.testing.assert_close(x * x.grad, y.detach() * upstream)


def test_halving_the_gradient_of_a_product_is_the_uniform_rule() -> None:
    a = torch.randn(7, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(7, dtype=torch.float64)
    scale_grad(a * b, 0.5).backward(upstream)
    relevance = (a * b).detach() * upstream
    share_a, share_b = half_rule(a.detach(), b.detach(), relevance)
    torch.testing.assert_close(a * a.grad, share_a)
    torch.testing.assert_close(b * b.grad, share_b)


def test_gradient_times_input_through_a_softmax_is_the_softmax_rule() -> None:
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    s = torch.softmax(x, dim=-1)
    upstream = torch.randn_like(s)
    s.backward(upstream)
    torch.testing.assert_close(x * x.grad, softmax_rule(x.detach(), s.detach() * upstream))


def test_a_norm_with_a_constant_denominator_conserves_relevance() -> None:
    x = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(8, dtype=torch.float64)
    scale = weight * torch.rsqrt(x.detach().pow(2).mean(-1, keepdim=True) + 1e-6)
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * weight
    upstream = torch.randn_like(y)
    out = constant_denominator(x, y, scale)
    assert torch.equal(out, y)  # the forward value is untouched
    out.backward(upstream)
    torch.testing.assert_close(x * x.grad, y.detach() * upstream)


def test_the_global_ranking_prunes_the_least_relevant_weights_of_all_layers() -> None:
    low = torch.arange(100, dtype=torch.float32).reshape(10, 10)  # every score below the next layer's
    high = 1000 + torch.arange(300, dtype=torch.float32).reshape(10, 30)
    sparsities = global_ranking_sparsities([low, high], 0.2)  # 80 of 400 weights: all in ``low``
    np.testing.assert_allclose(sparsities, [0.8, 0.0], atol=1e-9)
    # Asked for more than ``low`` holds, the ranking would prune it whole: it stops at the cap and
    # the weighted mean is still exact.
    capped = global_ranking_sparsities([low, high], 0.5, upper=0.9)
    assert capped[0] == pytest.approx(0.9)
    assert (capped * [100, 300]).sum() / 400 == pytest.approx(0.5, abs=1e-9)
