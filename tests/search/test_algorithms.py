"""The ask/tell search algorithms on small real problems (no model involved)."""

from __future__ import annotations

import numpy as np
import pytest

from paretoprune.errors import InputError
from paretoprune.search.algorithms import (
    OptunaNSGA3,
    SearchAlgorithm,
    SensitivitySearch,
    das_dennis,
    failed_rows,
    make_algorithm,
    model_step,
    quadratic_through,
    reference_directions,
)
from paretoprune.search.archive import non_dominated_mask
from paretoprune.search.checkpoint import load_checkpoint, save_checkpoint

NAMES = ["pymoo", "optuna"]


def zdt1(genomes: np.ndarray) -> np.ndarray:
    """ZDT1: a convex 2-objective front at g == 1 (every gene but the first at 0)."""
    f1 = genomes[:, 0]
    g = 1.0 + 9.0 * genomes[:, 1:].mean(axis=1)
    return np.stack([f1, g * (1.0 - np.sqrt(f1 / g))], axis=1)


def hypervolume_2d(points: np.ndarray, reference: tuple[float, float] = (1.1, 11.0)) -> float:
    """Area dominated by ``points`` (minimised) up to ``reference``."""
    front = points[non_dominated_mask(points)]
    front = front[np.all(front < reference, axis=1)]
    front = front[np.argsort(front[:, 0])]
    area, ceiling = 0.0, reference[1]
    for f1, f2 in front:
        area += (reference[0] - f1) * (ceiling - f2)
        ceiling = f2
    return area


def build(name: str, **overrides: object) -> SearchAlgorithm:
    arguments: dict[str, object] = dict(n_var=6, xl=0.0, xu=1.0, n_obj=2, pop_size=20, seed=0)
    arguments.update(overrides)
    return make_algorithm(name, **arguments)  # type: ignore[arg-type]


def zdt1_with_failures(genomes: np.ndarray) -> np.ndarray:
    """ZDT1 where every genome with gene 1 above 0.7 fails (NaN or +inf, alternately)."""
    values = zdt1(genomes)
    bad = np.flatnonzero(genomes[:, 1] > 0.7)
    values[bad[::2]] = np.nan
    values[bad[1::2]] = np.inf
    return values


def run(algorithm: SearchAlgorithm, objective, generations: int) -> list[np.ndarray]:
    """Drive ``generations`` rounds; returns the genomes asked in each."""
    asked = []
    for _ in range(generations):
        genomes = algorithm.ask()
        algorithm.tell(genomes, objective(genomes))
        asked.append(genomes)
    return asked


def test_das_dennis_spans_the_simplex_evenly() -> None:
    directions = das_dennis(3, 4)
    assert directions.shape == (15, 3)  # C(4 + 2, 2)
    assert np.allclose(directions.sum(axis=1), 1.0)
    assert np.allclose(directions * 4, np.round(directions * 4))
    assert len(np.unique(directions, axis=0)) == 15


def test_reference_directions_fit_the_population() -> None:
    assert reference_directions(2, 20).shape == (20, 2)
    assert reference_directions(3, 20).shape == (15, 3)  # the next set would have 21
    assert reference_directions(1, 7).tolist() == [[1.0]]
    with pytest.raises(InputError):
        reference_directions(4, 3)


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


@pytest.mark.parametrize("name", NAMES)
def test_resume_from_checkpoint_continues_exactly(name: str, tmp_path) -> None:
    offset = 0.05

    def shifted_grid(genomes: np.ndarray) -> np.ndarray:  # a closure: never pickled
        return np.clip(np.round(genomes * 20) / 20 + offset, 0.0, 1.0)

    initial = [[0.5] * 6]
    uninterrupted = run(build(name, repair=shifted_grid, initial=initial), zdt1_with_failures, 8)

    interrupted = build(name, repair=shifted_grid, initial=initial)
    before = run(interrupted, zdt1_with_failures, 4)
    save_checkpoint(tmp_path, {"algorithm": interrupted.state_dict()})
    del interrupted

    resumed = build(name, repair=shifted_grid, initial=initial)
    resumed.load_state_dict(load_checkpoint(tmp_path)["algorithm"])
    assert resumed.generation == 4
    after = run(resumed, zdt1_with_failures, 4)
    assert all(np.array_equal(a, b) for a, b in zip(uninterrupted, before + after))


def test_optuna_storage_resume_after_an_interrupted_generation(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    small = dict(n_var=3, pop_size=6)  # a database commit per trial is slow: keep it small
    interrupted = build("optuna", storage=storage, study_name="run", **small)
    run(interrupted, zdt1, 2)
    save_checkpoint(tmp_path, {"algorithm": interrupted.state_dict()})
    lost = interrupted.ask()  # evaluated when the driver died: never told
    del interrupted

    resumed = build("optuna", storage=storage, study_name="run", **small)
    resumed.load_state_dict(load_checkpoint(tmp_path)["algorithm"])
    assert np.array_equal(resumed.ask(), lost)

    reference = build("optuna", **small)
    run(reference, zdt1, 2)
    assert np.array_equal(reference.ask(), lost)


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


# ---------------------------------------------------------------------------------------------
# The swap search (one objective, a parent and its children)


def build_swap(**overrides: object) -> SearchAlgorithm:
    arguments: dict[str, object] = dict(n_var=6, xl=-1.0, xu=1.0, n_obj=1, pop_size=4, seed=0)
    arguments.update(overrides)
    return make_algorithm("swap", **arguments)  # type: ignore[arg-type]


def tilted(genomes: np.ndarray) -> np.ndarray:
    """Minimised by moving mass from the last gene to the first: a mean-preserving optimum."""
    return (np.abs(genomes - np.array([0.6, 0.2, 0.0, 0.0, -0.2, -0.6])).sum(axis=1))[:, None]


def test_swap_children_keep_the_gene_sum_and_differ_by_whole_steps() -> None:
    algorithm = build_swap(initial=np.zeros((2, 6)))
    first = algorithm.ask()
    assert first.shape == (2, 6)  # the start genomes only
    algorithm.tell(first, tilted(first))
    children = algorithm.ask()
    assert children.shape == (4, 6)
    assert np.allclose(children.sum(axis=1), 0.0)  # every step up has its step down
    steps = children / (2 / 15)
    assert np.allclose(steps, np.round(steps)) and np.all(np.abs(children).sum(axis=1) > 0)


def test_swap_search_descends_and_never_loses_its_best() -> None:
    algorithm = build_swap()
    asked = run(algorithm, tilted, 60)
    best = np.minimum.accumulate([tilted(genomes).min() for genomes in asked])
    assert best[-1] < best[0] / 4
    parents = [tilted(g).min() for g in asked[1:]]
    assert min(parents) >= best[-1] - 1e-12


def test_swap_resume_continues_exactly(tmp_path) -> None:
    uninterrupted = run(build_swap(seed=3), tilted, 10)
    interrupted = build_swap(seed=3)
    before = run(interrupted, tilted, 5)
    save_checkpoint(tmp_path, {"algorithm": interrupted.state_dict()})
    resumed = build_swap(seed=3)
    resumed.load_state_dict(load_checkpoint(tmp_path)["algorithm"])
    after = run(resumed, tilted, 5)
    assert all(np.array_equal(a, b) for a, b in zip(uninterrupted, before + after))


def test_swap_refuses_what_it_cannot_search() -> None:
    with pytest.raises(InputError, match="one objective"):
        build_swap(n_obj=2)
    with pytest.raises(InputError, match="two genes"):
        build_swap(n_var=1)
    # More start genomes than children: all of them are evaluated first, none is refused.
    assert build_swap(initial=np.zeros((7, 6))).ask().shape == (7, 6)


def test_pymoo_with_swap_mutation_minimises_one_objective() -> None:
    algorithm = build("pymoo", n_var=6, xl=-1.0, xu=1.0, n_obj=1, pop_size=8, mutation="swap")
    best = np.minimum.accumulate([tilted(genomes).min() for genomes in run(algorithm, tilted, 30)])
    assert best[-1] < best[0] / 4
    assert best[-1] < 0.5


def test_mutation_is_checked_and_belongs_to_pymoo() -> None:
    with pytest.raises(InputError, match="unknown mutation"):
        build("pymoo", mutation="gaussian")
    with pytest.raises(InputError, match="pymoo option"):
        build("optuna", mutation="swap")


# ---------------------------------------------------------------------------------------------
# The sensitivity search (probe each gene, solve a separable quadratic, step)


def build_sensitivity(**overrides: object) -> SearchAlgorithm:
    arguments: dict[str, object] = dict(n_var=6, xl=-1.0, xu=1.0, n_obj=1, pop_size=2, seed=0)
    arguments.update(overrides)
    return make_algorithm("sensitivity", **arguments)  # type: ignore[arg-type]


CURVATURES = np.array([1.0, 2.0, 4.0, 1.0, 3.0, 0.5])
OPTIMUM = np.array([0.6, 0.2, 0.0, 0.0, -0.2, -0.6])  # sums to zero: reachable by zero-sum moves


def bowl(genomes: np.ndarray) -> np.ndarray:
    """A separable quadratic with its minimum 0 at OPTIMUM."""
    return (CURVATURES * (genomes - OPTIMUM) ** 2).sum(axis=1)[:, None]


def test_quadratic_through_recovers_slope_and_curvature() -> None:
    slope, curvature = np.array([0.5, -1.0, 2.0]), np.array([3.0, 0.0, -1.0])
    below, above = np.array([0.2, 0.1, 0.3]), np.array([0.1, 0.1, 0.05])
    f = lambda x: 7.0 + slope * x + curvature * x**2  # noqa: E731
    fitted = quadratic_through(f(-below), 7.0, f(above), below, above)
    assert np.allclose(fitted[0], slope) and np.allclose(fitted[1], curvature)


def test_quadratic_through_falls_back_to_one_side() -> None:
    # Gene 0 sits at its lower bound (no probe below), gene 1's upper probe failed, gene 2 has neither.
    slope, curvature = quadratic_through(
        minus=np.array([np.nan, 0.0, np.inf]), centre=1.0, plus=np.array([1.5, np.nan, np.nan]),
        below=np.array([0.0, 0.5, 0.5]), above=np.array([0.5, 0.5, 0.5]),
    )  # fmt: skip
    assert np.allclose(slope, [1.0, 2.0, 0.0]) and np.allclose(curvature, 0.0)


def test_model_step_sums_to_zero_and_respects_the_radius() -> None:
    slope = np.array([-4.0, 1.0, 0.5, 3.0])
    move = model_step(slope, np.array([1.0, 1.0, 0.0, 2.0]), radius=0.3)
    assert abs(move.sum()) < 1e-6 and np.all(np.abs(move) <= 0.3 + 1e-12)
    assert move[0] > 0 and move[3] < 0  # downhill on the steepest genes
    # Inside the radius the step is the exact constrained minimiser of the quadratic model.
    exact = model_step(np.array([1.0, -1.0]), np.array([1.0, 1.0]), radius=10.0)
    assert np.allclose(exact, [-0.5, 0.5])


def test_sensitivity_rounds_probe_every_gene_then_step() -> None:
    algorithm = build_sensitivity(initial=np.zeros((1, 6)))
    start = algorithm.ask()
    algorithm.tell(start, bowl(start))
    probes = algorithm.ask()
    assert probes.shape == (12, 6)
    moved = np.abs(probes) > 0
    assert np.all(moved.sum(axis=1) == 1) and np.all(moved[:6].argmax(axis=1) == np.arange(6))
    assert np.allclose(np.abs(probes).sum(axis=1), 2 / 6)  # probe: a sixth of the box width
    algorithm.tell(probes, bowl(probes))
    steps = algorithm.ask()
    assert steps.shape == (2, 6) and np.allclose(steps.sum(axis=1), 0.0)
    assert np.allclose(steps[1], steps[0] / 2)  # the full step, then half of it
    # On a separable quadratic the model is exact: the full step lands on the optimum,
    # clipped to the trust radius (a quarter of the width).
    assert np.allclose(steps[0], np.clip(OPTIMUM, -0.5, 0.5), atol=1e-6)


def test_sensitivity_search_converges_on_a_separable_bowl() -> None:
    asked = run(build_sensitivity(), bowl, 9)  # start and four rounds
    best = np.minimum.accumulate([bowl(genomes).min() for genomes in asked])
    assert best[-1] < 1e-6 < best[0]


def test_sensitivity_search_beats_the_swap_search_on_a_bowl_at_equal_evaluations() -> None:
    sensitivity = run(build_sensitivity(), bowl, 5)  # 1 + 2 * (12 + 2) = 29 evaluations
    swap = run(build_swap(), bowl, 8)  # 1 + 7 * 4 = 29 evaluations
    assert sum(map(len, sensitivity)) == sum(map(len, swap)) == 29
    best = lambda asked: min(bowl(g).min() for g in asked)  # noqa: E731
    assert best(sensitivity) < best(swap) / 10


def test_sensitivity_resume_continues_exactly(tmp_path) -> None:
    uninterrupted = run(build_sensitivity(), bowl, 7)
    interrupted = build_sensitivity()
    before = run(interrupted, bowl, 4)
    save_checkpoint(tmp_path, {"algorithm": interrupted.state_dict()})
    resumed = build_sensitivity()
    resumed.load_state_dict(load_checkpoint(tmp_path)["algorithm"])
    after = run(resumed, bowl, 3)
    assert all(np.array_equal(a, b) for a, b in zip(uninterrupted, before + after))


def test_sensitivity_survives_failed_probes_and_refuses_fronts() -> None:
    def failing_bowl(genomes: np.ndarray) -> np.ndarray:
        values = bowl(genomes)
        values[genomes[:, 0] < -0.1] = np.nan  # every probe that lowers gene 0 fails
        return values

    best = np.nanmin(np.concatenate([failing_bowl(g) for g in run(build_sensitivity(), failing_bowl, 9)]))
    assert np.isfinite(best) and best < bowl(np.zeros((1, 6)))[0, 0] / 2
    with pytest.raises(InputError, match="one objective"):
        build_sensitivity(n_obj=2)
    with pytest.raises(InputError, match="probe"):
        SensitivitySearch(n_var=6, xl=-1.0, xu=1.0, n_obj=1, pop_size=2, probe=0.0)


def test_one_sided_rounds_probe_each_gene_once_downhill() -> None:
    algorithm = build_sensitivity(options={"two_sided_every": 2})
    sizes = [len(genomes) for genomes in run(algorithm, bowl, 7)]
    assert sizes == [1, 12, 2, 6, 2, 12, 2]  # two-sided, one-sided, two-sided rounds


def test_one_sided_rounds_keep_an_exact_model_exact() -> None:
    # On a separable quadratic the kept curvatures are right, so one-sided slopes are exact too,
    # and the steps of a one-sided round still head for the optimum.
    asked = run(build_sensitivity(options={"two_sided_every": 3}), bowl, 9)
    best = np.minimum.accumulate([bowl(genomes).min() for genomes in asked])
    assert best[-1] < 1e-6 < best[0]
    uninterrupted = run(build_sensitivity(options={"two_sided_every": 2}), bowl, 7)
    interrupted = build_sensitivity(options={"two_sided_every": 2})
    state = (run(interrupted, bowl, 4), interrupted.state_dict())
    resumed = build_sensitivity(options={"two_sided_every": 2})
    resumed.load_state_dict(state[1])
    assert all(np.array_equal(a, b) for a, b in zip(uninterrupted, state[0] + run(resumed, bowl, 3)))


def test_algorithm_options_are_checked() -> None:
    coarse = build_swap(options={"step": 0.1}, initial=np.zeros((1, 6)))
    start = coarse.ask()
    coarse.tell(start, tilted(start))
    steps = coarse.ask() / (0.1 * 2)  # the swap search's moves, in units of the step asked for
    assert np.allclose(steps, np.round(steps)) and np.abs(steps).max() >= 1
    with pytest.raises(InputError, match="not one of sensitivity's"):
        build_sensitivity(options={"stepsize": 0.1})
    with pytest.raises(InputError, match="not pymoo"):
        build("pymoo", options={"probe": 0.1})
    with pytest.raises(InputError, match="two_sided_every"):
        build_sensitivity(options={"two_sided_every": 0})
