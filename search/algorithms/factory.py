"""Building a search algorithm by name, with the options each one accepts."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from paretoprune.errors import InputError
from paretoprune.search.algorithms.base import RepairFn, SearchAlgorithm
from paretoprune.search.algorithms.memetic import MemeticSearch
from paretoprune.search.algorithms.optuna_nsga3 import OptunaNSGA3
from paretoprune.search.algorithms.pymoo_nsga3 import PymooNSGA3
from paretoprune.search.algorithms.sensitivity import SensitivitySearch
from paretoprune.search.algorithms.swap import SwapSearch

__all__ = ["ALGORITHMS", "make_algorithm"]

ALGORITHMS: dict[str, type[SearchAlgorithm]] = {
    "pymoo": PymooNSGA3, "optuna": OptunaNSGA3, "swap": SwapSearch, "sensitivity": SensitivitySearch,
    "memetic": MemeticSearch,
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
    """Build the algorithm called ``name`` ("pymoo", "optuna", "swap", "sensitivity" or "memetic").

    ``options`` are the settings beyond the common ones: the swap search's ``step``, the
    sensitivity search's ``probe``, ``radius``, ``shrink`` and ``two_sided_every``, and the
    memetic search's ``anchors``, ``level_gene``, ``ga_generations`` and ``steps`` beside the
    sensitivity settings its local rounds use.
    """
    if name not in ALGORITHMS:
        raise InputError(f"unknown search algorithm '{name}'; choose one of {', '.join(ALGORITHMS)}")
    if options and name not in _OPTIONS:
        raise InputError(f"algorithm_options are for the swap, sensitivity and memetic searches, not {name}; drop them")
    if mutation != "polynomial" and name not in ("pymoo", "memetic"):
        raise InputError(f"mutation {mutation!r} is a pymoo option; use --algorithm pymoo or memetic, or drop it")
    common = dict(n_var=n_var, xl=xl, xu=xu, n_obj=n_obj, pop_size=pop_size, seed=seed, repair=repair, initial=initial)
    if name == "optuna":
        return OptunaNSGA3(**common, storage=storage, study_name=study_name)
    if storage is not None:
        raise InputError("--storage is an optuna option; add --algorithm optuna or drop --storage")
    if name == "pymoo":
        return PymooNSGA3(**common, mutation=mutation)
    if name == "memetic":
        return MemeticSearch(**common, mutation=mutation, **_checked_options(name, options or {}))
    return ALGORITHMS[name](**common, **_checked_options(name, options or {}))


_LOCAL = ("probe", "radius", "shrink", "two_sided_every")
_OPTIONS = {
    "swap": ("step",), "sensitivity": _LOCAL, "memetic": ("anchors", "level_gene", "ga_generations", "steps", *_LOCAL),
}


def _checked_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    known = _OPTIONS[name]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise InputError(f"algorithm option {unknown[0]!r} is not one of {name}'s: {', '.join(known)}")
    return dict(options)
