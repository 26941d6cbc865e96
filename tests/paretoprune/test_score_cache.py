"""The score-map cache: keyed by weights, tokens and header; damaged or foreign files are ignored."""

from __future__ import annotations

import torch

from paretoprune.global_scores import GlobalScoreInputs
from paretoprune.models import find_layout
from paretoprune.score_cache import read_score_map, score_map_path, write_score_map
from paretoprune.testing import tiny_model


def _inputs(tmp_path, seed: int = 0, tokens_seed: int = 0) -> GlobalScoreInputs:
    model = tiny_model("llama", seed=seed)
    tokens = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(tokens_seed))
    return GlobalScoreInputs(model, find_layout(model), tokens, cache_dir=tmp_path)


def _scores(inputs: GlobalScoreInputs) -> dict[str, torch.Tensor]:
    return {linear.name: torch.rand(linear.out_features, linear.in_features) for linear in inputs.layout.linears}


def test_a_written_map_reads_back_bit_for_bit(tmp_path) -> None:
    inputs = _inputs(tmp_path)
    path = score_map_path(inputs, "rule", {"settings": 1})
    assert path is not None and read_score_map(path, inputs.layout) is None
    scores = _scores(inputs)
    write_score_map(path, scores, {"settings": "1"})
    back = read_score_map(path, inputs.layout)
    assert back is not None and all(torch.equal(back[name], scores[name]) for name in scores)


def test_the_key_follows_weights_tokens_and_header(tmp_path) -> None:
    base = score_map_path(_inputs(tmp_path), "rule", {"settings": 1})
    assert base == score_map_path(_inputs(tmp_path), "rule", {"settings": 1})
    assert base != score_map_path(_inputs(tmp_path, seed=1), "rule", {"settings": 1})
    assert base != score_map_path(_inputs(tmp_path, tokens_seed=1), "rule", {"settings": 1})
    assert base != score_map_path(_inputs(tmp_path), "rule", {"settings": 2})
    assert score_map_path(GlobalScoreInputs(**{**_inputs(tmp_path).__dict__, "cache_dir": None}), "rule", {}) is None


def test_a_truncated_or_foreign_file_is_ignored(tmp_path) -> None:
    inputs = _inputs(tmp_path)
    path = score_map_path(inputs, "rule", {})
    assert path is not None
    write_score_map(path, _scores(inputs), {})
    path.write_bytes(path.read_bytes()[:100])
    assert read_score_map(path, inputs.layout) is None
    write_score_map(path, {"other.layer": torch.ones(2, 2)}, {})
    assert read_score_map(path, inputs.layout) is None
