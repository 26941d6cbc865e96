"""Search algorithms behind one ask/tell protocol.

The driver never runs an optimiser's own loop: evaluations happen on Ray actors, one
generation at a time. So every algorithm here is driven from outside:

    genomes = algorithm.ask()                  # [k, n_var], k <= pop_size, inside [xl, xu]
    objectives = evaluate(genomes)             # [k, n_obj]; a failed row is +inf or NaN
    algorithm.tell(genomes, objectives)        # minimisation; failed rows rank worst
    checkpoint = algorithm.state_dict()        # between tell and the next ask

Two implementations of NSGA-III share the protocol: pymoo's (the default) and optuna's
NSGAIIISampler (whose study can live in a database and be watched with optuna-dashboard). A
third, ``swap``, is the naive reference the NSGA-III searches are measured against: a (1 + lambda)
evolution that moves sparsity between two genes at a time, for one objective. A fourth,
``sensitivity``, is a model-based local search for one objective: it probes every gene on both
sides, fits a quadratic per gene and steps to the model's minimum, round after round.

Resuming must be exact: a run restored from ``state_dict()`` asks the same genomes as the
run that was never interrupted. Both implementations therefore snapshot their whole state,
random generators included, as pickled bytes. The optional repair function is never part of
the snapshot (it may be a closure); the restoring side passes it to the constructor again.
"""

from __future__ import annotations

import math
import pickle
import warnings
from abc import ABC, abstractmethod
from itertools import combinations
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import optuna
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

__all__ = [
    "ALGORITHMS",
    "MUTATIONS",
    "OptunaNSGA3",
    "PymooNSGA3",
    "RepairFn",
    "SearchAlgorithm",
    "SensitivitySearch",
    "SwapSearch",
    "das_dennis",
    "failed_rows",
    "make_algorithm",
    "model_step",
    "quadratic_through",
    "reference_directions",
]

RepairFn = Callable[[np.ndarray], np.ndarray]

# pymoo ranks a failed evaluation through a violated constraint, never through its objective
# values; they still must be finite so that no arithmetic on them produces NaN.
_FAILED_OBJECTIVE = 1e30


# ---------------------------------------------------------------------------------------------
# Reference directions
# ---------------------------------------------------------------------------------------------


def das_dennis(n_obj: int, n_partitions: int) -> np.ndarray:
    """Das and Dennis' evenly spaced points on the unit simplex, one row per direction.

    Each row is a composition of ``n_partitions`` into ``n_obj`` non-negative parts, divided by
    ``n_partitions``; there are C(n_partitions + n_obj - 1, n_obj - 1) of them.
    """
    if n_obj < 1 or n_partitions < 0:
        raise InputError(f"das-dennis needs n_obj >= 1 and n_partitions >= 0, got {n_obj}, {n_partitions}")
    if n_obj == 1:
        return np.ones((1, 1))
    if n_partitions == 0:
        return np.full((1, n_obj), 1.0 / n_obj)
    rows = []
    # Stars and bars: choosing n_obj - 1 bar positions among n_partitions + n_obj - 1 slots.
    for bars in combinations(range(n_partitions + n_obj - 1), n_obj - 1):
        edges = (-1, *bars, n_partitions + n_obj - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(n_obj)])
    return np.asarray(rows, dtype=float) / n_partitions


def _direction_count(n_obj: int, n_partitions: int) -> int:
    return math.comb(n_partitions + n_obj - 1, n_obj - 1)


def reference_directions(n_obj: int, pop_size: int) -> np.ndarray:
    """The densest das-dennis set with no more directions than the population has members.

    NSGA-III keeps about one survivor per direction, so more directions than members would
    leave some unserved; one objective needs a single direction.
    """
    if n_obj == 1:
        return das_dennis(1, 1)
    if pop_size < n_obj:
        raise InputError(f"population size {pop_size} is below the number of objectives {n_obj}; raise --pop")
    n_partitions = 1
    while _direction_count(n_obj, n_partitions + 1) <= pop_size:
        n_partitions += 1
    return das_dennis(n_obj, n_partitions)


# ---------------------------------------------------------------------------------------------
# The protocol
# ---------------------------------------------------------------------------------------------


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
        """Everything needed to continue exactly, as plain picklable data."""
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


# ---------------------------------------------------------------------------------------------
# pymoo
# ---------------------------------------------------------------------------------------------


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


def swap_moves(genome: np.ndarray, width: np.ndarray, step: float, max_swaps: int, rng: np.random.Generator) -> np.ndarray:
    """``genome`` after one to ``max_swaps`` moves of ``step * width`` from one gene to another."""
    moved = np.array(genome, dtype=float)
    for _ in range(rng.integers(1, max_swaps + 1)):
        up, down = rng.choice(len(moved), size=2, replace=False)
        moved[up] += step * width[up]
        moved[down] -= step * width[down]
    return moved


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


# ---------------------------------------------------------------------------------------------
# optuna
# ---------------------------------------------------------------------------------------------


class OptunaNSGA3(SearchAlgorithm):
    """optuna's NSGAIIISampler driven through ``study.ask()`` / ``study.tell()``.

    Genes are float parameters ``g0000, g0001, ...``. The repair acts on the genome handed to
    the evaluator only; optuna's trial keeps the genes it sampled (its parameters cannot be
    rewritten), so here the repair is part of the objective function, not of the population.

    A failed evaluation is told as COMPLETE with +inf objectives and the user attribute
    ``failed``: optuna's GA counts only COMPLETE trials towards a generation, so a FAIL state
    would leave the generation short and make the next whole batch random samples.

    ``storage`` (e.g. ``sqlite:///run/optuna.db``) keeps the study in a database that
    optuna-dashboard can open; without it the study lives in memory and is snapshotted whole.
    """

    name = "optuna"

    def __init__(self, n_var: int, xl: Any, xu: Any, n_obj: int, pop_size: int, seed: int = 0,
                 repair: RepairFn | None = None, initial: Any = None, storage: str | None = None,
                 study_name: str = "paretoprune") -> None:
        super().__init__(n_var, xl, xu, n_obj, pop_size, seed, repair, initial)
        self.storage = storage
        self.study_name = study_name
        self.gene_names = [f"g{i:04d}" for i in range(self.n_var)]
        self._study: Any = None  # created on the first ask, or restored from a checkpoint
        self._trials: list[Any] = []
        self._backend: Any = None  # the database connection, opened once

    # -- study -------------------------------------------------------------------------------

    def _storage(self) -> Any:
        """None (the study lives in memory) or this algorithm's one connection to the database."""
        if self.storage is not None and self._backend is None:
            self._backend = optuna.storages.get_storage(self.storage)
        return self._backend

    def _sampler(self) -> optuna.samplers.BaseSampler:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.NSGAIIISampler(
                population_size=self.pop_size,
                seed=self.seed,
                reference_points=reference_directions(self.n_obj, self.pop_size),
            )

    def _new_study(self) -> optuna.Study:
        try:
            study = optuna.create_study(storage=self._storage(), sampler=self._sampler(), study_name=self.study_name,
                                        directions=["minimize"] * self.n_obj)
        except optuna.exceptions.DuplicatedStudyError:
            raise InputError(f"optuna study '{self.study_name}' already exists in {self.storage}; "
                             "choose another study name or resume that run") from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            for genome in self.initial:
                study.enqueue_trial(dict(zip(self.gene_names, map(float, genome))))
        return study

    # -- ask / tell --------------------------------------------------------------------------

    def _ask(self) -> np.ndarray:
        if self._study is None:
            self._study = self._new_study()
        self._trials = [self._study.ask() for _ in range(self.pop_size)]
        sampled = np.array([self._suggest(trial) for trial in self._trials], dtype=float)
        return self._repaired(sampled)

    def _suggest(self, trial: optuna.Trial) -> list[float]:
        bounds = zip(self.gene_names, self.xl, self.xu)
        return [trial.suggest_float(name, float(lo), float(hi)) for name, lo, hi in bounds]

    def _tell(self, objectives: np.ndarray, failed: np.ndarray) -> None:
        for trial, values, bad in zip(self._trials, objectives, failed):
            if bad:
                trial.set_user_attr("failed", True)
                values = np.full(self.n_obj, np.inf)
            self._study.tell(trial, [float(v) for v in values])
        self._trials = []

    # -- snapshots ---------------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        if self._study is None:
            return {"study": None}
        if self.storage is None:
            return {"study": pickle.dumps(self._study, protocol=pickle.HIGHEST_PROTOCOL)}
        # The database holds the trials; the sampler's random state lives only here.
        backend = self._storage()
        study_id = backend.get_study_id_from_name(self.study_name)
        return {"sampler": pickle.dumps(self._study.sampler, protocol=pickle.HIGHEST_PROTOCOL),
                "n_trials": len(self._study.trials),
                "study_attrs": sorted(backend.get_study_system_attrs(study_id))}

    def _restore(self, snapshot: dict[str, Any]) -> None:
        self._trials = []
        if "sampler" not in snapshot:
            self._study = None if snapshot["study"] is None else pickle.loads(snapshot["study"])
            return
        if self.storage is None:
            raise InputError("this checkpoint was written by an optuna search with --storage; pass the same storage")
        self._forget_later_parent_choices(set(snapshot["study_attrs"]))
        sampler = pickle.loads(snapshot["sampler"])
        self._study = optuna.load_study(study_name=self.study_name, storage=self._storage(), sampler=sampler)
        self._fail_later_trials(int(snapshot["n_trials"]))

    def _forget_later_parent_choices(self, known: set[str]) -> None:
        """Clear the study attributes written after the checkpoint.

        The sampler caches each generation's parents in the study when it first picks them,
        drawing from its random generator. If the interrupted run picked the next parents,
        the restored generator must pick them again, so their cache must read empty (None).
        """
        backend = self._storage()
        try:
            study_id = backend.get_study_id_from_name(self.study_name)
        except KeyError:
            raise InputError(f"optuna study '{self.study_name}' is not in {self.storage}; "
                             "pass the run's storage") from None
        for key in sorted(set(backend.get_study_system_attrs(study_id)) - known):
            backend.set_study_system_attr(study_id, key, None)

    def _fail_later_trials(self, n_trials: int) -> None:
        """Fail the trials of the interrupted generation.

        Trials asked after the checkpoint were never told; as FAIL they are invisible to the
        GA, so the resumed run proposes what the uninterrupted one did. Completed trials past
        the checkpoint cannot be taken back: resuming from that checkpoint would not be exact.
        """
        for trial in self._study.get_trials(deepcopy=False)[n_trials:]:
            if trial.state == optuna.trial.TrialState.RUNNING:
                self._study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            elif trial.state != optuna.trial.TrialState.FAIL:
                raise InputError(f"optuna study '{self.study_name}' holds trials newer than the checkpoint; "
                                 "resume from a copy of the storage taken with the checkpoint")


# ---------------------------------------------------------------------------------------------
# A (1 + lambda) level-swap search
# ---------------------------------------------------------------------------------------------


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
        return {"rng": self._rng.bit_generator.state, "parent": self._parent, "value": self._parent_value}

    def _restore(self, snapshot: dict[str, Any]) -> None:
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = snapshot["rng"]
        self._parent, self._parent_value = snapshot["parent"], float(snapshot["value"])


# ---------------------------------------------------------------------------------------------
# A model-based local search: probe every gene, solve a separable quadratic, step
# ---------------------------------------------------------------------------------------------


def quadratic_through(
    minus: np.ndarray, centre: float, plus: np.ndarray, below: np.ndarray, above: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Slope and curvature ``(g, a)`` of ``f(x) = centre + g x + a x**2`` through three points.

    The points are ``(-below, minus)``, ``(0, centre)`` and ``(above, plus)`` per gene. A side
    that was not probed (a zero offset, at a bound) or failed (a non-finite value) leaves a line
    through the other side (curvature 0); a gene with neither side has slope and curvature 0.
    """
    rise = _secant(plus, centre, above)  # NaN where that side tells nothing
    fall = _secant(minus, centre, below)
    has_plus, has_minus = ~np.isnan(rise), ~np.isnan(fall)
    both = has_plus & has_minus
    span = np.asarray(above, dtype=float) + np.asarray(below, dtype=float)
    curvature = np.divide(rise + fall, span, out=np.zeros(span.shape), where=both)
    one_sided = np.where(has_plus, rise, np.where(has_minus, -fall, 0.0))
    slope = np.where(both, rise - curvature * above, one_sided)
    return slope, curvature


def _secant(values: np.ndarray, centre: float, offsets: np.ndarray) -> np.ndarray:
    """``(value - centre) / offset`` where a probe was made (offset != 0) and scored; NaN elsewhere."""
    values, offsets = np.asarray(values, dtype=float), np.asarray(offsets, dtype=float)
    usable = (offsets != 0) & np.isfinite(values) & np.isfinite(centre)
    differences = np.where(usable, values, 0.0) - (centre if np.isfinite(centre) else 0.0)
    return np.divide(differences, offsets, out=np.full(values.shape, np.nan), where=usable)


def model_step(slope: np.ndarray, curvature: np.ndarray, radius: float | np.ndarray) -> np.ndarray:
    """The minimiser of ``sum(g x + a x**2)`` over ``|x_i| <= radius`` with ``sum(x) == 0``.

    Moves that sum to zero keep the mean sparsity of equal layers, as swaps do (the repair
    handles unequal ones). A gene whose curvature is not positive is moved to the edge its
    slope points away from; the common shift ``lam`` is found by bisection.
    """
    slope, radius = np.asarray(slope, dtype=float), np.broadcast_to(np.asarray(radius, dtype=float), slope.shape)
    curvature = np.maximum(np.asarray(curvature, dtype=float), 1e-9 * (np.abs(slope).max() + 1e-12))

    def step_at(lam: float) -> np.ndarray:
        return np.clip(-(slope + lam) / (2 * curvature), -radius, radius)

    high = np.abs(slope).max() + (2 * curvature * radius).max() + 1.0  # every gene at -radius
    low = -high  # every gene at +radius
    for _ in range(100):  # step_at is decreasing in lam: find where the moves sum to zero
        middle = 0.5 * (low + high)
        if step_at(middle).sum() > 0:
            low = middle
        else:
            high = middle
    return step_at(0.5 * (low + high))


class SensitivitySearch(SearchAlgorithm):
    """Probe each gene on both sides, fit a quadratic per gene, move the centre to its minimum.

    One round asks ``2 * n_var`` probes (the centre with one gene moved by ``probe`` times the
    box width, up or down) and then ``pop_size`` steps toward the minimum of the separable
    quadratic model fitted to them, within a trust radius and with moves that sum to zero: the
    full step, and shorter ones. The best genome seen becomes the next centre. Every round
    shrinks probe and radius by ``shrink``, a round that found nothing better by its square.

    With ``two_sided_every`` k > 1, only every k-th round probes both sides; the rounds between
    probe each gene once, on the side the last model says is downhill, and refit the slopes
    with the curvatures kept: ``n_var`` probes instead of ``2 * n_var``.

    Unlike the swap search, a round's probes are all independent: a pool of many evaluators
    scores them at once. The first generation evaluates the start genomes (the baselines; the
    box's centre without them). One objective only.
    """

    name = "sensitivity"

    def __init__(self, n_var: int, xl: Any, xu: Any, n_obj: int, pop_size: int, seed: int = 0,
                 repair: RepairFn | None = None, initial: Any = None, probe: float = 1 / 6,
                 radius: float = 1 / 4, shrink: float = 0.7, two_sided_every: int = 1) -> None:
        if n_obj != 1:
            raise InputError(
                f"the sensitivity search optimises one objective, got {n_obj}; use pymoo or optuna for fronts"
            )
        if not (0 < probe <= 0.5 and 0 < radius <= 1 and 0 < shrink <= 1 and int(two_sided_every) >= 1):
            raise InputError("sensitivity search needs 0 < probe <= 0.5, 0 < radius <= 1, 0 < shrink <= 1 and "
                             f"two_sided_every >= 1; got {probe}, {radius}, {shrink}, {two_sided_every}")
        starts = 0 if initial is None else len(np.atleast_2d(initial))
        super().__init__(n_var, xl, xu, n_obj, max(pop_size, starts), seed, repair, initial)
        self.steps, self.shrink, self.two_sided_every = int(pop_size), float(shrink), int(two_sided_every)
        self._probe, self._radius = float(probe), float(radius)
        self._centre: np.ndarray | None = None
        self._centre_value = math.inf
        self._phase = "start"  # start -> probe -> step -> probe -> ...
        # The last round's probes: how far below and above the centre (its anchor) they went,
        # and the model fitted to them.
        self._anchor: np.ndarray | None = None
        self._offsets: tuple[np.ndarray, np.ndarray] | None = None
        self._model: tuple[np.ndarray, np.ndarray] | None = None
        self._signed: np.ndarray | None = None  # a one-sided round's offsets, signed
        self._predicted: np.ndarray | None = None  # and the slopes the last model predicts there
        self._improved = False
        self._rounds = 0

    @property
    def _width(self) -> np.ndarray:
        return self.xu - self.xl

    def _ask(self) -> np.ndarray:
        if self._phase == "start":
            starts = self.initial if len(self.initial) else ((self.xl + self.xu) / 2)[None, :]
            return self._repaired(starts)
        if self._phase == "probe":
            return self._repaired(self._probes())
        return self._repaired(self._model_steps())

    def _probes(self) -> np.ndarray:
        assert self._centre is not None
        reach = self._probe * self._width
        below = np.minimum(reach, self._centre - self.xl)
        above = np.minimum(reach, self.xu - self._centre)
        eye = np.eye(self.n_var)
        self._offsets, self._signed = (below, above), None
        if self._model is not None and self._rounds % self.two_sided_every != 0:
            self._predicted = self._slope_at(self._centre)
            up = ((self._predicted < 0) & (above > 0)) | (below <= 0)
            self._signed = np.where(up, above, -below)
        self._anchor, self._improved = self._centre.copy(), False
        if self._signed is not None:
            return self._anchor + eye * self._signed
        return np.concatenate([self._anchor - eye * below, self._anchor + eye * above])

    def _slope_at(self, genome: np.ndarray) -> np.ndarray:
        """The last model's slope per gene, moved from its anchor to ``genome``."""
        assert self._model is not None and self._anchor is not None
        slope, curvature = self._model
        return slope + 2 * curvature * (genome - self._anchor)

    def _model_steps(self) -> np.ndarray:
        assert self._anchor is not None and self._model is not None
        slope, curvature = self._model
        move = model_step(slope, curvature, self._radius * self._width)
        lengths = np.arange(self.steps, 0, -1) / self.steps  # the full step first
        return np.clip(self._anchor + lengths[:, None] * move, self.xl, self.xu)

    def _fitted(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model of this round's probes: both sides, or one side with the curvatures kept."""
        assert self._offsets is not None
        if self._signed is None:
            below, above = self._offsets
            return quadratic_through(values[: self.n_var], self._centre_value, values[self.n_var :], below, above)
        assert self._model is not None and self._predicted is not None
        curvature, offsets = self._model[1], self._signed
        # f(o) = f0 + g o + a o**2, so g = (f(o) - f0) / o - a o; a failed probe keeps the prediction.
        secant = _secant(values, self._centre_value, offsets)
        return np.where(np.isnan(secant), self._predicted, secant - curvature * offsets), curvature

    def _tell(self, objectives: np.ndarray, failed: np.ndarray) -> None:
        values = np.where(failed, math.inf, objectives[:, 0])
        if self._phase == "probe":
            self._model = self._fitted(values)
        best = int(np.argmin(values))
        if values[best] < self._centre_value:
            self._centre, self._centre_value = self._pending[best].copy(), float(values[best])
            self._improved = True
        if self._phase == "step":
            factor = self.shrink if self._improved else self.shrink**2
            self._probe, self._radius = self._probe * factor, self._radius * factor
            self._rounds += 1
        self._phase = "step" if self._phase == "probe" else "probe"

    def _snapshot(self) -> dict[str, Any]:
        keys = ("_centre", "_centre_value", "_phase", "_anchor", "_offsets", "_model", "_signed", "_predicted",
                "_improved", "_rounds", "_probe", "_radius")  # fmt: skip
        return {key: getattr(self, key) for key in keys}

    def _restore(self, snapshot: dict[str, Any]) -> None:
        for key, value in snapshot.items():
            setattr(self, key, value)


# ---------------------------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------------------------

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
