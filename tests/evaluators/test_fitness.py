"""The candidate evaluator: agrees with real pruning, restores exactly, is deterministic."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.evaluators.fitness import CandidateEvaluator
from paretoprune.evaluators.stats import collect_stats
from paretoprune.metrics.scores import KNOWN_METRICS, MetricSpec
from paretoprune.models import find_layout
from paretoprune.pruning import keep_mask, prune_model
from paretoprune.testing import tiny_model

ALL_OBJECTIVES = ("kl", "logits_mse", "hidden_mse", "sparsity", "params")


def _setup(family: str = "llama", **kwargs):
    model = tiny_model(family)
    layout = find_layout(model)
    tokens = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    stats = collect_stats(model, layout, tokens)
    return model, layout, tokens, stats


def _random_candidate(layout, rng: random.Random, metric: MetricSpec | None = None) -> Candidate:
    # Rules with a gradient term (wanda++) need regional gradients, which these statistics lack.
    metric = metric or rng.choice([m for m in KNOWN_METRICS.values() if not m.uses_gradients])
    return Candidate(metric=metric, sparsities={n: rng.uniform(0.0, 0.9) for n in layout.names})


def _direct_objectives(family, tokens, candidate, scores=None) -> dict[str, float]:
    """Prune a twin of the model for real (by a global rule's ``scores`` where given) and compare
    its outputs with the dense twin's."""
    model, pruned = tiny_model(family), tiny_model(family)
    prune_model(pruned, find_layout(pruned), candidate, tokens, progress=False, scores=scores)
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masked_weights_are_the_dense_ones_where_kept_and_zero_elsewhere(dtype: torch.dtype) -> None:
    model, layout, tokens, stats = _setup()
    model.to(dtype)
    evaluator = CandidateEvaluator(model, layout, stats, tokens, rank_metric=KNOWN_METRICS["wanda"])
    rng = random.Random(7)
    # The rank path, the scoring path, and N:M.
    for metric, structure in (("wanda", "unstructured"), ("ria", "unstructured"), ("ria", "2:4")):
        candidate = replace(_random_candidate(layout, rng, KNOWN_METRICS[metric]), structure=structure)
        with evaluator.applied(candidate):
            for linear in layout.linears:
                dense = linear.module.parametrizations.weight.original
                act_norm, sparsity = stats[linear.name].act_norm, candidate.sparsities[linear.name]
                keep = keep_mask(dense.float(), act_norm, candidate.metric, sparsity, structure)
                masked = linear.module.weight
                assert masked.dtype == dtype
                assert torch.equal(masked, torch.where(keep, dense, 0.0)), (metric, linear.name)


def test_objectives_equal_those_of_masks_applied_with_where(monkeypatch: pytest.MonkeyPatch) -> None:
    # The evaluator zeroes weights by a product, which leaves -0.0 for negative weights; the
    # objectives must be bit-identical to those of torch.where's +0.0.
    from paretoprune.evaluators import fitness

    model, layout, tokens, stats = _setup()
    evaluator = CandidateEvaluator(
        model, layout, stats, tokens, objectives=ALL_OBJECTIVES, rank_metric=KNOWN_METRICS["wanda"]
    )
    rng = random.Random(8)
    candidates = [_random_candidate(layout, rng, KNOWN_METRICS[name]) for name in ("wanda", "ria")]
    by_product = [evaluator.evaluate(candidate) for candidate in candidates]

    def by_ranks(weight: torch.Tensor, ranks: torch.Tensor, pruned: int) -> torch.Tensor:
        return torch.where(ranks >= pruned, weight, 0.0)

    def by_keep(weight: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return torch.where(keep.bool(), weight, 0.0)

    monkeypatch.setattr(fitness, "_masked_by_ranks", by_ranks)
    monkeypatch.setattr(fitness, "_masked_by_keep", by_keep)
    assert [evaluator.evaluate(candidate) for candidate in candidates] == by_product


def test_chunks_that_do_not_divide_the_tokens_give_the_same_objectives() -> None:
    # The last chunk is shorter than the scratch buffer the others share.
    model, layout, tokens, stats = _setup()
    candidate = _random_candidate(layout, random.Random(9), KNOWN_METRICS["wanda"])
    evaluator = CandidateEvaluator(
        model, layout, stats, tokens, objectives=ALL_OBJECTIVES[:2], token_chunk=48
    )
    got = evaluator.evaluate(candidate)
    expected = _direct_objectives("llama", tokens, candidate)
    for name in ALL_OBJECTIVES[:2]:
        assert got[name] == pytest.approx(expected[name], rel=1e-4, abs=1e-7), name


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


# ----------------------------------------------------------------------------------------------
# ACBench's diagnostics as objectives: erank, topk_tau, energy_shift

DIAGNOSTIC_OBJECTIVES = ("erank", "topk_tau", "energy_shift")


def _uniform_candidate(layout, sparsity: float) -> Candidate:
    return Candidate(metric=KNOWN_METRICS["wanda"], sparsities={n: sparsity for n in layout.names})


def _direct_diagnostics(family, tokens, candidate) -> dict[str, float]:
    """The diagnostic objectives from a really pruned twin, on whole logits, without any cache."""
    from paretoprune.metrics.diagnostics import effective_rank, energy, topk_kendall_tau

    model, pruned = tiny_model(family), tiny_model(family)
    prune_model(pruned, find_layout(pruned), candidate, tokens, progress=False)
    with torch.no_grad():
        dense, sparse = model(tokens, output_hidden_states=True), pruned(tokens, output_hidden_states=True)
    width, vocab = dense.hidden_states[-1].shape[-1], dense.logits.shape[-1]
    hidden_d = dense.hidden_states[-1].reshape(-1, width)
    hidden_s = sparse.hidden_states[-1].reshape(-1, width)
    logits_d, logits_s = dense.logits.reshape(-1, vocab).float(), sparse.logits.reshape(-1, vocab).float()
    return {
        "erank": abs(float(effective_rank(hidden_s)) - float(effective_rank(hidden_d))),
        "topk_tau": float(topk_kendall_tau(logits_d, logits_s, 10).mean()),
        "energy_shift": abs(float(energy(logits_s).double().mean() - energy(logits_d).double().mean())),
    }


def test_diagnostic_objectives_are_registered_with_their_directions() -> None:
    from paretoprune.evaluators.fitness import OBJECTIVES, objective_direction

    directions = [OBJECTIVES[name].direction for name in DIAGNOSTIC_OBJECTIVES]
    assert directions == ["minimize", "maximize", "minimize"]
    assert objective_direction("topk_tau@task") == "maximize"
    assert all(OBJECTIVES[name].target is not None for name in DIAGNOSTIC_OBJECTIVES)


def test_the_dense_candidate_is_perfect_on_every_diagnostic() -> None:
    model, layout, tokens, stats = _setup()
    evaluator = CandidateEvaluator(model, layout, stats, tokens, objectives=DIAGNOSTIC_OBJECTIVES)
    got = evaluator.evaluate(_uniform_candidate(layout, 0.0))
    assert got == {"erank": 0.0, "topk_tau": 1.0, "energy_shift": 0.0}


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_diagnostic_objectives_equal_those_of_a_really_pruned_model(family: str) -> None:
    model, layout, tokens, stats = _setup(family)
    # A chunk that does not divide the 128 positions, so the cached targets are sliced unevenly.
    evaluator = CandidateEvaluator(
        model, layout, stats, tokens, objectives=DIAGNOSTIC_OBJECTIVES, token_chunk=48
    )
    candidate = _uniform_candidate(layout, 0.8)
    got = evaluator.evaluate(candidate)
    expected = _direct_diagnostics(family, tokens, candidate)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    # Heavy pruning is visible on every diagnostic.
    assert got["topk_tau"] < 0.95 and got["erank"] > 0.0 and got["energy_shift"] > 0.0


def test_diagnostics_leave_the_other_objectives_bit_identical() -> None:
    model, layout, tokens, stats = _setup()
    candidate = _random_candidate(layout, random.Random(6), KNOWN_METRICS["wanda"])
    plain = CandidateEvaluator(model, layout, stats, tokens, objectives=ALL_OBJECTIVES)
    expected = plain.evaluate(candidate)
    plain.close()
    both = CandidateEvaluator(
        model, layout, stats, tokens, objectives=ALL_OBJECTIVES + DIAGNOSTIC_OBJECTIVES
    )
    got = both.evaluate(candidate)
    assert {name: got[name] for name in ALL_OBJECTIVES} == expected


def test_topk_tau_caches_the_dense_top_20_only() -> None:
    model, layout, tokens, stats = _setup()
    sizes = {}
    for objectives in (("sparsity",), ("topk_tau",), ("energy_shift",), ("erank",)):
        evaluator = CandidateEvaluator(model, layout, stats, tokens, objectives=objectives)
        sizes[objectives[0]] = evaluator.resident_bytes()
        evaluator.close()
    positions = tokens.numel()
    assert sizes["topk_tau"] - sizes["sparsity"] == positions * 20 * (8 + 4)  # int64 ids, fp32 logits
    assert sizes["energy_shift"] - sizes["sparsity"] == positions * 4
    assert sizes["erank"] - sizes["sparsity"] == 8  # one float64


def test_diagnostic_objectives_on_their_own_tokens_equal_plain_ones_there() -> None:
    from paretoprune.evaluators.fitness import FitnessTokens

    model, layout, tokens, stats = _setup()
    other = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(9))
    candidate = _uniform_candidate(layout, 0.7)
    on_task = tuple(f"{name}@task" for name in DIAGNOSTIC_OBJECTIVES)
    both = CandidateEvaluator(model, layout, stats, tokens, objectives=DIAGNOSTIC_OBJECTIVES + on_task,
                              sources={"task": FitnessTokens(other)})  # fmt: skip
    got = both.evaluate(candidate)
    both.close()
    plain = CandidateEvaluator(model, layout, stats, other, objectives=DIAGNOSTIC_OBJECTIVES)
    expected = plain.evaluate(candidate)
    plain.close()
    assert {name: got[f"{name}@task"] for name in DIAGNOSTIC_OBJECTIVES} == expected
    assert got["topk_tau"] != got["topk_tau@task"]


def test_model_diagnostics_agree_with_the_objectives() -> None:
    from paretoprune.evaluators.diagnostics import model_diagnostics
    from paretoprune.evaluators.fitness import FitnessTokens

    model, layout, tokens, stats = _setup()
    mask = torch.ones_like(tokens)
    mask[:, 24:] = 0  # padding must be left out by both
    evaluator = CandidateEvaluator(model, layout, stats, tokens, mask, objectives=DIAGNOSTIC_OBJECTIVES)
    candidate = _uniform_candidate(layout, 0.8)
    objectives = evaluator.evaluate(candidate)
    fitness = FitnessTokens(tokens, mask)
    report = model_diagnostics(model, fitness, lambda: evaluator.applied(candidate), token_chunk=40)
    assert report["erank_dense"] - report["erank_pruned"] == report["diff_erank"]
    assert abs(report["diff_erank"]) == pytest.approx(objectives["erank"], rel=1e-9)
    assert report["topk_tau_10"] == pytest.approx(objectives["topk_tau"], rel=1e-6)
    assert abs(report["energy_shift"]) == pytest.approx(objectives["energy_shift"], rel=1e-6)
    assert report["energy_w1"] >= abs(report["energy_shift"]) > 0.0  # W1 bounds the mean shift
    assert all(report[f"topk_tau_{k}"] < 1.0 for k in (3, 10, 20))
    dense = model_diagnostics(model, fitness, lambda: evaluator.applied(_uniform_candidate(layout, 0.0)))
    assert dense["diff_erank"] == 0.0 and dense["energy_shift"] == 0.0 and dense["energy_w1"] == 0.0
    assert [dense[f"topk_tau_{k}"] for k in (3, 10, 20)] == [1.0, 1.0, 1.0]
    assert dense["erank_dense"] > 1.0
