"""Both NSGA-III implementations behind the ask/tell protocol, on ZDT1 and friends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from paretoprune.errors import InputError
from paretoprune.search.algorithms import OptunaNSGA3, SearchAlgorithm, failed_rows
from paretoprune.search.algorithms.optuna_nsga3 import _generators
from paretoprune.search.checkpoint import load_checkpoint, save_checkpoint
from tests.search.algorithms.problems import (
    NAMES,
    assert_same_state,
    build,
    hypervolume_2d,
    pickle_disabled,
    run,
    zdt1,
    zdt1_with_failures,
)


def test_failed_rows_are_nan_or_infinite() -> None:
    values = np.array([[1.0, 2.0], [np.nan, 1.0], [np.inf, 0.0], [0.0, -np.inf]])
    assert failed_rows(values).tolist() == [False, True, True, True]


@pytest.mark.parametrize("name", NAMES)
def test_front_quality_improves_on_zdt1(name: str) -> None:
    algorithm = build(name)
    asked = run(algorithm, zdt1, 25)
    first = hypervolume_2d(zdt1(asked[0]))
    overall = hypervolume_2d(zdt1(np.vstack(asked)))
    assert overall > first + 1.0
    assert overall > 11.0  # the true front's hypervolume is about 11.77
    assert algorithm.generation == 25


@pytest.mark.parametrize("name", NAMES)
def test_failed_evaluations_rank_worst(name: str) -> None:
    asked = run(build(name, seed=1), zdt1_with_failures, 25)
    failing_share = [np.mean(genomes[:, 1] > 0.7) for genomes in asked]
    assert failing_share[0] > 0.1
    assert np.mean(failing_share[-5:]) < 0.1


@pytest.mark.parametrize("name", NAMES)
def test_single_objective_minimises(name: str) -> None:
    algorithm = build(name, n_var=4, xl=-1.0, xu=1.0, n_obj=1, pop_size=12)

    def sphere(genomes: np.ndarray) -> np.ndarray:
        return ((genomes - 0.3) ** 2).sum(axis=1, keepdims=True)

    best = [sphere(genomes).min() for genomes in run(algorithm, sphere, 30)]
    assert min(best) < best[0] / 5
    assert min(best) < 0.02


@pytest.mark.parametrize("name", NAMES)
def test_initial_genomes_lead_the_first_population(name: str) -> None:
    initial = np.array([[0.5] * 6, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    first = build(name, initial=initial).ask()
    assert first.shape == (20, 6)
    assert np.array_equal(first[:2], initial)
    assert np.all((first >= 0.0) & (first <= 1.0))


@pytest.mark.parametrize("name", NAMES)
def test_repair_is_applied_to_every_genome_asked(name: str) -> None:
    def to_grid(genomes: np.ndarray) -> np.ndarray:
        return np.round(genomes * 10) / 10

    for genomes in run(build(name, repair=to_grid), zdt1, 5):
        assert np.allclose(genomes * 10, np.round(genomes * 10))


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_gives_same_genomes(name: str) -> None:
    first = run(build(name, seed=7), zdt1_with_failures, 4)
    again = run(build(name, seed=7), zdt1_with_failures, 4)
    other = run(build(name, seed=8), zdt1_with_failures, 4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])


def _build_resumable(case: str, tmp_path: Path, **overrides: object) -> SearchAlgorithm:
    """``case`` is an algorithm's name, or "optuna-storage": optuna with its study in a database."""
    if case == "optuna-storage":
        return build("optuna", storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="run", **overrides)
    return build(case, **overrides)


@pytest.mark.parametrize("case", [*NAMES, "optuna-storage"])
def test_resume_from_checkpoint_continues_exactly(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    offset = 0.05

    def shifted_grid(genomes: np.ndarray) -> np.ndarray:  # a closure: never part of a checkpoint
        return np.clip(np.round(genomes * 20) / 20 + offset, 0.0, 1.0)

    settings = dict(repair=shifted_grid, initial=[[0.5] * 6])
    straight = build(case.removesuffix("-storage"), **settings)  # in memory: a database is slow
    uninterrupted = run(straight, zdt1_with_failures, 8)

    interrupted = _build_resumable(case, tmp_path, **settings)
    before = run(interrupted, zdt1_with_failures, 4)
    with pickle_disabled(monkeypatch):  # a checkpoint is plain data: no step may need pickle
        saved = interrupted.state_dict()
        save_checkpoint(tmp_path / "run", {"algorithm": saved})
        del interrupted

        resumed = _build_resumable(case, tmp_path, **settings)
        resumed.load_state_dict(load_checkpoint(tmp_path / "run")["algorithm"])
        assert resumed.generation == 4
        assert_same_state(resumed.state_dict(), saved)  # every part of the snapshot was put back
        after = run(resumed, zdt1_with_failures, 4)
    assert all(np.array_equal(a, b) for a, b in zip(uninterrupted, before + after))
    assert len(before + after) == len(uninterrupted) == 8
    if case != "optuna-storage":  # a database holds what the in-memory study snapshots
        assert_same_state(resumed.state_dict(), straight.state_dict())


def test_optuna_storage_resume_after_an_interrupted_generation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    small = dict(n_var=3, pop_size=6)  # a database commit per trial is slow: keep it small
    interrupted = build("optuna", storage=storage, study_name="run", **small)
    run(interrupted, zdt1, 2)
    save_checkpoint(tmp_path, {"algorithm": interrupted.state_dict()})
    lost = interrupted.ask()  # evaluated when the driver died: never told
    del interrupted

    resumed = build("optuna", storage=storage, study_name="run", **small)
    with pickle_disabled(monkeypatch):
        resumed.load_state_dict(load_checkpoint(tmp_path)["algorithm"])
        assert np.array_equal(resumed.ask(), lost)

    reference = build("optuna", **small)
    run(reference, zdt1, 2)
    assert np.array_equal(reference.ask(), lost)


def test_optuna_snapshot_holds_every_generator_of_the_sampler() -> None:
    algorithm = build("optuna", pop_size=4)
    run(algorithm, zdt1, 2)
    sampler = algorithm._study.sampler
    found = _generators_inside(sampler)
    assert len(found) >= 2  # the GA's and the random sampler's
    assert {id(generator) for generator in found} == {id(generator) for generator in _generators(sampler).values()}


def _generators_inside(root: object) -> list[object]:
    """Every numpy random generator reachable from ``root`` through optuna's objects."""
    found, seen, pending = [], set(), [root]
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, (np.random.RandomState, np.random.Generator)):
            found.append(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple, set)):
            pending.extend(item)
        elif type(item).__module__.startswith("optuna") and hasattr(item, "__dict__"):
            pending.extend(vars(item).values())
    return found


def test_optuna_checkpoint_must_match_the_storage_setting(tmp_path: Path) -> None:
    in_memory = build("optuna", pop_size=4)
    run(in_memory, zdt1, 1)
    stored = build("optuna", pop_size=4, storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="run")
    run(stored, zdt1, 1)
    with pytest.raises(InputError, match="without --storage"):
        build("optuna", pop_size=4, storage=f"sqlite:///{tmp_path / 'optuna.db'}").load_state_dict(
            in_memory.state_dict())
    with pytest.raises(InputError, match="with --storage"):
        build("optuna", pop_size=4).load_state_dict(stored.state_dict())


def test_optuna_refuses_to_overwrite_a_stored_study(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    run(build("optuna", storage=storage, study_name="taken", pop_size=2), zdt1, 1)
    with pytest.raises(InputError, match="already exists"):
        build("optuna", storage=storage, study_name="taken", pop_size=2).ask()


def test_optuna_marks_failed_trials() -> None:
    algorithm = build("optuna", pop_size=4)
    genomes = algorithm.ask()
    values = zdt1(genomes)
    values[1] = np.nan
    algorithm.tell(genomes, values)
    assert isinstance(algorithm, OptunaNSGA3)
    trials = algorithm._study.trials
    assert [t.user_attrs.get("failed", False) for t in trials] == [False, True, False, False]
    assert trials[1].values == [np.inf, np.inf]


@pytest.mark.parametrize("name", NAMES)
def test_protocol_misuse_is_refused(name: str) -> None:
    algorithm = build(name)
    with pytest.raises(RuntimeError):
        algorithm.tell(np.zeros((20, 6)), np.zeros((20, 2)))
    genomes = algorithm.ask()
    with pytest.raises(RuntimeError):
        algorithm.ask()
    with pytest.raises(RuntimeError):
        algorithm.state_dict()
    with pytest.raises(ValueError):
        algorithm.tell(genomes + 0.01, zdt1(genomes))
    with pytest.raises(ValueError):
        algorithm.tell(genomes, np.zeros((len(genomes), 3)))
    algorithm.tell(genomes, zdt1(genomes))


def test_bad_settings_are_input_errors() -> None:
    with pytest.raises(InputError, match="unknown search algorithm"):
        build("cmaes")
    with pytest.raises(InputError, match="optuna"):
        build("pymoo", storage="sqlite:///x.db")
    with pytest.raises(InputError, match="do not fit"):
        build("pymoo", pop_size=2, initial=np.zeros((3, 6)))
    with pytest.raises(InputError, match="bound"):
        build("pymoo", xl=1.0, xu=0.0)
    with pytest.raises(InputError):
        build("optuna", pop_size=1)
    resumed = build("pymoo")
    with pytest.raises(InputError, match="optuna"):
        resumed.load_state_dict(build("optuna").state_dict())
