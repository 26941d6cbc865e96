"""The search space: genomes decode to valid candidates, and known candidates encode back."""

from __future__ import annotations

import numpy as np
import pytest

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.metrics.scores import KNOWN_METRICS
from paretoprune.models import ModelLayout, find_layout
from paretoprune.search.space import GRANULARITIES, SearchSpace, SpaceConfig
from paretoprune.testing import tiny_model


@pytest.fixture(scope="module")
def layout() -> ModelLayout:
    # Three Llama blocks of seven linears of four shapes: uneven parameter counts.
    return find_layout(tiny_model("llama", layers=3))


def weighted_mean(space: SearchSpace, candidate: Candidate) -> float:
    values = np.array([candidate.sparsities[name] for name in space.layout.names])
    weights = np.array(space.layout.numels, dtype=float)
    return float(np.dot(values, weights) / weights.sum())


def random_genomes(space: SearchSpace, count: int, seed: int = 0) -> np.ndarray:
    lower, upper = space.bounds
    return np.random.default_rng(seed).uniform(lower, upper, size=(count, space.n_var))


def kinds_of(layout: ModelLayout) -> list[str]:
    return sorted({linear.kind for linear in layout.linears})


# ----------------------------------------------------------------------------------------------
# Shape of the genome.


def test_gene_counts_follow_mode_and_granularity(layout: ModelLayout) -> None:
    n_blocks, n_linears, n_kinds = 3, len(layout.linears), len(kinds_of(layout))
    counts = {
        granularity: SearchSpace(layout, SpaceConfig(granularity=granularity, sparsity=0.6)).n_var
        for granularity in GRANULARITIES
    }
    assert counts == {"block": n_blocks, "linear": n_linears, "block+kind": n_blocks + n_kinds}
    metric_only = SearchSpace(layout, SpaceConfig(mode="metric", sparsity=0.6))
    joint_range = SearchSpace(layout, SpaceConfig(mode="joint", sparsity=None, sparsity_range=(0.4, 0.8)))
    assert joint_range.n_var == metric_only.n_var + n_blocks + 1


def test_unknown_granularity_names_the_choices(layout: ModelLayout) -> None:
    with pytest.raises(InputError, match="block\\+kind"):
        SearchSpace(layout, SpaceConfig(granularity="head"))


# ----------------------------------------------------------------------------------------------
# Decoding.


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("target", [0.5, 0.7])
def test_every_genome_decodes_to_the_exact_target_within_the_band(
    layout: ModelLayout, granularity: str, target: float
) -> None:
    space = SearchSpace(layout, SpaceConfig(granularity=granularity, sparsity=target, delta=0.2))
    for genome in random_genomes(space, 20):
        candidate = space.decode(genome)
        values = np.array(list(candidate.sparsities.values()))
        assert weighted_mean(space, candidate) == pytest.approx(target, abs=1e-6)
        assert values.min() >= target - 0.2 - 1e-9 and values.max() <= target + 0.2 + 1e-9


def test_block_kind_genes_add_a_kind_offset_to_the_block_profile(layout: ModelLayout) -> None:
    space = SearchSpace(layout, SpaceConfig(granularity="block+kind", sparsity=0.6, delta=0.2))
    kinds = kinds_of(layout)
    genome = np.zeros(space.n_var)
    genome[3 + kinds.index("self_attn.q_proj")] = 0.5  # q_proj 0.1 above the others
    sparsities = space.decode(genome).sparsities
    q = [v for name, v in sparsities.items() if name.endswith("q_proj")]
    rest = [v for name, v in sparsities.items() if not name.endswith("q_proj")]
    assert np.ptp(q) == pytest.approx(0.0) and np.ptp(rest) == pytest.approx(0.0)
    assert q[0] - rest[0] == pytest.approx(0.1)
    assert q[0] > 0.6 > rest[0]  # the repair moved the others down to keep the mean


def test_a_deeper_block_gene_raises_only_that_block(layout: ModelLayout) -> None:
    space = SearchSpace(layout, SpaceConfig(granularity="block+kind", sparsity=0.6))
    genome = np.zeros(space.n_var)
    genome[2] = 0.8
    by_block = {}
    for linear in layout.linears:
        by_block.setdefault(linear.block_index, set()).add(round(space.decode(genome).sparsities[linear.name], 9))
    assert all(len(values) == 1 for values in by_block.values())
    assert max(by_block[2]) > max(by_block[0]) == max(by_block[1])


# ----------------------------------------------------------------------------------------------
# Encoding and repair.


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_baselines_are_encoded_exactly(layout: ModelLayout, granularity: str) -> None:
    owl = {linear.name: 0.55 + 0.05 * linear.block_index for linear in layout.linears}  # mean 0.6 per block
    space = SearchSpace(layout, SpaceConfig(granularity=granularity, sparsity=0.6), owl_sparsities=owl)
    baselines = space.baselines()
    assert set(baselines) == {"wanda", "owl-wanda"}
    assert space.decode(baselines["wanda"]).sparsities == pytest.approx({n: 0.6 for n in layout.names})
    decoded_owl = space.decode(baselines["owl-wanda"]).sparsities
    assert decoded_owl == pytest.approx(owl, abs=1e-6)


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_repair_keeps_what_a_genome_decodes_to(layout: ModelLayout, granularity: str) -> None:
    space = SearchSpace(layout, SpaceConfig(granularity=granularity, sparsity=0.6, delta=0.3))
    # Small genes: no sparsity reaches the band's edge, so re-encoding loses nothing.
    genomes = 0.3 * random_genomes(space, 10, seed=3)
    repaired = space.repair(genomes)
    for genome, fixed in zip(genomes, repaired):
        assert space.decode(fixed).sparsities == pytest.approx(space.decode(genome).sparsities, abs=1e-6)
    assert np.allclose(space.repair(repaired), repaired, atol=1e-6)  # a fixed point


def test_block_kind_encoding_puts_the_depth_profile_in_block_genes(layout: ModelLayout) -> None:
    space = SearchSpace(layout, SpaceConfig(granularity="block+kind", sparsity=0.6, delta=0.3))
    per_block = {linear.name: 0.5 + 0.1 * linear.block_index for linear in layout.linears}
    genome = space.encode(Candidate(metric=KNOWN_METRICS["wanda"], sparsities=per_block))
    assert np.allclose(genome[3:], 0.0)
    assert genome[:3] == pytest.approx([-1 / 3, 0.0, 1 / 3])


def test_metric_mode_genomes_decode_to_valid_metrics(layout: ModelLayout) -> None:
    space = SearchSpace(layout, SpaceConfig(mode="metric", sparsity=0.6))
    for genome in random_genomes(space, 20, seed=5):
        candidate = space.decode(genome)
        assert set(candidate.sparsities.values()) == {0.6}
        assert candidate.metric.abs_coef + candidate.metric.row_coef + candidate.metric.col_coef > 0
    for name, genome in space.baselines().items():
        assert space.decode(genome).metric == KNOWN_METRICS[name]


def test_sparsity_range_genome_carries_its_target(layout: ModelLayout) -> None:
    space = SearchSpace(layout, SpaceConfig(granularity="block+kind", sparsity=None, sparsity_range=(0.4, 0.8)))
    for genome in random_genomes(space, 10, seed=7):
        assert weighted_mean(space, space.decode(genome)) == pytest.approx(genome[-1], abs=1e-6)
    assert sorted(space.baselines()) == ["wanda@0.40", "wanda@0.60", "wanda@0.80"]


# ----------------------------------------------------------------------------------------------
# The gradient gene (Wanda++'s regional-gradient term).


def test_the_gradient_gene_is_off_by_default_and_wanda_plus_plus_is_not_a_baseline(layout: ModelLayout) -> None:
    plain = SearchSpace(layout, SpaceConfig(mode="metric", sparsity=0.6))
    assert plain.n_var == 8  # five continuous and three discrete genes, as before the gene existed
    assert "wanda++" not in plain.baselines()
    for genome in random_genomes(plain, 10, seed=11):
        assert not plain.decode(genome).metric.uses_gradients
    uniform = {name: 0.6 for name in layout.names}
    with pytest.raises(InputError, match="gradient term, which this space does not search"):
        plain.encode(Candidate(metric=KNOWN_METRICS["wanda++"], sparsities=uniform))


def test_with_the_gradient_gene_wanda_plus_plus_is_an_exact_point(layout: ModelLayout) -> None:
    space = SearchSpace(layout, SpaceConfig(mode="metric", sparsity=0.6, gradient=True))
    assert space.n_var == 9
    baselines = space.baselines()
    assert set(baselines) == set(KNOWN_METRICS)
    for name, genome in baselines.items():
        decoded = space.decode(genome).metric
        assert decoded == KNOWN_METRICS[name] and decoded.name == name
    grads = [space.decode(g).metric.grad_coef for g in random_genomes(space, 20, seed=12)]
    assert all(0.0 <= g <= 200.0 for g in grads) and len(set(grads)) > 1
