"""pymoo's NSGA-III behind the ask/tell protocol (the default search algorithm)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pymoo.algorithms.moo.nsga3 import NSGA3
from pymoo.core.evaluator import Evaluator
from pymoo.core.mutation import Mutation
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.core.repair import Repair
from pymoo.core.sampling import Sampling
from pymoo.core.termination import NoTermination
from pymoo.operators.selection.tournament import TournamentSelection
from pymoo.problems.static import StaticProblem

from paretoprune.errors import InputError
from paretoprune.search.algorithms.base import RepairFn, SearchAlgorithm, failed_rows
from paretoprune.search.algorithms.directions import reference_directions
from paretoprune.search.algorithms.swap import swap_moves

__all__ = ["MUTATIONS", "PymooNSGA3"]

# pymoo ranks a failed evaluation through a violated constraint, never through its objective
# values; they still must be finite so that no arithmetic on them produces NaN.
_FAILED_OBJECTIVE = 1e30


class _BoxProblem(Problem):
    """A pymoo problem that only describes the box; evaluation happens outside pymoo.

    One inequality constraint marks failed evaluations as infeasible, so that NSGA-III ranks
    them below every successful one without their objective values entering its arithmetic.
    """

    def __init__(self, n_var: int, n_obj: int, xl: np.ndarray, xu: np.ndarray) -> None:
        super().__init__(n_var=n_var, n_obj=n_obj, n_ieq_constr=1, xl=xl, xu=xu)

    def _evaluate(self, x: np.ndarray, out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("genomes are evaluated by the search driver, not by pymoo")


class _StartSampling(Sampling):
    """The first population: the given start genomes, then uniform random ones."""

    def __init__(self, initial: np.ndarray) -> None:
        super().__init__()
        self.initial = initial

    def _do(self, problem: Problem, n_samples: int, *args: Any, random_state: Any = None, **kwargs: Any) -> np.ndarray:
        n_random = max(n_samples - len(self.initial), 0)
        unit = random_state.random((n_random, problem.n_var))
        return np.vstack([self.initial, problem.xl + (problem.xu - problem.xl) * unit])


class _CallableRepair(Repair):
    """Wraps a plain ``genomes -> genomes`` function as a pymoo Repair."""

    def __init__(self, function: RepairFn) -> None:
        super().__init__()
        self.function = function

    def _do(self, problem: Problem, X: np.ndarray, **kwargs: Any) -> np.ndarray:
        return self.function(X)


def _tournament_by_feasibility(pop: Any, P: np.ndarray, random_state: Any = None, **kwargs: Any) -> np.ndarray:
    """NSGA-III's binary tournament: the smaller constraint violation wins, else a coin flip.

    pymoo ships this rule, but breaks a tie between two equally infeasible parents with a new,
    unseeded generator: runs would not repeat, and a resumed run would not continue exactly.
    This copy flips every coin with the algorithm's own seeded generator.
    """
    violation = pop.get("CV")[:, 0]
    winners = np.empty(len(P), dtype=int)
    for row, (a, b) in enumerate(P):
        if max(violation[a], violation[b]) > 0.0 and violation[a] != violation[b]:
            winners[row] = a if violation[a] < violation[b] else b
        else:
            winners[row] = random_state.choice([a, b])
    return winners[:, None]


def _tournament_by_feasibility_then_value(pop: Any, P: np.ndarray, random_state: Any = None, **kwargs: Any) -> np.ndarray:
    """One objective: the smaller constraint violation wins, then the smaller objective value.

    With one objective NSGA-III's niching has nothing to spread, so parents are chosen by
    value, as in a plain genetic algorithm.
    """
    violation, value = pop.get("CV")[:, 0], pop.get("F")[:, 0]
    winners = np.empty(len(P), dtype=int)
    for row, (a, b) in enumerate(P):
        if violation[a] != violation[b]:
            winners[row] = a if violation[a] < violation[b] else b
        elif value[a] != value[b]:
            winners[row] = a if value[a] < value[b] else b
        else:
            winners[row] = random_state.choice([a, b])
    return winners[:, None]


class _SwapMutation(Mutation):
    """Moves ``step`` of the box width from one gene to another, one to three times per child.

    For layer genes of equal weight the move keeps the mean sparsity; the repair fixes the
    rest. It is the move of the naive swap search, given to NSGA-III's children in place of
    polynomial mutation.
    """

    def __init__(self, step: float = 1 / 15, max_swaps: int = 3) -> None:
        super().__init__(prob=1.0)
        self.step, self.max_swaps = float(step), int(max_swaps)

    def _do(self, problem: Problem, X: np.ndarray, *args: Any, random_state: Any = None, **kwargs: Any) -> np.ndarray:
        width = problem.xu - problem.xl
        moved = [swap_moves(child, width, self.step, self.max_swaps, random_state) for child in X]
        return np.clip(np.array(moved, dtype=float).reshape(np.shape(X)), problem.xl, problem.xu)


MUTATIONS = ("polynomial", "swap")


class PymooNSGA3(SearchAlgorithm):
    """pymoo's NSGA3 with das-dennis directions, duplicate elimination and an optional repair.

    The repair is applied inside pymoo (to the first population and to every offspring), so
    the population holds repaired genomes: what is evaluated is what breeds. ``initial``
    genomes fill the first population; random ones fill the rest. Children are made by SBX
    crossover, then ``mutation``: pymoo's polynomial mutation, or ``swap`` moves (see
    ``_SwapMutation``). With one objective, parents are chosen by value.
    """

    name = "pymoo"

    def __init__(self, n_var: int, xl: Any, xu: Any, n_obj: int, pop_size: int, seed: int = 0,
                 repair: RepairFn | None = None, initial: Any = None, mutation: str = "polynomial") -> None:
        super().__init__(n_var, xl, xu, n_obj, pop_size, seed, repair, initial)
        if mutation not in MUTATIONS:
            raise InputError(f"unknown mutation {mutation!r}: use one of {', '.join(MUTATIONS)}")
        self.mutation = mutation
        self._algorithm = self._build()
        self._population: Any = None

    def _build(self) -> Any:
        compare = _tournament_by_feasibility_then_value if self.n_obj == 1 else _tournament_by_feasibility
        extra = {"mutation": _SwapMutation()} if self.mutation == "swap" else {}
        algorithm = NSGA3(
            ref_dirs=reference_directions(self.n_obj, self.pop_size),
            pop_size=self.pop_size,
            sampling=_StartSampling(self.initial),
            selection=TournamentSelection(func_comp=compare),
            repair=_CallableRepair(self._repaired),
            eliminate_duplicates=True,
            **extra,
        )
        problem = _BoxProblem(self.n_var, self.n_obj, self.xl, self.xu)
        algorithm.setup(problem, seed=self.seed, termination=NoTermination(), verbose=False)
        return algorithm

    def _ask(self) -> np.ndarray:
        self._population = self._algorithm.ask()
        if self._population is None:  # mating found no new unique genome
            return np.empty((0, self.n_var))
        return self._population.get("X")

    def _tell(self, objectives: np.ndarray, failed: np.ndarray) -> None:
        if self._population is None:
            return
        values = np.where(failed[:, None], _FAILED_OBJECTIVE, objectives)
        violation = failed.astype(float)[:, None]
        Evaluator().eval(StaticProblem(self._algorithm.problem, F=values, G=violation), self._population)
        self._algorithm.tell(infills=self._population)
        self._population = None

    def absorb(self, genomes: np.ndarray, objectives: np.ndarray) -> None:
        """Merge genomes evaluated elsewhere into the population, through NSGA-III's survival.

        A memetic search improves members by local steps; absorbed, the improved genomes
        compete with the population and breed like any child (Lamarckian learning). Only after
        the first generation was told: before it there is no population to merge with.
        """
        if self._pending is not None or self._population is not None:
            raise RuntimeError("absorb() between ask() and tell(): absorb after tell()")
        if not self._algorithm.is_initialized:
            raise RuntimeError("absorb() before the first generation was told")
        genomes = np.asarray(genomes, dtype=float).reshape(-1, self.n_var)
        if len(genomes) == 0:
            return
        values = np.asarray(objectives, dtype=float).reshape(len(genomes), self.n_obj)
        failed = failed_rows(values)
        population = Population.new("X", genomes)
        Evaluator().eval(StaticProblem(self._algorithm.problem, F=np.where(failed[:, None], _FAILED_OBJECTIVE, values),
                                       G=failed.astype(float)[:, None]), population)  # fmt: skip
        self._algorithm.tell(infills=population)

    def _snapshot(self) -> dict[str, Any]:
        return _algorithm_state(self._algorithm)

    def _restore(self, snapshot: dict[str, Any]) -> None:
        # The parts made from the constructor's arguments (directions, operators, the repair of
        # this run) are built afresh; only what the generations changed is put back.
        self._algorithm = self._build()
        _set_algorithm_state(self._algorithm, snapshot)
        self._population = None


# -- snapshots of pymoo's NSGA3 ---------------------------------------------------------------
#
# What one generation hands to the next: the surviving population (mating breeds from it and
# survival merges it with the children), the survival's normalisation (ideal, worst and nadir
# points and extreme points, each updated from the last), the best individuals found, the
# random generator, and the counters. The last children (``off``) are never read again, and the
# wall-clock start (pymoo reports run times from it) restarts with the resumed run.


def _algorithm_state(algorithm: NSGA3) -> dict[str, Any]:
    survival, normalisation = algorithm.survival, algorithm.survival.norm
    return {
        "initialized": bool(algorithm.is_initialized),
        "n_iter": algorithm.n_iter,
        "n_eval": int(algorithm.evaluator.n_eval),
        "terminated": bool(algorithm.termination.force_termination),
        "random": algorithm.random_state.bit_generator.state,
        "population": _population_state(algorithm.pop),
        "optimum": _population_state(algorithm.opt),
        "survival": {
            "optimum": _population_state(survival.opt),
            "ideal": normalisation.ideal_point,
            "worst": normalisation.worst_point,
            "nadir": normalisation.nadir_point,
            "extremes": normalisation.extreme_points,
        },
    }


def _set_algorithm_state(algorithm: NSGA3, state: dict[str, Any]) -> None:
    """Put ``_algorithm_state`` back into a freshly built and set up ``algorithm``."""
    algorithm.is_initialized = bool(state["initialized"])
    algorithm.n_iter = state["n_iter"]
    algorithm.evaluator.n_eval = int(state["n_eval"])
    algorithm.termination.force_termination = bool(state["terminated"])
    algorithm.start_time = time.time() if algorithm.is_initialized else None  # pymoo reports run times from it
    algorithm.random_state.bit_generator.state = state["random"]
    algorithm.pop = _population_from(state["population"])
    algorithm.opt = _population_from(state["optimum"])
    survival, normalisation = state["survival"], algorithm.survival.norm
    algorithm.survival.opt = _population_from(survival["optimum"])
    normalisation.ideal_point, normalisation.worst_point = survival["ideal"], survival["worst"]
    normalisation.nadir_point, normalisation.extreme_points = survival["nadir"], survival["extremes"]


def _population_state(population: Population | None) -> dict[str, Any] | None:
    """A population as arrays, one row per individual: what it is, scored, and was labelled.

    Besides genomes, objectives and constraints, pymoo labels individuals (the generation that
    made them, their front and niche); labels every individual carries are kept.
    """
    if population is None:
        return None
    labels = set.intersection(*(set(individual.data) for individual in population)) if len(population) else set()
    return {
        "X": population.get("X"),
        "F": population.get("F"),
        "G": population.get("G"),
        "H": population.get("H"),
        "CV": population.get("CV"),
        "evaluated": [sorted(individual.evaluated) for individual in population],
        "labels": {label: population.get(label) for label in sorted(labels)},
    }


def _population_from(state: dict[str, Any] | None) -> Population | None:
    if state is None:
        return None
    population = Population.new("X", state["X"])
    population.set("F", state["F"], "G", state["G"], "H", state["H"], "CV", state["CV"], **state["labels"])
    for individual, evaluated in zip(population, state["evaluated"]):
        individual.evaluated = set(evaluated)
    return population
