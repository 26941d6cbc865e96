"""The sensitivity search: probe each gene, solve a separable quadratic, step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from paretoprune.errors import InputError
from paretoprune.search.algorithms import SensitivitySearch, model_step, quadratic_through
from paretoprune.search.checkpoint import load_checkpoint, save_checkpoint
from tests.search.algorithms.problems import (
    OPTIMUM,
    assert_same_state,
    bowl,
    build_sensitivity,
    build_swap,
    pickle_disabled,
    run,
)


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


@pytest.mark.parametrize("two_sided_every", [1, 2])
@pytest.mark.parametrize("generations", [0, 3, 4])  # before the start, after a step round, after a probe round
def test_sensitivity_resume_continues_exactly(
    two_sided_every: int, generations: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = {"two_sided_every": two_sided_every}
    straight = build_sensitivity(options=options)
    uninterrupted = run(straight, bowl, 7)
    interrupted = build_sensitivity(options=options)
    before = run(interrupted, bowl, generations)
    with pickle_disabled(monkeypatch):  # a checkpoint is plain data: no step may need pickle
        saved = interrupted.state_dict()
        save_checkpoint(tmp_path, {"algorithm": saved})
        resumed = build_sensitivity(options=options)
        resumed.load_state_dict(load_checkpoint(tmp_path)["algorithm"])
        assert_same_state(resumed.state_dict(), saved)  # every part of the snapshot was put back
        after = run(resumed, bowl, 7 - generations)
    assert len(before + after) == 7
    assert all(np.array_equal(a, b) for a, b in zip(uninterrupted, before + after))
    assert_same_state(resumed.state_dict(), straight.state_dict())


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
