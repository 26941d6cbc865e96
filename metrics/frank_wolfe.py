"""Frank-Wolfe refinement of a pruning mask (SparseFW: Roux, Zimmer, d'Aspremont and Pokutta,
"Don't Be Greedy, Just Relax! Pruning LLMs via Frank-Wolfe", 2025).

Problem. A linear ``y = W x`` loses the weights outside a keep mask ``M``; on calibration inputs
``X`` its output error is::

    f(M) = ||(W - M * W) X||_F^2 = sum_i d_i G d_i^T,   d_i = (1 - m_i) * w_i,   G = X X^T

(``*`` is elementwise; any positive multiple of ``G`` gives the same minimisers, so SparseGPT's
``2/n X^T X`` serves). Scoring rules such as Wanda pick ``M`` weight by weight and ignore how the
weights of a row interact through ``G``; choosing the best mask exactly is combinatorial.

Relaxation. Over the convex hull of the feasible masks (``k`` kept per row, or ``N`` per group of
``M`` consecutive inputs) ``f`` is a convex quadratic, and Frank-Wolfe needs only a linear
minimisation oracle over that hull: keep the ``k`` (or ``N``) entries of each row (or group)
with the most negative gradient ``2 W * ((M * W) G - W G)``. Each step moves the relaxed mask
toward that vertex; at the end the relaxed mask is rounded back to a mask by keeping its largest
entries per row (or group).

Rows are independent. ``f`` is a sum of one quadratic per row and the feasible set is a product
of per-row sets, so running FW on every row at once is the same as running it on each row alone.
The exact line search therefore takes its own step per row (each row's quadratic minimised along
its own segment), which is never worse than one step shared by the layer.

Warm start and the fixed fraction. FW starts from a scoring rule's mask. Pure FW (``alpha = 0``)
needs many iterations before rounding leaves the warm start, and the masks it then finds fit the
calibration text more than they generalise (the paper found it worse than the baselines). The
paper's working variant keeps the top ``alpha`` of the warm start's kept weights fixed and lets
FW choose only the rest. Here "top" means the kept
weights whose lone removal would cost most, ``w_ij^2 G_jj`` (Wanda's score squared, up to the
Hessian's scale), chosen per row.

Guarantee. Rounding can land above the warm start; each row then keeps its warm-start mask, so
the result's error is never above the warm start's, row by row.

Cost. Each iteration needs ``(M * W) G``, an [out, in] x [in, in] product. Since FW only mixes the
current point with a vertex, ``(M' * W) G = (1 - g) (M * W) G + g (S * W) G``; and a vertex is
the fixed part, whose product is computed once, plus a free part that keeps few weights (10% of
the kept ones at alpha = 0.9), whose product is a sparse one (a dense one at small alphas). Only
``W G`` and the fixed part's product are full matrix products. (Consecutive vertices are no
cheaper to update from each other: FW zigzags, and they differ in most of their free entries.)
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch

from paretoprune.errors import InputError
from paretoprune.metrics.sparsegpt import check_weight_and_hessian

__all__ = [
    "INFER",
    "FrankWolfeSettings",
    "exact_step",
    "fixed_split",
    "frank_wolfe_mask",
    "group_counts",
    "infer_structure",
    "keep_better_rows",
    "layer_error",
    "linear_minimisation_oracle",
    "objective_gradient",
    "round_to_budget",
    "row_errors",
]

# A structure argument that asks for the structure to be read off the warm-start mask.
INFER: Literal["infer"] = "infer"

Structure = tuple[int, int] | None


@dataclass(frozen=True)
class FrankWolfeSettings:
    """The solver's defaults, chosen on SmolLM2-135M (q_proj and down_proj of blocks 0, 10,
    20 and 29; Wanda warm start at 60% per row and at 2:4; 16 x 256 tokens of C4)."""

    # FW iterations per layer. The paper runs 2000 on GPUs. With alpha = 0.9 the rounded error
    # settles within about 10 iterations: 20 reach within 1% of what 500 reach, and a whole
    # block then costs about 4.5x SparseGPT's update of it on CPU (10: 2.7x, 100: 17x).
    iterations: int = 20
    # Fraction of the warm start's kept weights held fixed, per row (the paper's default).
    # Lower alphas cut the calibration error further but the gain carries over less to held-out
    # text, and after SparseGPT's update they can end above the update alone.
    alpha: float = 0.9
    # Exact line search per row (f is quadratic); False uses the classic step 2 / (t + 2).
    line_search: bool = True


DEFAULTS = FrankWolfeSettings()

# A mask keeping at most this fraction of the entries is multiplied as a sparse matrix; denser
# ones are cheaper as one dense product (measured on CPU: sparse wins 3x at 10%, 60x at 0.5%).
_SPARSE_UP_TO = 0.1


# ----------------------------------------------------------------------------------------------
# The objective.


def row_errors(weight: torch.Tensor, mask: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    """Each row's output error ``d_i G d_i^T`` with ``d = (1 - M) * W``, as a vector [out].

    ``mask`` may be a bool mask or a relaxed one (entries in [0, 1]).
    """
    dropped = (1 - mask.to(weight.dtype)) * weight
    return ((dropped @ hessian) * dropped).sum(dim=1)


def layer_error(weight: torch.Tensor, mask: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    """The objective ``f(M) = ||(W - M * W) X||_F^2``, written with ``G = X X^T`` (a scalar)."""
    return row_errors(weight, mask, hessian).sum()


def objective_gradient(weight: torch.Tensor, mask: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    """``df/dM = 2 W * ((M * W) G - W G)`` [out, in], for a bool or relaxed mask."""
    return _gradient(weight, (mask.to(weight.dtype) * weight) @ hessian, weight @ hessian)


def _gradient(
    weight: torch.Tensor, masked_product: torch.Tensor, dense_product: torch.Tensor
) -> torch.Tensor:
    """The gradient from the products ``(M * W) G`` and ``W G`` that the loop keeps up to date."""
    return 2 * weight * (masked_product - dense_product)


# ----------------------------------------------------------------------------------------------
# Groups: a row is one group (per-row masks) or in/m groups of m consecutive inputs (N:M).


def group_counts(mask: torch.Tensor, group_size: int) -> torch.Tensor:
    """How many entries each group of ``group_size`` consecutive inputs keeps, [out, in / size]."""
    return mask.reshape(mask.shape[0], -1, group_size).sum(dim=-1)


def infer_structure(keep: torch.Tensor) -> Structure:
    """The structure a warm-start mask follows: ``(n, m)`` when every group of ``m`` consecutive
    inputs of every row keeps ``n`` (the smallest such ``m``), else None when every row keeps the
    same count, else InputError.

    The smallest ``m`` is the tightest structure the mask satisfies, so keeping it also keeps
    every coarser one (a 2:4 mask stays 4:8). A mask whose rows keep different counts (chosen
    over the whole layer) is refused: FW here keeps each row's or group's count.
    """
    rows, width = keep.shape
    counts = keep.sum(dim=1)
    if not bool((counts == counts[0]).all()):
        raise InputError(
            "Frank-Wolfe mask refinement needs the same kept count in every row (a per-row or N:M "
            "mask); masks chosen over the whole layer are not supported: use group 'row' or N:M"
        )
    kept = int(counts[0])
    for m in range(2, width):
        if width % m or (kept * m) % width:
            continue
        n = kept * m // width
        if 0 < n < m and bool((group_counts(keep, m) == n).all()):
            return n, m
    return None


def _check_keep_follows(keep: torch.Tensor, structure: Structure) -> None:
    """InputError unless ``keep`` keeps the same count per row, or N per group for ``(n, m)``."""
    if structure is None:
        infer_structure(keep)  # raises on unequal rows
        return
    n, m = structure
    if not 0 < n < m:
        raise InputError(f"structure {structure} needs 0 < N < M (N kept of every M weights)")
    if keep.shape[1] % m:
        raise InputError(f"structure {n}:{m} does not fit a layer of input width {keep.shape[1]}")
    if not bool((group_counts(keep, m) == n).all()):
        raise InputError(
            f"the warm-start mask does not keep {n} of every {m} weights; it cannot seed {n}:{m}"
        )


# ----------------------------------------------------------------------------------------------
# The steps of Frank-Wolfe, as pure functions.


def fixed_split(
    weight: torch.Tensor, hessian: torch.Tensor, keep: torch.Tensor, alpha: float, group_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The warm start's fixed part and what is left to choose: ``(fixed, budgets)``.

    ``fixed`` [out, in] bool holds, per row, the ``round(alpha * kept)`` kept weights with the
    largest lone-removal cost ``w_ij^2 G_jj``. ``budgets`` [out, in / group_size] is how many
    more each group keeps: its warm-start count minus its fixed count. Fixing per row, not per
    group, leaves N:M groups something to choose even when ``alpha * N`` rounds to ``N``.
    """
    saliency = weight.square() * torch.diagonal(hessian)[None, :]
    kept_per_row = keep.sum(dim=1, keepdim=True)
    fixed_per_row = torch.round(alpha * kept_per_row).long()
    fixed = round_to_budget(saliency, keep, fixed_per_row, keep.shape[1], prefer=keep)
    budgets = group_counts(keep, group_size) - group_counts(fixed, group_size)
    return fixed, budgets


def linear_minimisation_oracle(
    gradient: torch.Tensor, eligible: torch.Tensor, budgets: torch.Tensor, group_size: int
) -> torch.Tensor:
    """The vertex that minimises ``<gradient, S>``: in each group of ``group_size`` consecutive
    inputs of a row, True on the ``budget`` eligible entries with the most negative gradient.

    ``budgets`` [out, in / group_size] must not exceed a group's eligible count. Ties between
    equal gradients are broken arbitrarily (any choice is a minimiser).
    """
    rows = gradient.shape[0]
    scores = gradient.masked_fill(~eligible, math.inf).reshape(rows, -1, group_size)
    vertex = torch.zeros(scores.shape, dtype=torch.bool, device=gradient.device)
    most = int(budgets.max()) if budgets.numel() else 0
    if most == 0:
        return vertex.reshape(gradient.shape)
    # The `most` lowest of each group in ascending order; a group takes the first `budget`.
    lowest = torch.topk(scores, most, dim=-1, largest=False, sorted=True).indices
    positions = torch.arange(most, device=gradient.device)
    vertex.scatter_(-1, lowest, positions < budgets[..., None])
    return vertex.reshape(gradient.shape)


def exact_step(
    direction: torch.Tensor, residual_product: torch.Tensor, direction_product: torch.Tensor
) -> torch.Tensor:
    """Per row, the step ``g`` in [0, 1] that minimises ``f(M + g (S - M))``, a vector [out].

    With ``E = (S - M) * W``, ``direction``; ``(W - M * W) G``, ``residual_product``; and
    ``E G``, ``direction_product``, a row's error along the segment is
    ``f_i(M) - 2 g <E_i, (D G)_i> + g^2 <E_i, (E G)_i>``, minimised at their ratio. A row whose
    curvature is zero has ``E_i G = 0`` (G is positive semi-definite), so f_i is flat: step 0.
    """
    slope = (direction * residual_product).sum(dim=1)
    curvature = (direction * direction_product).sum(dim=1)
    flat = curvature <= 0
    step = slope / torch.where(flat, torch.ones_like(curvature), curvature)
    return torch.where(flat, torch.zeros_like(step), step).clamp(0.0, 1.0)


def round_to_budget(
    relaxed: torch.Tensor,
    eligible: torch.Tensor,
    budgets: torch.Tensor,
    group_size: int,
    prefer: torch.Tensor,
) -> torch.Tensor:
    """A mask that keeps, in each group of ``group_size`` consecutive inputs of a row, the
    ``budget`` eligible entries with the largest ``relaxed`` value.

    Among equal values the ``prefer`` entries (the warm start) come first, then the lower
    index: entries that FW never moved (all 0 or all 1) then stay as they started.
    """
    rows = relaxed.shape[0]
    values = relaxed.masked_fill(~eligible, -math.inf).reshape(rows, -1, group_size)
    preferred = prefer.reshape(rows, -1, group_size).to(torch.int8)
    # Two stable sorts give a lexicographic order: by value, then preferred first, then index.
    by_preference = torch.sort(preferred, dim=-1, descending=True, stable=True).indices
    by_value = torch.sort(values.gather(-1, by_preference), dim=-1, descending=True, stable=True).indices
    order = by_preference.gather(-1, by_value)
    positions = torch.arange(group_size, device=relaxed.device)
    mask = torch.zeros(values.shape, dtype=torch.bool, device=relaxed.device)
    mask.scatter_(-1, order, positions < budgets[..., None])
    return mask.reshape(relaxed.shape)


def keep_better_rows(
    candidate: torch.Tensor, warm: torch.Tensor, candidate_errors: torch.Tensor, warm_errors: torch.Tensor
) -> torch.Tensor:
    """Per row, the candidate mask where its error is strictly lower, else the warm start's.

    Rows are independent, so the result's error is the sum of the row minima: never above the
    warm start's, and never above the candidate's.
    """
    return torch.where((candidate_errors < warm_errors)[:, None], candidate, warm)


# ----------------------------------------------------------------------------------------------
# Orchestration.


def frank_wolfe_mask(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    keep: torch.Tensor,
    *,
    iterations: int = DEFAULTS.iterations,
    alpha: float = DEFAULTS.alpha,
    structure: Structure | Literal["infer"] = INFER,
    line_search: bool = DEFAULTS.line_search,
) -> torch.Tensor:
    """A keep mask [out, in] bool that refines the warm start ``keep`` toward a lower output error.

    It keeps exactly the warm start's count per row, or ``n`` of every ``m`` inputs when
    ``structure`` is ``(n, m)``; ``structure=None`` means per row, and ``"infer"`` reads it off
    ``keep`` (:func:`infer_structure`). ``hessian`` is ``X X^T`` (or a positive multiple) of the
    layer's calibration inputs. The error of the result is never above the warm start's. Work
    is in fp32, or fp64 when the weight or Hessian is fp64.
    """
    _check_arguments(weight, hessian, keep, iterations, alpha)
    if structure == INFER:
        structure = infer_structure(keep)
    else:
        _check_keep_follows(keep, structure)
    group_size = weight.shape[1] if structure is None else structure[1]
    dtype = torch.float64 if torch.float64 in (weight.dtype, hessian.dtype) else torch.float32
    w = weight.detach().to(dtype)
    g = hessian.detach().to(device=w.device, dtype=dtype)
    keep = keep.to(w.device)
    fixed, budgets = fixed_split(w, g, keep, alpha, group_size)
    if iterations == 0 or not bool(budgets.any()):
        return keep.clone()  # nothing left to choose (alpha = 1, or nothing or everything kept)
    problem = _Problem(w, g, keep, fixed, budgets, group_size)
    relaxed = keep.to(dtype)
    for relaxed in itertools.islice(_relaxed_iterates(problem, line_search), int(iterations)):
        pass
    return _rounded_no_worse(problem, relaxed)


@dataclass(frozen=True)
class _Problem:
    """One layer's refinement problem, with the products every iteration reuses."""

    weight: torch.Tensor  # [out, in], in the working dtype
    hessian: torch.Tensor  # [in, in]
    keep: torch.Tensor  # the warm start, bool
    fixed: torch.Tensor  # the warm start's fixed part, bool
    budgets: torch.Tensor  # [out, in / group_size]: entries each group keeps beyond the fixed ones
    group_size: int

    @property
    def free(self) -> torch.Tensor:
        return ~self.fixed

    @cached_property
    def dense_product(self) -> torch.Tensor:
        """``W G``."""
        return self.weight @ self.hessian

    @cached_property
    def fixed_product(self) -> torch.Tensor:
        """``(F * W) G``: every vertex is the fixed part plus a free part, so its product is this
        one, computed once, plus the free part's (sparse when alpha leaves few entries free)."""
        return _masked_product(self.weight, self.hessian, self.fixed)

    @cached_property
    def warm_product(self) -> torch.Tensor:
        """``(K * W) G`` of the warm start ``K`` (a vertex too)."""
        return self.vertex_product(self.keep & self.free)

    def vertex_product(self, free_part: torch.Tensor) -> torch.Tensor:
        """``(S * W) G`` for the vertex ``S = F + free_part``."""
        return self.fixed_product + _masked_product(self.weight, self.hessian, free_part)

    def row_errors(self, mask: torch.Tensor, product: torch.Tensor) -> torch.Tensor:
        """:func:`row_errors` of a mask from its product ``(M * W) G``."""
        dropped = self.weight * ~mask
        return (dropped * (self.dense_product - product)).sum(dim=1)


def _relaxed_iterates(problem: _Problem, line_search: bool) -> Iterator[torch.Tensor]:
    """The relaxed masks of Frank-Wolfe from the warm start, one per iteration (the same tensor,
    updated in place). It ends early once no row moves: every later iteration would repeat."""
    weight, free, fixed = problem.weight, problem.free, problem.fixed
    relaxed = problem.keep.to(weight.dtype)
    masked_product = problem.warm_product.clone()
    for t in itertools.count():
        gradient = _gradient(weight, masked_product, problem.dense_product)
        free_vertex = linear_minimisation_oracle(gradient, free, problem.budgets, problem.group_size)
        vertex_product = problem.vertex_product(free_vertex)
        toward = (fixed | free_vertex).to(weight.dtype) - relaxed
        if line_search:
            residual = problem.dense_product - masked_product
            step = exact_step(toward * weight, residual, vertex_product - masked_product)
            if not bool(step.any()):
                return
            step = step[:, None]
        else:
            step = torch.tensor(2.0 / (t + 2), dtype=weight.dtype, device=weight.device)
        relaxed += step * toward
        masked_product += step * (vertex_product - masked_product)
        yield relaxed


def _rounded_no_worse(problem: _Problem, relaxed: torch.Tensor) -> torch.Tensor:
    """The relaxed mask rounded to the budgets, each row falling back on the warm start where
    rounding made it worse."""
    free_rounded = round_to_budget(
        relaxed, problem.free, problem.budgets, problem.group_size, prefer=problem.keep
    )
    rounded = problem.fixed | free_rounded
    keep = problem.keep
    return keep_better_rows(
        rounded,
        keep,
        problem.row_errors(rounded, problem.vertex_product(free_rounded)),
        problem.row_errors(keep, problem.warm_product),
    )


def _check_arguments(
    weight: torch.Tensor, hessian: torch.Tensor, keep: torch.Tensor, iterations: int, alpha: float
) -> None:
    check_weight_and_hessian(weight, hessian)
    if keep.shape != weight.shape or keep.dtype != torch.bool:
        raise InputError(f"the keep mask must be a bool tensor of the weight's shape {tuple(weight.shape)}")
    if not (bool(torch.isfinite(weight).all()) and bool(torch.isfinite(hessian).all())):
        raise InputError("the weight or the Hessian holds NaN or infinite values; FW needs finite ones")
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 0:
        raise InputError(f"Frank-Wolfe iterations must be a whole number >= 0, got {iterations!r}")
    if isinstance(alpha, bool) or not (isinstance(alpha, numbers.Real) and 0.0 <= alpha <= 1.0):
        raise InputError(f"Frank-Wolfe alpha (the fixed fraction) must lie in [0, 1], got {alpha!r}")


def _masked_product(weight: torch.Tensor, hessian: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(mask * W) G``, as a sparse product when the mask keeps few entries."""
    count = int(mask.sum())
    if count > _SPARSE_UP_TO * mask.numel():
        return (mask * weight) @ hessian
    where = mask.nonzero().T  # row-major order: already sorted and without duplicates
    sparse = torch.sparse_coo_tensor(
        where, weight[where[0], where[1]], weight.shape, is_coalesced=True, check_invariants=False
    )  # fmt: skip
    return torch.sparse.mm(sparse, hessian)
