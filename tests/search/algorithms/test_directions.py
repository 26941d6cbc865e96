"""NSGA-III reference directions."""

from __future__ import annotations

import numpy as np
import pytest

from paretoprune.errors import InputError
from paretoprune.search.algorithms import das_dennis, reference_directions


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
