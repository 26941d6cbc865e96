"""Small real problems and drivers shared by the algorithm tests (no model involved)."""

from __future__ import annotations

import pickle
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import pytest

from paretoprune.search.algorithms import SearchAlgorithm, make_algorithm
from paretoprune.search.pareto import non_dominated_mask

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


def build_swap(**overrides: object) -> SearchAlgorithm:
    arguments: dict[str, object] = dict(n_var=6, xl=-1.0, xu=1.0, n_obj=1, pop_size=4, seed=0)
    arguments.update(overrides)
    return make_algorithm("swap", **arguments)  # type: ignore[arg-type]


def tilted(genomes: np.ndarray) -> np.ndarray:
    """Minimised by moving mass from the last gene to the first: a mean-preserving optimum."""
    return (np.abs(genomes - np.array([0.6, 0.2, 0.0, 0.0, -0.2, -0.6])).sum(axis=1))[:, None]


def build_sensitivity(**overrides: object) -> SearchAlgorithm:
    arguments: dict[str, object] = dict(n_var=6, xl=-1.0, xu=1.0, n_obj=1, pop_size=2, seed=0)
    arguments.update(overrides)
    return make_algorithm("sensitivity", **arguments)  # type: ignore[arg-type]


CURVATURES = np.array([1.0, 2.0, 4.0, 1.0, 3.0, 0.5])
OPTIMUM = np.array([0.6, 0.2, 0.0, 0.0, -0.2, -0.6])  # sums to zero: reachable by zero-sum moves


def bowl(genomes: np.ndarray) -> np.ndarray:
    """A separable quadratic with its minimum 0 at OPTIMUM."""
    return (CURVATURES * (genomes - OPTIMUM) ** 2).sum(axis=1)[:, None]


@contextmanager
def pickle_disabled(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Within this block any pickling or unpickling fails, numpy's pickled arrays included.

    Checkpoints are plain data: saving, loading and resuming must never need pickle.
    """

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle was used")

    real_load = np.load

    def load_without_pickle(*args: Any, allow_pickle: bool = False, **kwargs: Any) -> Any:
        if allow_pickle:
            raise AssertionError("np.load was asked to unpickle")
        return real_load(*args, allow_pickle=False, **kwargs)

    with monkeypatch.context() as patch:
        for name in ("load", "loads", "Unpickler", "dump", "dumps", "Pickler"):
            patch.setattr(pickle, name, refuse)
        patch.setattr(np, "load", load_without_pickle)
        yield


def assert_same_state(loaded: Any, expected: Any, path: str = "state") -> None:
    """Equal state trees: the same values of exactly the same types, arrays of the same dtype and shape."""
    assert type(loaded) is type(expected), path
    if isinstance(expected, np.ndarray):
        assert loaded.dtype == expected.dtype and loaded.shape == expected.shape, path
        assert np.array_equal(loaded, expected, equal_nan=expected.dtype.kind in "fc"), path
    elif isinstance(expected, dict):
        assert list(loaded) == list(expected), path
        for key in expected:
            assert_same_state(loaded[key], expected[key], f"{path}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(loaded) == len(expected), path
        for index, (a, b) in enumerate(zip(loaded, expected)):
            assert_same_state(a, b, f"{path}[{index}]")
    elif isinstance(expected, float) and np.isnan(expected):
        assert np.isnan(loaded), path
    else:
        assert loaded == expected, path

