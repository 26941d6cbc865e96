"""pymoo's NSGA-III behind the ask/tell protocol (the default search algorithm)."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
from pymoo.algorithms.moo.nsga3 import NSGA3
from pymoo.core.evaluator import Evaluator
from pymoo.core.mutation import Mutation
from pymoo.core.problem import Problem
from pymoo.core.repair import Repair
from pymoo.core.sampling import Sampling
from pymoo.core.termination import NoTermination
from pymoo.operators.selection.tournament import TournamentSelection
from pymoo.problems.static import StaticProblem

from paretoprune.errors import InputError
from paretoprune.search.algorithms.base import RepairFn, SearchAlgorithm
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
    """Wraps a plain ``genomes -> genomes`` function as a pymoo Repair.

    The function is not pickled (it may be a closure over a model's layout); whoever restores
    a snapshot sets ``function`` again.
    """

    def __init__(self, function: RepairFn | None) -> None:
        super().__init__()
        self.function = function

    def _do(self, problem: Problem, X: np.ndarray, **kwargs: Any) -> np.ndarray:
        if self.function is None:
            raise RuntimeError("the repair function was not restored after loading a checkpoint")
        return self.function(X)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "function": None}


def _tournament_by_feasibility(pop: Any, P: np.ndarray, random_state: Any = None, **kwargs: Any) -> np.ndarray:
    """NSGA-III's binary tournament: the smaller constraint violation wins, else a coin flip.

    pymoo ships this rule, but wrapped by a decorator that cannot be pickled, and a checkpoint
    must pickle the whole algorithm; hence this plain module-level copy of the rule.
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

    def _snapshot(self) -> dict[str, Any]:
        # The repair wrapper drops its function when pickled (see _CallableRepair).
        return {"pymoo_algorithm": pickle.dumps(self._algorithm, protocol=pickle.HIGHEST_PROTOCOL)}

    def _restore(self, snapshot: dict[str, Any]) -> None:
        algorithm = pickle.loads(snapshot["pymoo_algorithm"])
        # One wrapper object serves initialization and mating; give it this run's repair.
        algorithm.repair.function = self._repaired
        self._algorithm = algorithm
        self._population = None
