"""A global scoring rule as layerwise mode's base metric: its candidates name it, its baselines too."""

from __future__ import annotations

import numpy as np
import pytest

from paretoprune.errors import InputError
from paretoprune.metrics.scores import KNOWN_METRICS
from paretoprune.models import ModelLayout, find_layout
from paretoprune.search.space import SearchSpace, SpaceConfig, check_space_config
from paretoprune.testing import tiny_model
from tests.search.test_space import random_genomes, weighted_mean


@pytest.fixture(scope="module")
def layout() -> ModelLayout:
    return find_layout(tiny_model("llama", layers=3))


def test_decoded_candidates_name_the_rule_and_keep_the_target(layout: ModelLayout) -> None:
    space = SearchSpace(layout, SpaceConfig(sparsity=0.6, base_metric="LRP"))
    assert space.global_rule == "lrp" and space.n_var == 3  # the layer genes alone
    for genome in random_genomes(space, 5):
        candidate = space.decode(genome)
        assert candidate.global_rule == "lrp" and candidate.metric == KNOWN_METRICS["wanda"]  # a label
        assert weighted_mean(space, candidate) == pytest.approx(0.6, abs=1e-9)
        assert np.allclose(space.encode(candidate), space.repair(genome[None])[0])


def test_the_baselines_are_uniform_and_owl_under_the_rule(layout: ModelLayout) -> None:
    owl = {name: 0.5 + 0.1 * (index % 3 - 1) for index, name in enumerate(layout.names)}
    space = SearchSpace(layout, SpaceConfig(sparsity=0.5, base_metric="lrp", rows=True), owl_sparsities=owl)
    baselines = space.baselines()
    assert set(baselines) == {"lrp", "lrp+trim", "owl-lrp", "owl-lrp+trim"}
    uniform, with_owl = space.decode(baselines["lrp"]), space.decode(baselines["owl-lrp"])
    assert uniform.global_rule == with_owl.global_rule == "lrp" and uniform.rows == "uniform"
    assert list(uniform.sparsities.values()) == pytest.approx([0.5] * len(layout.names))
    assert with_owl.sparsities != uniform.sparsities


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (SpaceConfig(mode="metric", sparsity=0.5, base_metric="lrp"),
         "base metric lrp is a global scoring rule, whose scores a search cannot move: use it with --mode layerwise, "
         "not metric"),
        (SpaceConfig(mode="joint", sparsity=0.5, base_metric="unipruning-static"), "--mode layerwise, not joint"),
        (SpaceConfig(sparsity=0.5, base_metric="shapley"),
         "unknown base metric 'shapley': choose a scoring rule (magnitude, wanda, "),
    ],
)  # fmt: skip
def test_a_global_rule_outside_layerwise_mode_or_an_unknown_name_is_refused(config: SpaceConfig, message: str) -> None:
    with pytest.raises(InputError) as caught:
        check_space_config(config)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    if "unknown" in message:
        assert "or a global rule (unipruning, unipruning-static, lrp)" in str(caught.value)


def test_the_plots_uniform_curves_are_drawn_under_the_rule_and_named_as_the_baselines(layout: ModelLayout) -> None:
    from paretoprune.search.baselines import curve_points

    owl = {name: 0.5 + 0.1 * (index % 3 - 1) for index, name in enumerate(layout.names)}
    space = SearchSpace(layout, SpaceConfig(sparsity=0.5, base_metric="lrp"), owl_sparsities=owl)
    points = curve_points(space, lambda level: owl)
    assert [(name, curve) for name, curve, _, _ in points] == [("lrp", "uniform lrp"), ("owl-lrp", "owl + lrp")]
    assert all(candidate.global_rule == "lrp" for *_, candidate in points)
    assert {name for name, *_ in points} <= set(space.baselines())
