"""A search's settings survive the round trip through its run folder's config.yaml."""

from __future__ import annotations

import yaml

from paretoprune.search.config import SearchConfig, load_config


def test_default_settings_round_trip_through_yaml() -> None:
    config = SearchConfig(model="smollm2-135m", out="runs/a")  # objectives left to the search
    assert load_config(yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config


def test_explicit_objectives_range_and_stages_round_trip_as_tuples() -> None:
    config = SearchConfig(model="smollm2-135m", out="runs/b", sparsity_range=(0.4, 0.8),
                          objectives=("kl", "sparsity"), stages=("metric", "layerwise"))  # fmt: skip
    data = yaml.safe_load(yaml.safe_dump(config.to_dict()))
    assert data["objectives"] == ["kl", "sparsity"] and data["sparsity_range"] == [0.4, 0.8]
    assert load_config(data) == config
