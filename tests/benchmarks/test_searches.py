"""The searches the plan names: their names, budgets and the settings each runs with."""

from __future__ import annotations

from pathlib import Path

import pytest

from paretoprune.errors import InputError
from paretoprune.search.driver import load_config

from benchmarks.searches import (
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
