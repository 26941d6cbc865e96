"""Layer solvers: the optional third step of pruning one layer, after score and mask.

A solver improves what the mask left: it may move the surviving weights (SparseGPT's update)
or change the mask itself. It sees one linear at a time, through the weight, the keep mask the
scoring rule chose and the layer's Hessian ``X X^T`` of its calibration inputs, and returns the
pruned weight with the mask it ends on. Solvers chain: each one starts from the last one's
result. Registering a solver here makes it a choice of the pruners, the recipes and the search.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

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


SOLVERS: Registry[LayerSolver] = Registry("solver", option="--solver")
SOLVERS.register(
    "update", LayerSolver(_sparsegpt_update),
    summary="SparseGPT's update: the kept weights reconstruct the layer's calibration outputs",
)  # fmt: skip
