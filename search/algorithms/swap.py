"""The naive reference: a (1 + lambda) evolution that moves sparsity between two genes at a time.

It is the EvoPress-style search the NSGA-III and sensitivity searches are measured against.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from paretoprune.errors import InputError
from paretoprune.search.algorithms.base import RepairFn, SearchAlgorithm

__all__ = ["SwapSearch", "swap_moves"]


def swap_moves(genome: np.ndarray, width: np.ndarray, step: float, max_swaps: int, rng: np.random.Generator) -> np.ndarray:
    """``genome`` after one to ``max_swaps`` moves of ``step * width`` from one gene to another."""
    moved = np.array(genome, dtype=float)
    for _ in range(rng.integers(1, max_swaps + 1)):
        up, down = rng.choice(len(moved), size=2, replace=False)
        moved[up] += step * width[up]
        moved[down] -= step * width[down]
    return moved


class SwapSearch(SearchAlgorithm):
    """The naive allocation search: one parent, ``pop_size`` children, the best of all survives.

    Each child moves one step (``step`` times the box width) up in one gene and down in
    another, one to three times; for per-block sparsities of equal blocks that keeps the
    mean sparsity, and the repair fixes the rest. The first generation evaluates the start
    genomes (the baselines; the box's centre without them) and the best becomes the parent.
    A child must improve strictly on its parent to replace it.

    One objective only: the search compares candidates by a single number.
    """

    name = "swap"
    max_swaps = 3

    def __init__(self, n_var: int, xl: Any, xu: Any, n_obj: int, pop_size: int, seed: int = 0,
                 repair: RepairFn | None = None, initial: Any = None, step: float = 1 / 15) -> None:
        if n_obj != 1:
            raise InputError(f"the swap search optimises one objective, got {n_obj}; use pymoo or optuna for fronts")
        if n_var < 2:
            raise InputError("the swap search moves sparsity between two genes: it needs at least two")
        starts = 0 if initial is None else len(np.atleast_2d(initial))
        super().__init__(n_var, xl, xu, n_obj, max(pop_size, starts), seed, repair, initial)
        self.children, self.step = int(pop_size), float(step)
        self._rng = np.random.default_rng(self.seed)
        self._parent: np.ndarray | None = None
        self._parent_value = math.inf

    def _ask(self) -> np.ndarray:
        if self._parent is None:
            starts = self.initial if len(self.initial) else ((self.xl + self.xu) / 2)[None, :]
            return self._repaired(starts)
        return self._repaired(np.stack([self._child() for _ in range(self.children)]))

    def _child(self) -> np.ndarray:
        return swap_moves(self._parent, self.xu - self.xl, self.step, self.max_swaps, self._rng)

    def _tell(self, objectives: np.ndarray, failed: np.ndarray) -> None:
        values = np.where(failed, math.inf, objectives[:, 0])
        best = int(np.argmin(values))
        if self._parent is None or values[best] < self._parent_value:
            self._parent, self._parent_value = self._pending[best].copy(), float(values[best])

    def _snapshot(self) -> dict[str, Any]:
        # The generator's state is a dict of plain numbers: a checkpoint stores it as it is.
        return {"rng": self._rng.bit_generator.state, "parent": self._parent, "value": self._parent_value}

    def _restore(self, snapshot: dict[str, Any]) -> None:
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = snapshot["rng"]
        self._parent, self._parent_value = snapshot["parent"], float(snapshot["value"])
