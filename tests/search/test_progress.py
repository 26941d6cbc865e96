"""The front's progress: size and hypervolume per generation, the same read back from an archive."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from paretoprune.search.pareto import Objectives
from paretoprune.search.progress import FrontProgress

OBJECTIVES = Objectives(("kl", "sparsity"))


def _frame(rows: list[tuple[int, float, float, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["generation", "kl", "sparsity", "status"])


def test_reference_is_fixed_by_the_first_generation_and_hypervolume_grows() -> None:
    progress = FrontProgress(2)
    assert progress.text() == "front 0"
    # Minimised (kl, -sparsity). Reference: worst (3, -0.4) pushed out by 10 % of the spread.
    progress.add(np.array([[1.0, -0.4], [3.0, -0.8], [np.inf, np.inf]]))
    assert np.allclose(progress.reference, [3.2, -0.36])
    first = progress.hypervolume
    # By hand: (3.2 - 1) x (-0.36 + 0.4) + (3.2 - 3) x (-0.4 + 0.8) = 0.088 + 0.08.
    assert first == pytest.approx(0.168)
    progress.add(np.array([[2.0, -0.8], [9.0, -0.9]]))  # a better point, and one past the reference
    assert np.allclose(progress.reference, [3.2, -0.36])  # unchanged
    assert progress.hypervolume == pytest.approx(0.168 + 1.0 * 0.4)
    assert progress.text() == f"front 3, hypervolume {progress.hypervolume:.4g}"


def test_an_archive_read_back_gives_what_the_generations_added() -> None:
    rows = [(0, 0.5, 0.4, "ok"), (0, 2.0, 0.8, "ok"), (0, np.nan, np.nan, "failed"),
            (1, 1.0, 0.7, "ok"), (2, 0.2, 0.4, "ok"), (2, 5.0, 0.9, "ok")]  # fmt: skip
    frame = _frame(rows)
    live = FrontProgress(2)
    for _, generation in frame[frame["status"] == "ok"].groupby("generation"):
        live.add(OBJECTIVES.minimised(generation[["kl", "sparsity"]].to_numpy()))
    read = FrontProgress.of(frame, OBJECTIVES)
    assert np.array_equal(read.reference, live.reference)
    assert read.hypervolume == pytest.approx(live.hypervolume)
    assert len(read.front) == 4  # (0.5, 0.4) is dominated by (0.2, 0.4)


def test_one_objective_reports_nothing_extra() -> None:
    progress = FrontProgress.of(_frame([(0, 0.5, 0.4, "ok")])[["generation", "kl", "status"]], Objectives(("kl",)))
    assert progress.text() == "" and progress.hypervolume is None


def test_rows_scored_by_finalists_do_not_count() -> None:
    frame = _frame([(0, 0.5, 0.4, "ok"), (0, 2.0, 0.8, "ok"), (1, 0.1, 0.8, "ok")])
    frame["fidelity"] = ["base", "base", "16384+update"]  # a finalist's row: another measurement
    assert len(FrontProgress.of(frame, OBJECTIVES).front) == 2
