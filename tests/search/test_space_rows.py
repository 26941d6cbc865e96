"""The row gene: opt-in, one discrete gene before the target, TRIM baselines where it is on."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.metrics.scores import KNOWN_METRICS
from paretoprune.models import ModelLayout, find_layout
from paretoprune.search.config import SearchConfig, load_config
from paretoprune.search.space import SearchSpace, SpaceConfig
from paretoprune.testing import tiny_model
from tests.search.test_space import random_genomes, weighted_mean

WANDA = KNOWN_METRICS["wanda"]


@pytest.fixture(scope="module")
def layout() -> ModelLayout:
    return find_layout(tiny_model("llama", layers=3))


def test_the_gene_adds_one_variable_before_the_target(layout: ModelLayout) -> None:
    plain = SearchSpace(layout, SpaceConfig(mode="joint", sparsity=None, sparsity_range=(0.4, 0.8)))
    rows = SearchSpace(layout, SpaceConfig(mode="joint", sparsity=None, sparsity_range=(0.4, 0.8), rows=True))
    assert rows.n_var == plain.n_var + 1
    lower, upper = rows.bounds
    assert (lower[-2], upper[-2]) == (0.0, 2.0) and (lower[-1], upper[-1]) == (0.4, 0.8)
    for genome in random_genomes(rows, 10, seed=1):  # the target is still the last gene
        assert weighted_mean(rows, rows.decode(genome)) == pytest.approx(genome[-1], abs=1e-6)


def test_genomes_decode_to_both_row_allocations_and_encode_back(layout: ModelLayout) -> None:
    space = SearchSpace(layout, SpaceConfig(sparsity=0.6, delta=0.3, rows=True))
    genomes = random_genomes(space, 40, seed=2)
    genomes[:, :-1] *= 0.3  # small layer genes: no sparsity reaches the band's edge
    decoded = [space.decode(genome) for genome in genomes]
    assert {candidate.rows for candidate in decoded} == {"uniform", "trim"}
    for candidate in decoded:
        back = space.decode(space.encode(candidate))
        assert back.rows == candidate.rows and back.sparsities == pytest.approx(candidate.sparsities, abs=1e-9)
    repaired = space.repair(np.stack([space.encode(c) for c in decoded]))
    assert [space.decode(g).rows for g in repaired] == [c.rows for c in decoded]


def test_without_the_gene_every_candidate_has_uniform_rows_and_trim_is_refused(layout: ModelLayout) -> None:
    space = SearchSpace(layout, SpaceConfig(sparsity=0.6))
    assert all(space.decode(g).rows == "uniform" for g in random_genomes(space, 10, seed=3))
    trim = Candidate(metric=WANDA, sparsities={name: 0.6 for name in layout.names}, rows="trim")
    with pytest.raises(InputError, match="rows are trim, which this space does not search: .*--search-rows"):
        space.encode(trim)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (SpaceConfig(mode="metric", sparsity=None, structure="2:4", rows=True), "--structure 2:4 fixes already"),
        (SpaceConfig(sparsity=0.6, group="layer", rows=True), "needs per-row comparison .* not layer"),
    ],
)
def test_the_gene_is_refused_where_rows_cannot_differ(layout: ModelLayout, config: SpaceConfig, message: str) -> None:
    with pytest.raises(InputError, match=message):
        SearchSpace(layout, config)


def test_baselines_pair_wanda_and_owl_with_trim_only_when_the_gene_is_on(layout: ModelLayout) -> None:
    owl = {linear.name: 0.55 + 0.05 * linear.block_index for linear in layout.linears}
    plain = SearchSpace(layout, SpaceConfig(sparsity=0.6), owl_sparsities=owl)
    assert set(plain.baselines()) == {"wanda", "owl-wanda"}
    space = SearchSpace(layout, SpaceConfig(sparsity=0.6, rows=True), owl_sparsities=owl)
    baselines = {name: space.decode(genome) for name, genome in space.baselines().items()}
    assert set(baselines) == {"wanda", "owl-wanda", "wanda+trim", "owl-wanda+trim"}
    assert baselines["wanda+trim"] == replace(baselines["wanda"], rows="trim")
    assert baselines["owl-wanda+trim"].rows == "trim"
    assert baselines["owl-wanda+trim"].sparsities == pytest.approx(owl, abs=1e-6)
    metric = SearchSpace(layout, SpaceConfig(mode="metric", sparsity=None, sparsity_range=(0.4, 0.8), rows=True))
    assert {name for name in metric.baselines() if "trim" in name} == {"wanda+trim@0.40", "wanda+trim@0.60",
                                                                       "wanda+trim@0.80"}  # fmt: skip


def test_the_search_config_carries_the_opt_in_genes_to_the_space_and_config_yaml() -> None:
    config = SearchConfig(model="m", out="o", sparsity=0.5, search_rows=True, search_gradient=True)
    space = config.space_config()
    assert space.rows and space.gradient
    assert load_config(config.to_dict()) == config
    assert not SearchConfig(model="m", out="o").space_config().rows
