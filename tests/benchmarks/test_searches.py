"""The searches the plan names: their names, budgets and the settings each runs with."""

from __future__ import annotations

from pathlib import Path

import pytest

from paretoprune.errors import InputError
from paretoprune.search.driver import load_config

from benchmarks.labels import search_label
from benchmarks.searches import (
    GRANULARITY_SEARCHES,
    MEMETIC,
    MEMETIC_AT_70,
    MEMETIC_FIXED_GENERATIONS,
    MEMETIC_GENERATIONS,
    SEARCHED,
    SENSITIVITY_DELTA,
    SENSITIVITY_LEVELS,
    SENSITIVITY_ROUNDS,
    Budget,
    search_named,
    sensitivity_candidates,
)

BUDGET = Budget(pop=16, generations=15, nsamples=8, seqlen=256, workers=1)


def test_the_plan_starts_with_the_headline_and_names_files_safely() -> None:
    names = [spec.name for spec in SEARCHED]
    assert names[0] == "layerwise-unstructured-0.70"
    assert "metric-2of4-0.50" in names and not any(":" in name for name in names)
    assert len(names) == len(set(names))
    with pytest.raises(InputError, match="no search is named 'layerwise-unstructured-0.99'"):
        search_named("layerwise-unstructured-0.99")


def test_the_naive_reference_spends_as_many_candidates_as_the_searches(tmp_path: Path) -> None:
    naive, searched = search_named("naive-unstructured-0.70"), search_named("layerwise-unstructured-0.70")
    naive_settings = naive.settings("smollm2-135m", BUDGET, 0, tmp_path, tmp_path / "c4.jsonl")
    searched_settings = searched.settings("smollm2-135m", BUDGET, 0, tmp_path, tmp_path / "c4.jsonl")
    assert naive_settings["algorithm"] == "swap" and naive_settings["pop"] == 4
    assert naive_settings["pop"] * naive_settings["generations"] == 16 * 15
    assert searched_settings["pop"] * searched_settings["generations"] == 16 * 15
    assert naive.kind == "naive"
    # The settings load as a search configuration, as the driver will read them.
    assert load_config(naive_settings).granularity == "block"


def test_the_sensitivity_search_plans_the_candidates_its_protocol_states(tmp_path: Path) -> None:
    blocks, starts = 30, 2  # SmolLM2-135M; uniform Wanda and OWL
    for level in SENSITIVITY_LEVELS:
        spec = search_named(f"sensitivity-unstructured-{level:.2f}")
        assert spec.kind == "sensitivity"
        settings = load_config(spec.settings("smollm2-135m", BUDGET, 0, tmp_path, tmp_path / "c4.jsonl", (32, 512)))
        assert settings.algorithm == "sensitivity" and settings.delta == SENSITIVITY_DELTA
        assert (settings.stats_nsamples, settings.stats_seqlen) == (32, 512)
        rounds = (settings.generations - 1) // 2
        assert rounds == SENSITIVITY_ROUNDS
        assert starts + rounds * (2 * blocks + settings.pop) == sensitivity_candidates(blocks, rounds)


def test_the_memetic_range_search_runs_its_own_generations_over_the_sensitivity_box(tmp_path: Path) -> None:
    spec = search_named("memetic-unstructured-0.40to0.80")
    assert spec is MEMETIC and spec.kind == "memetic range"
    settings = load_config(spec.settings("smollm2-135m", BUDGET, 0, tmp_path, tmp_path / "c4.jsonl"))
    assert (settings.algorithm, settings.generations, settings.pop) == ("memetic", MEMETIC_GENERATIONS, 16)
    assert settings.delta == SENSITIVITY_DELTA and tuple(settings.sparsity_range) == (0.4, 0.8)
    assert [pick.name for pick in spec.picks()] == [f"memetic-unstructured-0.40to0.80-at{level:.2f}"
                                                    for level in (0.5, 0.6, 0.7)]  # fmt: skip
    assert search_label(spec.name) == "memetic range search"


def test_the_memetic_search_at_70_percent_runs_on_the_nsga3_searchs_budget(tmp_path: Path) -> None:
    spec = search_named("memetic-unstructured-0.70")
    assert spec is MEMETIC_AT_70 and spec.kind == "memetic" and spec.objectives == ("kl",)
    settings = load_config(spec.settings("smollm2-135m", BUDGET, 0, tmp_path, tmp_path / "c4.jsonl"))
    assert (settings.algorithm, settings.generations, settings.sparsity) == ("memetic", MEMETIC_FIXED_GENERATIONS, 0.7)
    assert settings.delta == SENSITIVITY_DELTA and settings.sparsity_range is None
    assert [pick.how for pick in spec.picks()] == ["best:kl"] and spec.ppl_levels == (0.7,)
    assert search_label(spec.name) == "memetic search"


@pytest.mark.parametrize("genes, suffix, label", [("linear", "-linear", "per linear"),
                                                  ("block+kind", "-block-kind", "per block and kind")])  # fmt: skip
def test_granularity_searches_keep_the_block_searches_names_and_add_their_genes(
    tmp_path: Path, genes: str, suffix: str, label: str
) -> None:
    found = [spec for spec in GRANULARITY_SEARCHES if spec.granularity == genes]
    assert {spec.algorithm for spec in found} == {"pymoo", "swap"}
    for spec in found:
        block = search_named(spec.name.removesuffix(suffix))  # its reference, one gene per block
        assert block.granularity == "block" and block.target == spec.target == 0.7
        settings = spec.settings("smollm2-135m", BUDGET, 0, tmp_path, tmp_path / "c4.jsonl")
        assert settings["pop"] * settings["generations"] == 16 * 15
        assert load_config(settings).granularity == genes
        assert search_label(spec.name) == f"{search_label(block.name)}, {label}"
