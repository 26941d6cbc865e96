"""NSGA-III, the memetic search and dedicated sensitivity searches on a 30-layer layered problem.

The problem has the shape of the SmolLM2-135M range search (30 block genes and the target in
[0.4, 0.8], population 16, uniform starts at 0.4, 0.6 and 0.8), with a front known exactly. It
prints, as markdown rows, each search's error at a few levels over the optimum's (1.000 is the
true front), averaged over seeds. Run it with ``python -m tests.search.algorithms.synthetic_study``
(seconds on one core).
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from paretoprune.search.algorithms import SearchAlgorithm, make_algorithm
from tests.search.algorithms.layered import LayeredProblem, front_at

logger = logging.getLogger(__name__)

PROBLEM = LayeredProblem.random(30, seed=5, levels=(0.4, 0.8))
LEVELS = (0.5, 0.55, 0.6, 0.65, 0.7)
BUDGETS = (240, 480, 774)  # 774: three dedicated searches of 258, as in results/smollm2-135m
SEEDS = range(4)
DEDICATED = 258  # a sensitivity search's candidates in results/smollm2-135m (4 rounds)


def first_values(algorithm: SearchAlgorithm, objective: Callable[[np.ndarray], np.ndarray], budget: int) -> np.ndarray:
    """The objectives of the first ``budget`` genomes the algorithm asks."""
    asked: list[np.ndarray] = []
    while sum(map(len, asked)) < budget:
        genomes = algorithm.ask()
        algorithm.tell(genomes, objective(genomes))
        asked.append(genomes)
    return objective(np.vstack(asked)[:budget])


def range_ratios(name: str, budget: int) -> np.ndarray:
    """Mean over seeds of the front's error at each level over the optimum's."""
    truth = PROBLEM.front()
    rows = []
    for seed in SEEDS:
        values = first_values(PROBLEM.build(name, seed=seed, pop_size=16), PROBLEM, budget)
        rows.append([front_at(values, level) / front_at(truth, level) for level in LEVELS])
    return np.mean(rows, axis=0)


def dedicated_ratio(level: float) -> float:
    """A sensitivity search at ``level`` alone (4 steps a round), after DEDICATED candidates."""
    def at_level(genes: np.ndarray) -> np.ndarray:
        return np.column_stack([genes, np.full(len(genes), level)])

    search = make_algorithm("sensitivity", n_var=PROBLEM.layers, xl=-1.0, xu=1.0, n_obj=1, pop_size=4,
                            repair=lambda genes: PROBLEM.repair(at_level(genes))[:, :-1],
                            initial=np.zeros((2, PROBLEM.layers)))  # fmt: skip
    def error(genes: np.ndarray) -> np.ndarray:
        return PROBLEM(at_level(genes))[:, :1]

    best = first_values(search, error, DEDICATED).min()
    return float(best / front_at(PROBLEM.front(), level))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger.info("| search | candidates | %s |", " | ".join(f"{level:.0%}" for level in LEVELS))
    logger.info("| --- | ---: |%s", " ---: |" * len(LEVELS))
    for budget in BUDGETS:
        for name, label in (("pymoo", "NSGA-III"), ("memetic", "memetic")):
            cells = " | ".join(f"{ratio:.3f}" for ratio in range_ratios(name, budget))
            logger.info("| %s | %d | %s |", label, budget, cells)
    cells = " | ".join(f"{dedicated_ratio(level):.3f}" if level in (0.5, 0.6, 0.7) else "" for level in LEVELS)
    logger.info("| sensitivity, one per level | %d each | %s |", DEDICATED, cells)


if __name__ == "__main__":
    main()
