"""The swap search (one objective, a parent and its children) and pymoo with swap moves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from paretoprune.errors import InputError
from paretoprune.search.checkpoint import load_checkpoint, save_checkpoint
from tests.search.algorithms.problems import assert_same_state, build, build_swap, pickle_disabled, run, tilted


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


@pytest.mark.parametrize("generations", [0, 1, 5])  # before the first parent, with it, later
def test_swap_resume_continues_exactly(generations: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    straight = build_swap(seed=3)
    uninterrupted = run(straight, tilted, 10)
    interrupted = build_swap(seed=3)
    before = run(interrupted, tilted, generations)
    with pickle_disabled(monkeypatch):  # a checkpoint is plain data: no step may need pickle
        saved = interrupted.state_dict()
        save_checkpoint(tmp_path, {"algorithm": saved})
        resumed = build_swap(seed=3)
        resumed.load_state_dict(load_checkpoint(tmp_path)["algorithm"])
        assert_same_state(resumed.state_dict(), saved)  # every part of the snapshot was put back
        after = run(resumed, tilted, 10 - generations)
    assert len(before + after) == 10
    assert all(np.array_equal(a, b) for a, b in zip(uninterrupted, before + after))
    assert_same_state(resumed.state_dict(), straight.state_dict())


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
