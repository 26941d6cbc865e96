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

A block solver (``regional``, Wanda++'s regional optimisation) works on a whole decoder block
once all its linears are pruned: it needs the block's calibration inputs and dense outputs, so
the pruner runs it (see :mod:`paretoprune.evaluators.regional`); per layer it does nothing. It
goes last in a chain, after the layer solvers of the block's linears.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from paretoprune.errors import InputError
from paretoprune.metrics.frank_wolfe import FrankWolfeSettings, frank_wolfe_mask
from paretoprune.metrics.sparsegpt import sparsegpt_update
from paretoprune.registry import Registry

__all__ = ["SOLVERS", "LayerSolver", "SolveFn", "block_chain", "check_chain", "layer_chain", "parse_chain", "run_chain"]

# (weight [out, in], keep mask [out, in] bool, Hessian [in, in]) -> (pruned weight, keep mask)
SolveFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class LayerSolver:
    """How to run one solver, and what it needs from calibration."""

    solve: SolveFn
    changes: str  # "mask" (chooses other weights to keep) or "weights" (moves the kept values)
    needs_hessian: bool = True  # walk the calibration data and accumulate X X^T per layer
    scope: str = "layer"  # "layer" (one linear, here) or "block" (a decoder block, run by the pruner)


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


def _block_level(weight: torch.Tensor, keep: torch.Tensor, hessian: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A block solver's per-layer step: the layer as masked; the pruner runs the block step."""
    return weight * keep.to(weight.dtype), keep


SOLVERS: Registry[LayerSolver] = Registry("solver", option="--solver")
SOLVERS.register(
    "update", LayerSolver(_sparsegpt_update, changes="weights"),
    summary="SparseGPT's update: the kept weights reconstruct the layer's calibration outputs",
)  # fmt: skip
SOLVERS.register(
    "fw", LayerSolver(_frank_wolfe, changes="mask"),
    summary="SparseFW: Frank-Wolfe on the relaxed mask swaps kept and pruned weights to lower the output error",
)  # fmt: skip

SOLVERS.register(
    "regional", LayerSolver(_block_level, changes="weights", needs_hessian=False, scope="block"),  # type: ignore[arg-type]
    summary="Wanda++'s regional optimisation: per block, RMSprop steps toward the dense block's outputs, "
    "each round re-pruned by the scoring rule",
)  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Chains: ``--solver fw,update``


def parse_chain(text: str | None) -> tuple[str, ...]:
    """``"fw, update"`` -> ("fw", "update"); None or "" -> no solver. Checked (see check_chain)."""
    chain = tuple(name.strip().lower() for name in (text or "").split(",") if name.strip())
    return check_chain(chain)


def check_chain(chain: tuple[str, ...]) -> tuple[str, ...]:
    """Every name registered, each once, and the mask solvers before the weight solvers: a mask
    chosen after the weights were updated would keep values reconstructed for another mask."""
    for name in chain:
        SOLVERS.lookup(name)
    if len(set(chain)) != len(chain):
        raise InputError(f"--solver {','.join(chain)} names a solver twice: list each once")
    kinds = [SOLVERS[name].changes for name in chain]
    if "weights" in kinds and "mask" in kinds[kinds.index("weights"):]:
        raise InputError(f"--solver {','.join(chain)}: put the solvers that change the mask "
                         f"({', '.join(n for n in chain if SOLVERS[n].changes == 'mask')}) before those that "
                         "update the weights, e.g. --solver fw,update")  # fmt: skip
    blocks = [name for name in chain if SOLVERS[name].scope == "block"]
    if blocks and chain[-len(blocks):] != tuple(blocks):
        raise InputError(f"--solver {','.join(chain)}: {', '.join(blocks)} works on whole blocks after their "
                         f"layers are solved; put it last, e.g. --solver update,{blocks[0]}")  # fmt: skip
    return chain


def layer_chain(chain: tuple[str, ...]) -> tuple[str, ...]:
    """The solvers of a chain that work on one linear (run per layer by :func:`run_chain`)."""
    return tuple(name for name in chain if SOLVERS[name].scope == "layer")


def block_chain(chain: tuple[str, ...]) -> tuple[str, ...]:
    """The solvers of a chain that work on a whole block (run by the pruner, after the layers)."""
    return tuple(name for name in chain if SOLVERS[name].scope == "block")


def run_chain(
    chain: tuple[str, ...], weight: torch.Tensor, keep: torch.Tensor, hessian: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the solvers in order on one layer and return (pruned weight, mask).

    Mask solvers refine the mask of the dense ``weight``. The first weight solver reconstructs
    from the dense values too (it needs the values it drops); a later one starts from what the
    one before it left.
    """
    pruned, mask = weight * keep.to(weight.dtype), keep
    updated = False
    for name in layer_chain(check_chain(chain)):
        solver = SOLVERS[name]
        start = pruned if (solver.changes == "weights" and updated) else weight
        pruned, mask = solver.solve(start, mask, hessian)
        updated = updated or solver.changes == "weights"
    return pruned, mask
