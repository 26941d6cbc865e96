"""The propagation rules of Layer-wise Relevance Propagation (LRP) for transformers (AttnLRP).

LRP explains an output ``f`` by handing its value, the relevance, back through the network one
operation at a time, each with a rule that (nearly) conserves it: the relevances of an
operation's inputs sum to the relevance of its output. This module holds the rules as small pure
functions and, for each, the modified gradient that computes it inside one ordinary backward
pass ("gradient x input": the relevance of a tensor ``a`` is ``a * grad_a`` when every operation
between ``a`` and ``f`` passes back its rule's modified gradient instead of the true one).

The rules (AttnLRP, Achtibat et al., ICML 2024):

- **epsilon rule**, for a linear ``z = W x + b``: ``R_x_j = sum_i x_j W_ij R_i / (z_i + eps)``,
  where ``eps`` carries the sign of ``z``, so a tiny ``z`` cannot blow the ratio up. A weight's
  own share is ``R_W_ij = W_ij x_j R_i / (z_i + eps)``, summed over tokens. As a modified
  gradient: multiply the gradient arriving at ``z`` by ``z / (z + eps)``, then back through the
  linear as usual (:class:`EpsilonGrad`); ``W * W.grad`` is then ``R_W`` (:func:`weight_relevance`).
- **identity rule**, for an elementwise nonlinearity ``y = act(x)`` (SiLU, GELU):
  ``R_x = R_y``. Modified gradient: ``grad_y * y / x`` (:class:`IdentityRule`).
- **uniform rule**, for an elementwise product ``y = a * b`` (the gated MLP's ``act(gate) * up``)
  and for the two matrix products of attention (``q k^T`` and ``softmax(.) v``): each factor
  takes half of ``R_y``. Gradient x input alone would give each factor all of it, so the
  gradient is halved (:func:`scale_grad`); q and k sit behind two products and take a quarter.
- **softmax rule**: ``R_x = x * (R_s - s * sum(R_s))`` for ``s = softmax(x)``, which is exactly
  gradient x input through the softmax, so the true gradient already applies it. It does not
  conserve relevance: part is absorbed, like a bias's share (AttnLRP section 3.3).
- **normalisation** (RMSNorm, LayerNorm): the denominator is treated as a constant, which makes
  the layer linear in ``x`` and conservative (:func:`constant_denominator`).

Residual additions need no rule: gradient x input splits ``R`` in proportion to the summands,
which is the epsilon rule of an addition with ``eps = 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from paretoprune.metrics.allocation import repair_to_mean

__all__ = [
    "DEFAULT_EPSILON",
    "EpsilonGrad",
    "IdentityRule",
    "constant_denominator",
    "epsilon_rule",
    "epsilon_weight_relevance",
    "global_ranking_sparsities",
    "half_rule",
    "scale_grad",
    "signed_epsilon",
    "softmax_rule",
    "stabilised",
    "weight_relevance",
]

# Small against the pre-activations of a trained network (their scale is ~0.1 to 10), so the
# epsilon rule stays close to conservative; large enough that no ratio below overflows fp32.
DEFAULT_EPSILON = 1e-6


def signed_epsilon(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``eps`` with the sign of ``z`` (+eps where z == 0): the stabiliser of the epsilon rule."""
    return torch.where(z >= 0, torch.full_like(z, eps), torch.full_like(z, -eps))


def stabilised(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``z + eps * sign(z)``: a denominator that is never closer to zero than ``eps``."""
    return z + signed_epsilon(z, eps)


# --------------------------------------------------------------------------------------------
# The rules, written as relevance in, relevance out (the references the modified gradients are
# tested against).


def epsilon_rule(
    x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor, bias: torch.Tensor | None = None,
    eps: float = DEFAULT_EPSILON,
) -> torch.Tensor:  # fmt: skip
    """The input relevance of a linear ``z = x W^T + b`` under the epsilon rule.

    ``x`` [tokens, in], ``weight`` [out, in], ``relevance`` [tokens, out] (of z) -> [tokens, in].
    The bias's share and the epsilon's are absorbed: the result sums to
    ``sum(R * (z - b) / (z + eps))``, which is ``sum(R)`` for eps -> 0 and no bias.
    """
    z = x @ weight.T + (0 if bias is None else bias)
    return x * ((relevance / stabilised(z, eps)) @ weight)


def epsilon_weight_relevance(
    x: torch.Tensor, weight: torch.Tensor, relevance: torch.Tensor, bias: torch.Tensor | None = None,
    eps: float = DEFAULT_EPSILON,
) -> torch.Tensor:  # fmt: skip
    """Each weight's relevance ``R_ij = sum_t W_ij x_tj R_ti / (z_ti + eps)``, [out, in].

    Summed over the inputs j it is the relevance that the epsilon rule passes from output i
    to the layer's inputs, so a layer's weight relevances sum to its input relevance.
    """
    z = x @ weight.T + (0 if bias is None else bias)
    return weight * ((relevance / stabilised(z, eps)).T @ x)


def weight_relevance(weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``R_W = W * grad_W``: a weight's relevance from its modified gradient (same shape).

    ``grad_W = sum_t g_t^T x_t`` with ``g`` the modified gradient that reached the linear's
    output, so this is :func:`epsilon_weight_relevance` computed by autograd.
    """
    return weight * grad


def half_rule(a: torch.Tensor, b: torch.Tensor, relevance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The uniform rule of an elementwise product ``a * b``: each factor takes half of ``R``."""
    del a, b  # the uniform rule does not look at the factors' values
    return relevance / 2, relevance / 2


def softmax_rule(x: torch.Tensor, relevance: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """AttnLRP's softmax rule: ``R_x = x * (R_s - s * sum(R_s))`` along ``dim``."""
    s = torch.softmax(x, dim=dim)
    return x * (relevance - s * relevance.sum(dim=dim, keepdim=True))


# --------------------------------------------------------------------------------------------
# The rules as modified gradients (gradient x input).


class EpsilonGrad(torch.autograd.Function):
    """Identity on ``z`` forward; backward multiplies the gradient by ``z / (z + eps)``.

    Put on a linear's output, it turns the linear's ordinary backward into the epsilon rule:
    the relevance ``R = z * g`` arriving at z goes back as ``W^T (R / (z + eps))``.
    """

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(z)
        ctx.eps = eps
        return z.view_as(z)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (z,) = ctx.saved_tensors
        return grad * (z / stabilised(z, ctx.eps)), None


class IdentityRule(torch.autograd.Function):
    """``y = act(x)`` forward (``y`` computed by the caller); backward passes ``grad * y / x``.

    Then ``x * grad_x = y * grad_y``: the nonlinearity hands its relevance on unchanged.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(x, y)
        ctx.eps = eps
        return y.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        x, y = ctx.saved_tensors
        return grad * (y / stabilised(x, ctx.eps)), None, None


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.factor, None


def scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` forward, ``factor * grad`` backward: the uniform rule's share (1/2, or 1/4 behind
    two products)."""
    return _ScaleGrad.apply(x, factor)


def constant_denominator(x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``y`` forward; backward as if ``y = x * scale`` with ``scale`` a constant.

    A normalisation ``y = x / rms(x) * w`` is linear in ``x`` once its denominator is held fixed;
    ``scale`` is ``w / rms(x)``, broadcast against ``x``. Then ``x * grad_x = y * grad_y``.
    """
    linear = x * scale.detach()
    return y.detach() + (linear - linear.detach())



# --------------------------------------------------------------------------------------------
# The paper's global ranking as a layer allocation.


def global_ranking_sparsities(scores: Sequence[torch.Tensor], target: float, upper: float = 0.99) -> np.ndarray:
    """Each layer's sparsity when the ``target`` fraction of all weights with the lowest scores,
    ranked across every layer together, is pruned; then repaired to the exact weighted mean.

    The global threshold is the k-th smallest score of all layers (k = target x all weights); a
    layer's sparsity is the fraction of its scores below it (scores tied at the threshold are
    shared among the layers that hold them, in proportion, so exactly k are pruned). The
    repair (:func:`~paretoprune.metrics.allocation.repair_to_mean`) caps every layer at ``upper``,
    since a layer pruned whole would cut the model, and shifts all layers by one common amount
    until the parameter-weighted mean is ``target`` exactly.
    """
    flat = torch.cat([s.detach().reshape(-1).float().cpu() for s in scores])
    k = min(max(int(round(target * flat.numel())), 1), flat.numel())
    threshold = flat.kthvalue(k).values
    del flat
    below = np.array([float((s < threshold).sum()) for s in scores])
    ties = np.array([float((s == threshold).sum()) for s in scores])
    share = (k - below.sum()) / ties.sum()  # of the weights tied at the threshold, the part pruned
    numels = np.array([s.numel() for s in scores], dtype=np.float64)
    return repair_to_mean((below + share * ties) / numels, numels, target, upper=upper)
