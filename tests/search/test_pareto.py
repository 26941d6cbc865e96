"""Pareto dominance: the mask against its definition, and objectives taken in their direction."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from paretoprune.errors import InputError
from paretoprune.search.pareto import Objectives, non_dominated_mask


def brute_force_front(F: np.ndarray, keep_duplicates: bool = True) -> np.ndarray:
    """The definition, literally: nothing dominates the row (and, optionally, no earlier twin)."""
    mask = np.zeros(len(F), dtype=bool)
    for i in range(len(F)):
        if np.isnan(F[i]).any():
            continue
        dominated = any(
            np.all(F[j] <= F[i]) and np.any(F[j] < F[i]) for j in range(len(F)) if not np.isnan(F[j]).any()
        )
        earlier_twin = any(np.array_equal(F[j], F[i]) for j in range(i))
        mask[i] = not dominated and (keep_duplicates or not earlier_twin)
    return mask


@pytest.mark.parametrize("columns", [1, 2, 3, 4])
@pytest.mark.parametrize("keep_duplicates", [True, False])
def test_non_dominated_mask_matches_brute_force(columns: int, keep_duplicates: bool) -> None:
    rng = np.random.default_rng(columns)
    for trial in range(5):
        F = rng.integers(0, 6, size=(120, columns)).astype(float)  # many ties and duplicates
        if trial % 2:
            F[rng.random(120) < 0.1, 0] = np.nan
        expected = brute_force_front(F, keep_duplicates)
        assert np.array_equal(non_dominated_mask(F, keep_duplicates), expected)


def test_non_dominated_mask_on_continuous_data() -> None:
    F = np.random.default_rng(0).normal(size=(300, 3))
    assert np.array_equal(non_dominated_mask(F), brute_force_front(F))


def test_objectives_know_their_directions_and_signs() -> None:
    objectives = Objectives.of(["kl", "sparsity", "params"])
    assert objectives.directions == ("minimize", "maximize", "minimize")
    assert objectives.signs.tolist() == [1.0, -1.0, 1.0]
    assert list(objectives) == ["kl", "sparsity", "params"] and objectives.first == "kl"
    assert "sparsity" in objectives and "ppl" not in objectives
    assert Objectives.of(objectives) is objectives
    assert objectives.is_better(0.1, than=0.2) and not Objectives.of(["sparsity"]).is_better(0.1, than=0.2)
    with pytest.raises(InputError, match="at least one objective"):
        Objectives.of([])


def test_a_failed_result_is_the_worst_in_every_direction() -> None:
    # A failed candidate must not look like the sparsest one when sparsity is maximised.
    rows = Objectives.of(["kl", "sparsity"]).minimised_results([{"kl": 0.5, "sparsity": 0.6}, None])
    assert rows[0].tolist() == [0.5, -0.6]
    assert rows[1].tolist() == [math.inf, math.inf]


def test_the_front_maximises_sparsity_and_skips_failed_and_infinite_rows() -> None:
    frame = pd.DataFrame({
        "eval_id": [0, 1, 2, 3, 4, 5],
        "kl": [0.5, 0.5, 0.9, 0.1, 0.05, 0.3],
        "sparsity": [0.6, 0.5, 0.7, 0.4, 0.9, math.inf],
        "status": ["ok", "ok", "ok", "ok", "failed", "ok"],
    })  # fmt: skip
    front = Objectives.of(["kl", "sparsity"]).front(frame)
    # 1 is dominated by 0 (same kl, less sparse); 4 failed; 5 is not finite.
    assert front["eval_id"].tolist() == [3, 0, 2]
    assert Objectives.of(["kl"]).front(frame)["eval_id"].tolist() == [3]
    with pytest.raises(InputError, match=r"no column for the objectives \['ppl'\]"):
        Objectives.of(["ppl"]).front(frame)
