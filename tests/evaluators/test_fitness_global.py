"""The candidate evaluator with a global rule's score map: scores as prune_model prunes by it."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from paretoprune.errors import InputError
from paretoprune.evaluators.fitness import CandidateEvaluator
from paretoprune.evaluators.stats import collect_stats
from paretoprune.global_scores import cached_score_map
from paretoprune.metrics.scores import KNOWN_METRICS
from paretoprune.models import find_layout
from paretoprune.testing import tiny_model
from tests.evaluators.test_fitness import ALL_OBJECTIVES, _direct_objectives, _random_candidate

WANDA = KNOWN_METRICS["wanda"]


@pytest.fixture(autouse=True)
def private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PARETOPRUNE_CACHE", str(tmp_path))


def _setup(family: str):
    model = tiny_model(family)
    layout = find_layout(model)
    tokens = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    return model, layout, tokens, collect_stats(model, layout, tokens, last_tokens=True)


def _score_map(family: str, model, layout, tokens) -> dict[str, torch.Tensor]:
    """LRP's map where the family has its rules; a random map elsewhere (gpt2's transposed
    weights), since the evaluator reads any map alike."""
    if family == "llama":
        return cached_score_map("lrp", model, layout, tokens, progress=False)
    generator = torch.Generator().manual_seed(3)
    return {linear.name: torch.rand(linear.out_features, linear.in_features, generator=generator)
            for linear in layout.linears}  # fmt: skip


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_global_rule_candidate_scores_as_prune_model_prunes_by_the_map(family: str) -> None:
    model, layout, tokens, stats = _setup(family)
    scores = _score_map(family, model, layout, tokens)
    evaluator = CandidateEvaluator(model, layout, stats, tokens, objectives=ALL_OBJECTIVES, rank_metric="lrp",
                                   score_maps={"lrp": scores})  # fmt: skip
    plain = _random_candidate(layout, random.Random(0), WANDA)
    candidate = replace(plain, global_rule="lrp")
    # The rank cache, the scoring path (another comparison group) and a row allocation.
    for changed in (candidate, replace(candidate, group="layer"), replace(candidate, rows="trim")):
        got = evaluator.evaluate(changed)
        for name, value in _direct_objectives(family, tokens, changed, scores).items():
            assert got[name] == pytest.approx(value, rel=1e-4, abs=1e-7), (changed.group, changed.rows, name)
    assert evaluator.evaluate(candidate)["kl"] != pytest.approx(evaluator.evaluate(plain)["kl"], rel=1e-3)


def test_a_candidate_naming_a_rule_without_its_map_is_refused_in_one_line() -> None:
    model, layout, tokens, stats = _setup("llama")
    evaluator = CandidateEvaluator(model, layout, stats, tokens, rank_metric=WANDA)
    candidate = replace(_random_candidate(layout, random.Random(1), WANDA), global_rule="lrp")
    with pytest.raises(InputError, match="masks rank the lrp score map, which this evaluator was not given"):
        evaluator.evaluate(candidate)
