"""Building algorithms by name: options are checked per algorithm."""

from __future__ import annotations

import numpy as np
import pytest

from paretoprune.errors import InputError
from tests.search.algorithms.problems import build, build_sensitivity, build_swap, tilted


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
