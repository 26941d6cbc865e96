"""The two-objective hypervolume against areas worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from paretoprune.search.hypervolume import hypervolume_2d, reference_point


def test_hypervolume_of_a_staircase_worked_by_hand() -> None:
    # Points (1, 3), (2, 2), (3, 1) under the reference (4, 4): strips of width 3, 2 and 1,
    # each one unit high: 3 + 2 + 1 = 6.
    points = np.array([[3.0, 1.0], [1.0, 3.0], [2.0, 2.0]])
    assert hypervolume_2d(points, (4.0, 4.0)) == pytest.approx(6.0)


def test_dominated_outside_and_failed_points_add_nothing() -> None:
    staircase = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    extra = np.array([[2.5, 2.5], [2.0, 2.0], [5.0, 0.5], [0.5, 4.0], [np.nan, 0.0], [0.0, np.inf]])
    assert hypervolume_2d(np.vstack([staircase, extra]), (4.0, 4.0)) == pytest.approx(6.0)
    assert hypervolume_2d(np.empty((0, 2)), (4.0, 4.0)) == 0.0


def test_one_point_is_its_rectangle_and_a_better_point_adds_area() -> None:
    assert hypervolume_2d(np.array([[1.0, -0.5]]), (2.0, 0.0)) == pytest.approx(0.5)
    # (0.5, -0.25) adds the 0.5 x 0.25 strip left of x = 1 below y = 0.
    both = np.array([[1.0, -0.5], [0.5, -0.25]])
    assert hypervolume_2d(both, (2.0, 0.0)) == pytest.approx(0.5 + 0.5 * 0.25)


def test_reference_point_is_the_worst_pushed_out_by_the_spread() -> None:
    points = np.array([[1.0, -0.8], [3.0, -0.4], [np.inf, 0.0]])
    assert np.allclose(reference_point(points), [3.2, -0.36])
    assert np.allclose(reference_point(np.array([[2.0, 0.0]])), [2.2, 0.1])  # no spread
    with pytest.raises(ValueError):
        reference_point(np.array([[np.nan, 1.0]]))
