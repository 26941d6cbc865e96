"""Search algorithms behind one ask/tell protocol (see ``base``).

Two implementations of NSGA-III: pymoo's (the default) and optuna's NSGAIIISampler (whose
study can live in a database and be watched with optuna-dashboard). Two searches for one
objective at a fixed sparsity: ``swap``, the naive reference the others are measured against,
and ``sensitivity``, a model-based local search. ``memetic`` combines pymoo's NSGA-III with
sensitivity rounds at a few levels of a range search. ``make_algorithm`` builds one by name.
"""

from paretoprune.search.algorithms.base import RepairFn, SearchAlgorithm, failed_rows
from paretoprune.search.algorithms.directions import das_dennis, reference_directions
from paretoprune.search.algorithms.factory import ALGORITHMS, make_algorithm
from paretoprune.search.algorithms.memetic import MemeticSearch, anchor_levels, anchor_starts
from paretoprune.search.algorithms.model_transfer import level_weights, transferred_step
from paretoprune.search.algorithms.optuna_nsga3 import OptunaNSGA3
from paretoprune.search.algorithms.pymoo_nsga3 import MUTATIONS, PymooNSGA3
from paretoprune.search.algorithms.sensitivity import SensitivitySearch, model_step, quadratic_through
from paretoprune.search.algorithms.swap import SwapSearch, swap_moves

__all__ = [
    "ALGORITHMS",
    "MUTATIONS",
    "MemeticSearch",
    "OptunaNSGA3",
    "PymooNSGA3",
    "RepairFn",
    "SearchAlgorithm",
    "SensitivitySearch",
    "SwapSearch",
    "anchor_levels",
    "anchor_starts",
    "das_dennis",
    "failed_rows",
    "level_weights",
    "make_algorithm",
    "model_step",
    "quadratic_through",
    "reference_directions",
    "swap_moves",
    "transferred_step",
]

