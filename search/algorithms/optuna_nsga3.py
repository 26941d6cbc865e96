"""optuna's NSGAIIISampler behind the ask/tell protocol; its study can live in a database and
be watched with optuna-dashboard."""

from __future__ import annotations

import pickle
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
