"""optuna's NSGAIIISampler behind the ask/tell protocol; its study can live in a database and
be watched with optuna-dashboard."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import optuna

from paretoprune.errors import InputError
from paretoprune.search.algorithms.base import RepairFn, SearchAlgorithm
from paretoprune.search.algorithms.directions import reference_directions

__all__ = ["OptunaNSGA3"]


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
        self._backend: optuna.storages.BaseStorage | None = None  # the study's storage, opened once

    # -- study -------------------------------------------------------------------------------

    def _storage(self) -> optuna.storages.BaseStorage:
        """This algorithm's one connection to the database, or the storage of its in-memory study."""
        if self._backend is None:
            self._backend = (optuna.storages.InMemoryStorage() if self.storage is None
                             else optuna.storages.get_storage(self.storage))  # fmt: skip
        return self._backend

    def _sampler(self) -> optuna.samplers.NSGAIIISampler:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.NSGAIIISampler(
                population_size=self.pop_size,
                seed=self.seed,
                reference_points=reference_directions(self.n_obj, self.pop_size),
            )

    def _create_study(self, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
        try:
            return optuna.create_study(storage=self._storage(), sampler=sampler, study_name=self.study_name,
                                       directions=["minimize"] * self.n_obj)  # fmt: skip
        except optuna.exceptions.DuplicatedStudyError:
            raise InputError(f"optuna study '{self.study_name}' already exists in {self.storage}; "
                             "choose another study name or resume that run") from None

    def _new_study(self) -> optuna.Study:
        study = self._create_study(self._sampler())
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
    #
    # The sampler keeps nothing between generations but its random generators: it caches each
    # generation's parents in the study's system attributes and reads everything else from the
    # trials. A snapshot is therefore those generators and, for a study in memory, every trial
    # and the study's attributes; a database keeps the trials itself.

    def _snapshot(self) -> dict[str, Any]:
        if self._study is None:
            return {"study": None}
        random_states = _random_states(self._study.sampler)
        backend = self._storage()
        study_id = backend.get_study_id_from_name(self.study_name)
        if self.storage is None:
            # Copies: the study goes on changing these dicts in place after the snapshot.
            return {"study": "memory", "random": random_states, "trials": self._trials_state(),
                    "study_attrs": copy.deepcopy(backend.get_study_system_attrs(study_id))}  # fmt: skip
        return {"study": "storage", "random": random_states, "n_trials": len(self._study.trials),
                "study_attrs": sorted(backend.get_study_system_attrs(study_id))}  # fmt: skip

    def _restore(self, snapshot: dict[str, Any]) -> None:
        self._trials = []
        kind = snapshot["study"]
        if kind is None:
            self._study = None
        elif kind == "memory":
            self._restore_memory_study(snapshot)
        elif kind == "storage":
            self._restore_stored_study(snapshot)
        else:
            raise InputError(f"the checkpoint holds an optuna study of unknown kind {kind!r}; "
                             "resume with the release that wrote it")  # fmt: skip

    def _trials_state(self) -> dict[str, Any]:
        """Every trial of the in-memory study, as columns (one row per trial, in order).

        Each trial is asked and told within one generation, and suggests every gene, so that
        between generations all of them are complete and share the genes' distributions.
        """
        trials = self._study.get_trials(deepcopy=False)
        distributions = trials[0].distributions if trials else {}
        for trial in trials:
            if trial.state != optuna.trial.TrialState.COMPLETE or trial.distributions != distributions:
                raise RuntimeError(f"trial {trial.number} is {trial.state.name} or suggested other genes: "
                                   "the in-memory study can be snapshotted only between generations")  # fmt: skip
        return {
            "numbers": np.array([trial.number for trial in trials], dtype=np.int64),
            "ids": np.array([trial._trial_id for trial in trials], dtype=np.int64),
            "distributions": {name: optuna.distributions.distribution_to_json(distribution)
                              for name, distribution in distributions.items()},  # fmt: skip
            "params": np.array([[trial.params[name] for name in distributions] for trial in trials], dtype=float),
            "values": np.array([trial.values for trial in trials], dtype=float).reshape(len(trials), self.n_obj),
            "user_attrs": [copy.deepcopy(trial.user_attrs) for trial in trials],
            "system_attrs": [copy.deepcopy(trial.system_attrs) for trial in trials],
        }

    def _restore_memory_study(self, snapshot: dict[str, Any]) -> None:
        """A new in-memory study holding the snapshot's trials, study attributes and generators."""
        if self.storage is not None:
            raise InputError("this checkpoint was written by an optuna search without --storage; drop --storage")
        self._backend = None  # a new storage numbers its trials from zero again, as the first one did
        sampler = self._sampler()
        _set_random_states(sampler, snapshot["random"])
        self._study = self._create_study(sampler)
        self._add_trials(snapshot["trials"])
        backend = self._storage()
        study_id = backend.get_study_id_from_name(self.study_name)
        for key, value in snapshot["study_attrs"].items():
            backend.set_study_system_attr(study_id, key, value)

    def _add_trials(self, trials: dict[str, Any]) -> None:
        distributions = {name: optuna.distributions.json_to_distribution(text)
                         for name, text in trials["distributions"].items()}  # fmt: skip
        rows = zip(trials["params"], trials["values"], trials["user_attrs"], trials["system_attrs"])
        for params, values, user_attrs, system_attrs in rows:
            self._study.add_trial(optuna.trial.create_trial(
                params={name: float(value) for name, value in zip(distributions, params)},
                distributions=distributions,
                values=[float(value) for value in values],
                user_attrs=user_attrs,
                system_attrs=system_attrs,
            ))  # fmt: skip
        # The cached parents name trials by id: the new study must have given the same ones.
        added = self._study.get_trials(deepcopy=False)
        numbers, ids = [trial.number for trial in added], [trial._trial_id for trial in added]
        if numbers != trials["numbers"].tolist() or ids != trials["ids"].tolist():
            raise RuntimeError("the restored optuna study numbered its trials differently from the checkpoint")

    def _restore_stored_study(self, snapshot: dict[str, Any]) -> None:
        """Reopen the study in the database, as it was when the snapshot was taken."""
        if self.storage is None:
            raise InputError("this checkpoint was written by an optuna search with --storage; pass the same storage")
        self._forget_later_parent_choices(set(snapshot["study_attrs"]))
        sampler = self._sampler()
        _set_random_states(sampler, snapshot["random"])
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


# -- the sampler's random generators ----------------------------------------------------------


def _generators(sampler: optuna.samplers.NSGAIIISampler) -> dict[str, np.random.RandomState]:
    """Every random generator the sampler draws from, by name.

    The sampler's own generator is shared with its parent selection, crossover and mutation;
    the random sampler it holds fills the first generation and any gene the GA leaves open.
    """
    return {"sampler": sampler._rng.rng, "random_sampler": sampler._random_sampler._rng.rng}


def _random_states(sampler: optuna.samplers.NSGAIIISampler) -> dict[str, dict[str, Any]]:
    return {name: generator.get_state(legacy=False) for name, generator in _generators(sampler).items()}


def _set_random_states(sampler: optuna.samplers.NSGAIIISampler, states: dict[str, dict[str, Any]]) -> None:
    for name, generator in _generators(sampler).items():
        generator.set_state(states[name])
