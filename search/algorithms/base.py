"""The ask/tell protocol every search algorithm follows.

The driver never runs an optimiser's own loop: evaluations happen on Ray actors, one
generation at a time. So every algorithm is driven from outside:

    genomes = algorithm.ask()                  # [k, n_var], k <= pop_size, inside [xl, xu]
    objectives = evaluate(genomes)             # [k, n_obj]; a failed row is +inf or NaN
    algorithm.tell(genomes, objectives)        # minimisation; failed rows rank worst
    checkpoint = algorithm.state_dict()        # between tell and the next ask

Resuming must be exact: a run restored from ``state_dict()`` asks the same genomes as the
run that was never interrupted. Implementations therefore snapshot their whole state, random
generators included, as plain data that a checkpoint can store without pickling (dicts, lists,
tuples, numbers, strings, numpy arrays; see ``paretoprune.search.checkpoint``): never a
library object, which ``_restore`` builds again from that data. The optional repair function
is never part of the snapshot (it may be a closure); the restoring side passes it to the
constructor again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar

import numpy as np

from paretoprune.errors import InputError

__all__ = ["RepairFn", "SearchAlgorithm", "failed_rows"]

RepairFn = Callable[[np.ndarray], np.ndarray]


def failed_rows(objectives: np.ndarray) -> np.ndarray:
    """Rows holding any NaN or infinite value: evaluations that failed."""
    return ~np.all(np.isfinite(objectives), axis=1)


def _as_bounds(n_var: int, xl: Any, xu: Any) -> tuple[np.ndarray, np.ndarray]:
    lower = np.broadcast_to(np.asarray(xl, dtype=float), (n_var,)).copy()
    upper = np.broadcast_to(np.asarray(xu, dtype=float), (n_var,)).copy()
    if not (np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))):
        raise InputError("search bounds must be finite numbers")
    if np.any(lower > upper):
        raise InputError("every lower search bound must be at most its upper bound")
    return lower, upper


def _as_initial(initial: Any, n_var: int, pop_size: int, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Start genomes as a [k, n_var] array clipped into the box (k may be 0)."""
    if initial is None:
        return np.empty((0, n_var))
    genomes = np.atleast_2d(np.asarray(initial, dtype=float))
    if genomes.shape[1] != n_var or not np.all(np.isfinite(genomes)):
        raise InputError(f"initial genomes must be finite rows of {n_var} numbers, got shape {genomes.shape}")
    if len(genomes) > pop_size:
        raise InputError(f"{len(genomes)} initial genomes do not fit a population of {pop_size}; raise --pop")
    return np.clip(genomes, lower, upper)


class SearchAlgorithm(ABC):
    """Ask/tell minimisation of ``n_obj`` objectives over real genomes in a box.

    ``generation`` counts completed ask/tell rounds. ``ask`` twice without ``tell`` is an
    error, as is ``tell`` with other genomes than those asked: both mean the driver lost track.
    """

    name: ClassVar[str]

    def __init__(
        self,
        n_var: int,
        xl: Any,
        xu: Any,
        n_obj: int,
        pop_size: int,
        seed: int = 0,
        repair: RepairFn | None = None,
        initial: Any = None,
    ) -> None:
        if n_var < 1 or n_obj < 1:
            raise InputError(f"a search needs at least one variable and one objective, got {n_var}, {n_obj}")
        if pop_size < 2:
            raise InputError(f"population size must be at least 2, got {pop_size}")
        self.n_var, self.n_obj, self.pop_size, self.seed = int(n_var), int(n_obj), int(pop_size), int(seed)
        self.xl, self.xu = _as_bounds(self.n_var, xl, xu)
        self.initial = _as_initial(initial, self.n_var, self.pop_size, self.xl, self.xu)
        self.repair = repair
        self.generation = 0
        self._pending: np.ndarray | None = None

    # -- public protocol ---------------------------------------------------------------------

    def ask(self) -> np.ndarray:
        """The next genomes to evaluate, repaired and inside the bounds.

        An empty array means the algorithm cannot propose anything new (the search is over).
        """
        if self._pending is not None:
            raise RuntimeError("ask() called again before tell() for the genomes already asked")
        genomes = np.asarray(self._ask(), dtype=float).reshape(-1, self.n_var)
        self._pending = genomes.copy()
        return genomes

    def tell(self, genomes: np.ndarray, objectives: np.ndarray) -> None:
        """Report the objectives of the genomes last asked, row for row."""
        if self._pending is None:
            raise RuntimeError("tell() called without a pending ask()")
        genomes = np.asarray(genomes, dtype=float).reshape(-1, self.n_var)
        if genomes.shape != self._pending.shape or not np.array_equal(genomes, self._pending):
            raise ValueError("tell() must receive exactly the genomes returned by the last ask()")
        values = np.asarray(objectives, dtype=float).reshape(len(genomes), -1)
        if values.shape[1] != self.n_obj:
            raise ValueError(f"expected {self.n_obj} objectives per row, got {values.shape[1]}")
        self._tell(values, failed_rows(values))
        self._pending = None
        self.generation += 1

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly, as plain data (no library objects)."""
        if self._pending is not None:
            raise RuntimeError("state_dict() between ask() and tell(): checkpoint after tell()")
        return {"algorithm": self.name, "generation": self.generation, "state": self._snapshot()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()`` of an algorithm built with the same arguments."""
        if state.get("algorithm") != self.name:
            raise InputError(f"the checkpoint holds a '{state.get('algorithm')}' search, not '{self.name}'")
        self._restore(state["state"])
        self.generation = int(state["generation"])
        self._pending = None

    # -- helpers for implementations ---------------------------------------------------------

    def _repaired(self, genomes: np.ndarray) -> np.ndarray:
        """Apply the repair (if any) and clip into the box, so every genome asked is valid."""
        genomes = np.asarray(genomes, dtype=float)
        if self.repair is not None and len(genomes):
            genomes = np.asarray(self.repair(genomes.copy()), dtype=float).reshape(genomes.shape)
        return np.clip(genomes, self.xl, self.xu)

    @abstractmethod
    def _ask(self) -> np.ndarray: ...

    @abstractmethod
    def _tell(self, objectives: np.ndarray, failed: np.ndarray) -> None: ...

    @abstractmethod
    def _snapshot(self) -> dict[str, Any]: ...

    @abstractmethod
    def _restore(self, snapshot: dict[str, Any]) -> None: ...
