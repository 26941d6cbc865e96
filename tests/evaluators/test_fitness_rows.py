"""The candidate evaluator with a row allocation: a TRIM candidate scores as prune_model prunes."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

from paretoprune.errors import InputError
from paretoprune.evaluators.fitness import CandidateEvaluator
from paretoprune.evaluators.stats import collect_stats
from paretoprune.metrics.scores import KNOWN_METRICS
from paretoprune.models import find_layout
from paretoprune.testing import tiny_model
from tests.evaluators.test_fitness import ALL_OBJECTIVES, _direct_objectives, _random_candidate

WANDA = KNOWN_METRICS["wanda"]


def _setup(family: str, last_tokens: bool = True):
    model = tiny_model(family)
    layout = find_layout(model)
    tokens = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    return model, layout, tokens, collect_stats(model, layout, tokens, last_tokens=last_tokens)


# gpt2 stores its weights transposed: the per-row counts must land on the module's own layout.
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_trim_candidate_scores_as_prune_model_prunes_it(family: str) -> None:
    model, layout, tokens, stats = _setup(family)
    evaluator = CandidateEvaluator(model, layout, stats, tokens, objectives=ALL_OBJECTIVES, rank_metric=WANDA)
    rng = random.Random(0)
    for metric in ("wanda", "ria"):  # the rank path and the scoring path
        uniform = _random_candidate(layout, rng, KNOWN_METRICS[metric])
        trim = replace(uniform, rows="trim")
        got, plain = evaluator.evaluate(trim), evaluator.evaluate(uniform)
        for name, value in _direct_objectives(family, tokens, trim).items():
            assert got[name] == pytest.approx(value, rel=1e-4, abs=1e-7), (metric, name)
        assert got["kl"] != plain["kl"]  # the rows really moved
        assert got["sparsity"] == plain["sparsity"]  # each layer keeps its sparsity


def test_a_uniform_candidate_after_a_trim_one_is_unchanged() -> None:
    model, layout, tokens, stats = _setup("llama")
    uniform = _random_candidate(layout, random.Random(1), WANDA)
    fresh = CandidateEvaluator(model, layout, stats, tokens, rank_metric=WANDA)
    expected = fresh.evaluate(uniform)
    fresh.close()
    evaluator = CandidateEvaluator(model, layout, stats, tokens, rank_metric=WANDA)
    evaluator.evaluate(replace(uniform, rows="trim"))
    assert evaluator.evaluate(uniform) == expected


def test_trim_without_last_token_inputs_is_refused_in_one_line() -> None:
    model, layout, tokens, stats = _setup("llama", last_tokens=False)
    evaluator = CandidateEvaluator(model, layout, stats, tokens, rank_metric=WANDA)
    trim = replace(_random_candidate(layout, random.Random(2), WANDA), rows="trim")
    with pytest.raises(InputError, match="last-token inputs, which the statistics lack .* --search-rows"):
        evaluator.evaluate(trim)
