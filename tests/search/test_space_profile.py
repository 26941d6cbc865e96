"""The depth profile of a range search's layer genes: fixed deviations, or scaled with the target."""

from __future__ import annotations

import numpy as np
import pytest

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.metrics.scores import SCORING_RULES
from paretoprune.models import find_layout
from paretoprune.search.config import SearchConfig, load_config
from paretoprune.search.space import SearchSpace, SpaceConfig, profile_scale
from paretoprune.testing import tiny_model

# A small depth profile: block 0 spared, block 1 pruned harder (no bound is reached at 40-80 %).
DEVIATIONS = (-0.02, 0.02, 0.0, 0.0)


@pytest.fixture(scope="module")
def layout():
    return find_layout(tiny_model("llama", layers=4))


def _space(layout, profile: str) -> SearchSpace:
    return SearchSpace(layout, SpaceConfig(sparsity=None, sparsity_range=(0.4, 0.8), delta=0.1, profile=profile))


def _profiled(layout, target: float) -> Candidate:
    sparsities = {name: target + DEVIATIONS[linear.block_index] for name, linear in zip(layout.names, layout.linears)}
    return Candidate(SCORING_RULES["wanda"], sparsities)


def _block_deviations(layout, candidate: Candidate, target: float) -> np.ndarray:
    per_block = {linear.block_index: candidate.sparsities[name] for name, linear in zip(layout.names, layout.linears)}
    return np.array([per_block[block] - target for block in sorted(per_block)])


def test_the_scale_is_the_targets_odds_over_those_of_half() -> None:
    assert profile_scale(0.5) == pytest.approx(1.0)
    assert profile_scale(0.6) == pytest.approx(1.5) and profile_scale(0.7) == pytest.approx(7 / 3)
    assert profile_scale(0.4) == pytest.approx(2 / 3)
    assert np.all(np.diff([profile_scale(t) for t in np.linspace(0.05, 0.95, 19)]) > 0)


@pytest.mark.parametrize("level", [0.4, 0.6, 0.7])
def test_one_genome_keeps_its_deviations_fixed_or_grows_them_with_the_odds(layout, level: float) -> None:
    moved = {}
    for profile in ("fixed", "scaled"):
        space = _space(layout, profile)
        genome = space.encode(_profiled(layout, 0.5), 0.5)
        genome[-1] = level
        moved[profile] = _block_deviations(layout, space.decode(genome), level)
    assert moved["fixed"] == pytest.approx(DEVIATIONS, abs=1e-9)
    assert moved["scaled"] == pytest.approx(np.array(DEVIATIONS) * profile_scale(level), abs=1e-9)


def test_a_scaled_space_encodes_and_decodes_a_candidate_at_any_target(layout) -> None:
    space = _space(layout, "scaled")
    candidate = _profiled(layout, 0.7)
    genome = space.encode(candidate, 0.7)
    assert genome[-1] == 0.7 and np.abs(genome[:-1]).max() < 1.0
    assert space.decode(genome).sparsities == pytest.approx(dict(candidate.sparsities), abs=1e-9)
    # The same profile written at 50 % has genes larger by the scale.
    assert space.encode(_profiled(layout, 0.5), 0.5)[:-1] == pytest.approx(genome[:-1] * profile_scale(0.7))


def test_an_unknown_profile_is_refused_in_one_line(layout) -> None:
    with pytest.raises(InputError, match="unknown profile 'odd': use one of fixed, scaled"):
        _space(layout, "odd")


def test_the_profile_travels_from_the_search_config_and_old_configs_read_as_fixed() -> None:
    config = SearchConfig(model="m", out="o", sparsity=None, sparsity_range=(0.4, 0.8), profile="scaled")
    assert config.space_config().profile == "scaled"
    assert load_config({"model": "m", "out": "o"}).profile == "fixed"
    assert load_config(config.to_dict()) == config
