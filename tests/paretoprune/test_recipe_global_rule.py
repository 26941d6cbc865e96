"""Recipes that name a global scoring rule: written, read, exported and applied with its map."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from paretoprune.exporters import to_llmcompressor, to_ratios_json
from paretoprune.global_scores import cached_score_map
from paretoprune.models import find_layout
from paretoprune.pruning import prune_model
from paretoprune.recipe import Recipe, load_recipe, recipe_yaml, save_recipe
from paretoprune.testing import tiny_model
from paretoprune.workflows import apply_recipe
# The model and layout fixtures are test_recipe's, shared rather than built twice.
from tests.paretoprune.test_recipe import (  # noqa: F401
    _candidate,
    _modifier,
    _raises_one_line,
    _recipe,
    layout,
    load_recipe_text,
    model,
)

TOKENS = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PARETOPRUNE_CACHE", str(tmp_path))


def _lrp_recipe(model: Any, layout: Any) -> Recipe:
    return _recipe(model, layout, replace(_candidate(layout), global_rule="lrp"))


def test_a_recipe_without_a_global_rule_is_written_as_before(model: Any, layout: Any) -> None:
    plain = _recipe(model, layout)
    assert "global_rule" not in plain.to_data()["pruning"] and "global_rule" not in recipe_yaml(plain)
    assert plain.to_candidate().global_rule is None
    assert plain.pruning.rule == "wanda"


def test_the_global_rule_round_trips_through_a_file(model: Any, layout: Any, tmp_path: Path) -> None:
    recipe = _lrp_recipe(model, layout)
    assert list(recipe.to_data()["pruning"])[:2] == ["metric", "global_rule"]  # beside the rule it replaces
    loaded = load_recipe(save_recipe(recipe, tmp_path / "r.yaml"))
    assert loaded == recipe and loaded.pruning.rule == "lrp"
    assert loaded.to_candidate() == replace(_candidate(layout), global_rule="lrp")


def test_an_unknown_rule_and_a_version_1_recipe_naming_one_are_refused(model: Any, layout: Any) -> None:
    data = _lrp_recipe(model, layout).to_data()
    data["pruning"]["global_rule"] = "shapley"
    message = _raises_one_line(data)
    assert "pruning.global_rule: unknown global scoring rule 'shapley'; use one of" in message and "lrp" in message
    data["pruning"]["global_rule"] = "lrp"
    data["format"] = "paretoprune.recipe/v1"
    for key in ("rows", "solvers"):
        data["pruning"].pop(key)
    assert "pruning.global_rule needs format paretoprune.recipe/v2" in _raises_one_line(data)


def test_exports_name_the_global_rule_and_llmcompressor_warns(
    model: Any, layout: Any, caplog: pytest.LogCaptureFixture
) -> None:
    recipe = _lrp_recipe(model, layout)
    assert to_ratios_json(recipe)["metric"] == "lrp"
    with caplog.at_level(logging.WARNING, logger="paretoprune.exporters"):
        text = to_llmcompressor(recipe)
    name, modifier = _modifier(text)
    assert name == "SparseGPTModifier"  # not Wanda, whatever the metric's label says
    assert "scoring rule 'lrp' has no llm-compressor modifier" in caplog.text
    assert sum(line.startswith("# WARNING:") for line in text.splitlines()) == 1
    assert load_recipe_text(text) == recipe


def _weights(model: Any) -> dict[str, torch.Tensor]:
    return {linear.name: linear.weight_matrix().clone() for linear in find_layout(model).linears}


def _pruned_by_hand(recipe: Recipe, scores: dict[str, torch.Tensor] | None, **change: Any) -> dict[str, torch.Tensor]:
    twin = tiny_model("llama", seed=0)
    candidate = replace(recipe.to_candidate(), **change)
    prune_model(twin, find_layout(twin), candidate, TOKENS, progress=False, scores=scores)
    return _weights(twin)


def test_apply_prunes_with_the_recipes_global_rule_unless_a_pruner_overrides_it(model: Any, layout: Any) -> None:
    recipe = _lrp_recipe(model, layout)
    lrp = cached_score_map("lrp", model, layout, TOKENS, progress=False)
    own = tiny_model("llama", seed=0)
    apply_recipe(own, recipe, TOKENS, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(_weights(own).values(), _pruned_by_hand(recipe, lrp).values()))
    wanda = tiny_model("llama", seed=0)
    apply_recipe(wanda, recipe, TOKENS, pruner="wanda", progress=False)
    expected = _pruned_by_hand(recipe, None, global_rule=None)
    assert all(torch.equal(a, b) for a, b in zip(_weights(wanda).values(), expected.values()))
    assert not all(torch.equal(a, b) for a, b in zip(_weights(own).values(), expected.values()))
