"""The candidate evaluator: agrees with real pruning, restores exactly, is deterministic."""

from __future__ import annotations

import random

import pytest
import torch

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.evaluators.fitness import CandidateEvaluator
from paretoprune.evaluators.stats import collect_stats
from paretoprune.metrics.scores import KNOWN_METRICS, MetricSpec
from paretoprune.models import find_layout
from paretoprune.pruning import prune_model
from paretoprune.testing import tiny_model

ALL_OBJECTIVES = ("kl", "logits_mse", "hidden_mse", "sparsity", "params")


def _setup(family: str = "llama", **kwargs):
    model = tiny_model(family)
    layout = find_layout(model)
    tokens = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    stats = collect_stats(model, layout, tokens)
    return model, layout, tokens, stats


def _random_candidate(layout, rng: random.Random, metric: MetricSpec | None = None) -> Candidate:
    metric = metric or rng.choice(list(KNOWN_METRICS.values()))
    return Candidate(metric=metric, sparsities={n: rng.uniform(0.0, 0.9) for n in layout.names})


def _direct_objectives(family, tokens, candidate) -> dict[str, float]:
    """Prune a twin of the model for real and compare its outputs with the dense twin's."""
    model, pruned = tiny_model(family), tiny_model(family)
    prune_model(pruned, find_layout(pruned), candidate, tokens, progress=False)
    with torch.no_grad():
        dense, sparse = model(tokens, output_hidden_states=True), pruned(tokens, output_hidden_states=True)
    lp, lq = torch.log_softmax(dense.logits.float(), -1), torch.log_softmax(sparse.logits.float(), -1)
    tokens_count = tokens.numel()
    return {
        "kl": float((lp.exp() * (lp - lq)).sum(-1).mean()),
        "logits_mse": float((dense.logits - sparse.logits).square().sum()) / tokens_count,
        "hidden_mse": float((dense.hidden_states[-1] - sparse.hidden_states[-1]).square().sum()) / tokens_count,
    }


@pytest.mark.parametrize("family", ["llama", "gemma3", "opt", "gpt2"])
def test_objectives_equal_those_of_really_pruned_models(family: str) -> None:
    model, layout, tokens, stats = _setup(family)
    evaluator = CandidateEvaluator(
        model, layout, stats, tokens, objectives=ALL_OBJECTIVES, rank_metric=KNOWN_METRICS["wanda"]
    )
    rng = random.Random(0)
    for metric in ("wanda", "ria"):  # the rank path and the scoring path
        candidate = _random_candidate(layout, rng, KNOWN_METRICS[metric])
        got = evaluator.evaluate(candidate)
        expected = _direct_objectives(family, tokens, candidate)
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, rel=1e-4, abs=1e-7), (metric, name)
        assert 0.0 < got["sparsity"] < 0.9
        assert got["params"] == pytest.approx(layout.total_numel * (1 - got["sparsity"]))


def test_weights_are_bit_identical_after_100_evaluations() -> None:
    model, layout, tokens, stats = _setup()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    evaluator = CandidateEvaluator(model, layout, stats, tokens, rank_metric=KNOWN_METRICS["wanda"])
    rng = random.Random(1)
    for _ in range(100):
        evaluator.evaluate(_random_candidate(layout, rng))
    evaluator.close()
    after = dict(model.named_parameters())
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_same_candidate_same_value_across_evaluators() -> None:
    model, layout, tokens, stats = _setup()
    candidate = _random_candidate(layout, random.Random(2), KNOWN_METRICS["ria"])
    first = CandidateEvaluator(model, layout, stats, tokens, objectives=ALL_OBJECTIVES)
    values = [first.evaluate(candidate) for _ in range(3)]
    first.close()
    second = CandidateEvaluator(model, layout, stats, tokens, objectives=ALL_OBJECTIVES)
    values.append(second.evaluate(candidate))
    assert all(v == values[0] for v in values)


def test_rank_cache_and_scoring_give_identical_values() -> None:
    model, layout, tokens, stats = _setup()
    candidate = _random_candidate(layout, random.Random(3), KNOWN_METRICS["wanda"])
    cached = CandidateEvaluator(model, layout, stats, tokens, rank_metric=KNOWN_METRICS["wanda"])
    by_rank = cached.evaluate(candidate)
    cached.close()
    plain = CandidateEvaluator(model, layout, stats, tokens)
    assert plain.evaluate(candidate) == by_rank


def test_padding_is_excluded() -> None:
    model, layout, tokens, stats = _setup()
    candidate = _random_candidate(layout, random.Random(4), KNOWN_METRICS["wanda"])
    short = tokens[:, :20]
    padded = torch.cat([short, torch.full((4, 12), 7)], dim=1)  # right padding with junk
    mask = torch.cat([torch.ones(4, 20), torch.zeros(4, 12)], dim=1).long()
    plain = CandidateEvaluator(model, layout, stats, short, objectives=ALL_OBJECTIVES[:3])
    expected = plain.evaluate(candidate)
    plain.close()
    with_pad = CandidateEvaluator(model, layout, stats, padded, mask, objectives=ALL_OBJECTIVES[:3])
    got = with_pad.evaluate(candidate)
    # A longer input changes how fp32 matmuls are blocked, and KL is a small difference of
    # log-probabilities, so allow 1e-4; counting the padded positions would be off by far more.
    for name in expected:
        assert got[name] == pytest.approx(expected[name], rel=1e-4)


def test_unknown_or_repeated_objectives_are_refused() -> None:
    model, layout, tokens, stats = _setup()
    with pytest.raises(InputError, match="unknown objective"):
        CandidateEvaluator(model, layout, stats, tokens, objectives=("kl", "accuracy"))
    with pytest.raises(InputError, match="twice"):
        CandidateEvaluator(model, layout, stats, tokens, objectives=("kl", "kl"))


def test_an_objective_on_its_own_tokens_equals_a_plain_one_there() -> None:
    from paretoprune.evaluators.fitness import FitnessTokens

    model, layout, tokens, stats = _setup()
    other = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(9))
    candidate = _random_candidate(layout, random.Random(5), KNOWN_METRICS["wanda"])
    both = CandidateEvaluator(model, layout, stats, tokens, objectives=("kl", "kl@task", "hidden_mse@task"),
                              sources={"task": FitnessTokens(other)})  # fmt: skip
    got = both.evaluate(candidate)
    both.close()
    plain = CandidateEvaluator(model, layout, stats, other, objectives=("kl", "hidden_mse"))
    expected = plain.evaluate(candidate)
    plain.close()
    assert got["kl@task"] == expected["kl"] and got["hidden_mse@task"] == expected["hidden_mse"]
    assert got["kl"] != got["kl@task"]
    with pytest.raises(InputError, match="no tokens"):
        CandidateEvaluator(model, layout, stats, tokens, objectives=("kl@nowhere",))
    with pytest.raises(InputError, match="does not depend on tokens"):
        CandidateEvaluator(model, layout, stats, tokens, objectives=("sparsity@task",))
