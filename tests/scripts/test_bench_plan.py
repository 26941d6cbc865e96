"""What the searched-recipe table plans: names, budgets, and the settings each search runs with."""

from __future__ import annotations

from pathlib import Path

import bench_plan
import bench_report
import pytest

from paretoprune.errors import InputError
from paretoprune.search.driver import load_config


def test_search_plan_starts_with_the_headline_and_names_files_safely() -> None:
    names = [spec.name for spec in bench_plan.plan()]
    assert names[0] == "layerwise-unstructured-0.70"
    assert "metric-2of4-0.50" in names and not any(":" in name for name in names)
    assert len(names) == len(set(names))
    with pytest.raises(InputError, match="not known"):
        bench_plan.select(bench_plan.plan(), ["layerwise-unstructured-0.99"])


def test_the_naive_reference_spends_as_many_candidates_as_the_searches(tmp_path: Path) -> None:
    budget = bench_plan.Budget(pop=16, generations=15, nsamples=8, seqlen=256, workers=1, seed=0)
    by_name = {spec.name: spec for spec in bench_plan.plan()}
    naive, searched = by_name["naive-unstructured-0.70"], by_name["layerwise-unstructured-0.70"]
    naive_settings = naive.settings("smollm2-135m", budget, tmp_path, tmp_path / "c4.jsonl")
    searched_settings = searched.settings("smollm2-135m", budget, tmp_path, tmp_path / "c4.jsonl")
    assert naive_settings["algorithm"] == "swap" and naive_settings["pop"] == 4
    assert naive_settings["pop"] * naive_settings["generations"] == 16 * 15
    assert searched_settings["pop"] * searched_settings["generations"] == 16 * 15
    assert bench_plan.search_kind("naive-unstructured-0.70") == "naive"
    # The settings load as a search configuration, as the driver will read them.
    assert load_config(naive_settings).granularity == "block"


def test_the_sensitivity_search_plans_the_candidates_its_protocol_states(tmp_path: Path) -> None:
    budget = bench_plan.Budget(pop=16, generations=15, nsamples=8, seqlen=256, workers=1, seed=0)
    blocks, starts = 30, 2  # SmolLM2-135M; uniform Wanda and OWL
    for level in bench_plan.SENSITIVITY_LEVELS:
        spec = bench_plan.spec_named(f"sensitivity-unstructured-{level:.2f}")
        assert spec is not None and bench_plan.search_kind(spec.name) == "sensitivity"
        settings = load_config(spec.settings("smollm2-135m", budget, tmp_path, tmp_path / "c4.jsonl"))
        assert settings.algorithm == "sensitivity" and settings.delta == bench_plan.SENSITIVITY_DELTA
        rounds = (settings.generations - 1) // 2
        assert rounds == bench_plan.SENSITIVITY_ROUNDS
        candidates = starts + rounds * (2 * blocks + settings.pop)
        assert candidates == bench_plan.sensitivity_candidates(blocks, rounds)
    assert bench_report._against_budget(258, budget) == "18 more than the others' 240"
    assert bench_report._against_budget(194, budget) == "46 fewer than the others' 240"


def test_planned_keys_list_the_dense_row_first_and_every_pick_pruner_and_calibration() -> None:
    wanted = ("metric-2of4-0.50", "layerwise-unstructured-0.40to0.80")
    searches = [spec for spec in bench_plan.plan() if spec.name in wanted]
    keys = bench_plan.planned_keys(searches)
    assert keys[0] == bench_plan.DENSE_KEY
    assert [key[2:] for key in keys if key[0] == "metric-2of4-0.50"] == [
        ("recipe", "one-shot"), ("update", "one-shot"), ("sparsegpt", "one-shot"),
        ("recipe", "sequential"), ("update", "sequential"), ("sparsegpt", "sequential"),
    ]  # fmt: skip
    # The range search gives one recipe per level, applied one-shot with its own rule only.
    range_keys = [key for key in keys if key[0] == "layerwise-unstructured-0.40to0.80"]
    assert range_keys == [("layerwise-unstructured-0.40to0.80", f"{level:g}", "recipe", "one-shot")
                          for level in bench_plan.RANGE_LEVELS]  # fmt: skip


def test_rows_from_before_the_calibration_column_read_as_one_shot() -> None:
    old = {"search": "metric-2of4-0.50", "pruner": "recipe"}
    assert bench_plan.with_calibration(old)["calibration"] == "one-shot"
    assert bench_plan.with_calibration({"search": bench_plan.DENSE})["calibration"] == "none"
    sequential = {**old, "calibration": "sequential"}
    assert bench_plan.with_calibration(sequential) == sequential
