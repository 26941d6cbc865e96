"""Building a search algorithm by name, with the options each one accepts."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from paretoprune.errors import InputError
from paretoprune.search.algorithms.base import RepairFn, SearchAlgorithm
from paretoprune.search.algorithms.optuna_nsga3 import OptunaNSGA3
from paretoprune.search.algorithms.pymoo_nsga3 import PymooNSGA3
from paretoprune.search.algorithms.sensitivity import SensitivitySearch
from paretoprune.search.algorithms.swap import SwapSearch

__all__ = ["ALGORITHMS", "make_algorithm"]

ALGORITHMS: dict[str, type[SearchAlgorithm]] = {
    "pymoo": PymooNSGA3, "optuna": OptunaNSGA3, "swap": SwapSearch, "sensitivity": SensitivitySearch,
}


def make_algorithm(
    name: str,
    *,
    n_var: int,
    xl: Any,
    xu: Any,
    n_obj: int,
    pop_size: int,
    seed: int = 0,
    repair: RepairFn | None = None,
    initial: Sequence[Sequence[float]] | np.ndarray | None = None,
    storage: str | None = None,
    study_name: str = "paretoprune",
    mutation: str = "polynomial",
    options: Mapping[str, Any] | None = None,
) -> SearchAlgorithm:
    """Build the algorithm called ``name`` ("pymoo", "optuna", "swap" or "sensitivity").

    ``options`` are the settings of the one-objective searches beyond the common ones: the swap
    search's ``step``, the sensitivity search's ``probe``, ``radius``, ``shrink`` and
    ``two_sided_every``.
    """
    if name not in ALGORITHMS:
        raise InputError(f"unknown search algorithm '{name}'; choose one of {', '.join(ALGORITHMS)}")
    if options and name not in _OPTIONS:
        raise InputError(f"algorithm_options are for the swap and sensitivity searches, not {name}; drop them")
    if mutation != "polynomial" and name != "pymoo":
        raise InputError(f"mutation {mutation!r} is a pymoo option; use --algorithm pymoo or drop it")
    common = dict(n_var=n_var, xl=xl, xu=xu, n_obj=n_obj, pop_size=pop_size, seed=seed, repair=repair, initial=initial)
    if name == "optuna":
        return OptunaNSGA3(**common, storage=storage, study_name=study_name)
    if storage is not None:
        raise InputError("--storage is an optuna option; add --algorithm optuna or drop --storage")
    if name == "pymoo":
        return PymooNSGA3(**common, mutation=mutation)
    return ALGORITHMS[name](**common, **_checked_options(name, options or {}))


_OPTIONS = {"swap": ("step",), "sensitivity": ("probe", "radius", "shrink", "two_sided_every")}


def _checked_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    known = _OPTIONS[name]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise InputError(f"algorithm option {unknown[0]!r} is not one of {name}'s: {', '.join(known)}")
    return dict(options)
