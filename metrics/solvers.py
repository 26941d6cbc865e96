"""Layer solvers: the optional third step of pruning one layer, after score and mask.

A solver improves what the mask left: it may move the surviving weights (SparseGPT's update)
or change the mask itself. It sees one linear at a time, through the weight, the keep mask the
scoring rule chose and the layer's Hessian ``X X^T`` of its calibration inputs, and returns the
pruned weight with the mask it ends on. Solvers chain: each one starts from the last one's
result. Registering a solver here makes it a choice of the pruners, the recipes and the search.

A solver that moves weights to reconstruct the layer (``update``) needs the dense values of the
weights it drops: given a weight whose dropped entries are already zero, it has nothing left to
reconstruct and returns it unchanged. So in a chain such as ``fw,update`` the mask flows from one
solver to the next while ``update`` is given the layer's dense weight with that mask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from paretoprune.metrics.frank_wolfe import FrankWolfeSettings, frank_wolfe_mask
from paretoprune.metrics.sparsegpt import sparsegpt_update
from paretoprune.registry import Registry

__all__ = ["SOLVERS", "LayerSolver", "SolveFn"]

# (weight [out, in], keep mask [out, in] bool, Hessian [in, in]) -> (pruned weight, keep mask)
SolveFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class LayerSolver:
    """How to run one solver, and what it needs from calibration."""

    solve: SolveFn
    needs_hessian: bool = True  # walk the calibration data and accumulate X X^T per layer


def _sparsegpt_update(weight: torch.Tensor, keep: torch.Tensor, hessian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return sparsegpt_update(weight, hessian, keep), keep


def _frank_wolfe(
    weight: torch.Tensor,
    keep: torch.Tensor,
    hessian: torch.Tensor,
    settings: FrankWolfeSettings = FrankWolfeSettings(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight masked by the Frank-Wolfe refinement of ``keep``, and that mask. The kept
    weights keep their values; chain ``update`` after it to reconstruct them."""
    mask = frank_wolfe_mask(
        weight,
        hessian,
        keep,
        iterations=settings.iterations,
        alpha=settings.alpha,
        line_search=settings.line_search,
    )
    return weight * mask.to(weight.device), mask


SOLVERS: Registry[LayerSolver] = Registry("solver", option="--solver")
SOLVERS.register(
    "update", LayerSolver(_sparsegpt_update),
    summary="SparseGPT's update: the kept weights reconstruct the layer's calibration outputs",
)  # fmt: skip
SOLVERS.register(
    "fw", LayerSolver(_frank_wolfe),
    summary="SparseFW: Frank-Wolfe on the relaxed mask swaps kept and pruned weights to lower the output error",
)  # fmt: skip
