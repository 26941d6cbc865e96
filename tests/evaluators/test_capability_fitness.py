"""The capability objectives (probe, passkey): equal to computing them on a really pruned model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.evaluators.capability_fitness import CapabilityInputs, PasskeyInputs, ProbeInputs
from paretoprune.evaluators.fitness import OBJECTIVES, CandidateEvaluator
from paretoprune.evaluators.passkey import passkey_found
from paretoprune.evaluators.stats import collect_stats
from paretoprune.evaluators.truth import block_separability, encode_sets, probe_accuracy
from paretoprune.metrics.scores import KNOWN_METRICS
from paretoprune.models import find_layout
from paretoprune.passkey import PasskeyPrompt
from paretoprune.pruning import prune_model
from paretoprune.search.pareto import Objectives
from paretoprune.testing import byte_tokenizer, tiny_model
from paretoprune.truth import StatementSet


def noisy_sets() -> dict[str, StatementSet]:
    """True statements end in '!', false ones in '?', but a quarter of the labels are flipped, so
    probes are neither perfect nor at chance."""
    rng = np.random.default_rng(0)
    sets = {}
    for number, topic in enumerate(("alpha", "beta", "gamma")):
        marks = rng.integers(0, 2, size=16)
        labels = np.where(rng.random(16) < 0.25, 1 - marks, marks)
        labels[:2] = [0, 1]  # both classes in every topic
        texts = [f"{topic} claim {i * (number + 3)}" + ("!" if mark else "?") for i, mark in enumerate(marks)]
        sets[topic] = StatementSet(texts, labels.astype(np.int64))
    return sets


def setup(layers: int = 3):
    model = tiny_model("llama", layers=layers)
    layout = find_layout(model)
    tokens = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    return model, layout, tokens, collect_stats(model, layout, tokens)


def uniform(layout, sparsity: float) -> Candidate:
    return Candidate(metric=KNOWN_METRICS["wanda"], sparsities={name: sparsity for name in layout.names})


def really_pruned(candidate: Candidate, tokens: torch.Tensor, layers: int = 3) -> torch.nn.Module:
    twin = tiny_model("llama", layers=layers)
    prune_model(twin, find_layout(twin), candidate, tokens, progress=False)
    return twin


def test_capability_objectives_are_maximised_and_the_search_negates_them() -> None:
    assert [OBJECTIVES[name].direction for name in ("probe", "passkey")] == ["maximize", "maximize"]
    assert Objectives(("kl", "probe", "passkey")).minimised(np.array([[0.5, 0.75, 1.0]])).tolist() == [[0.5, -0.75, -1.0]]


def test_probe_objective_equals_probes_fitted_on_a_really_pruned_model() -> None:
    model, layout, tokens, stats = setup()
    tokenizer, sets = byte_tokenizer(), noisy_sets()
    inputs = CapabilityInputs(probe=ProbeInputs(encode_sets(model, tokenizer, sets)))
    evaluator = CandidateEvaluator(model, layout, stats, tokens, objectives=("probe", "sparsity"), capabilities=inputs)
    pivot = int(np.argmax(block_separability(model, tokenizer, sets)))  # the dense model's, by the string path
    assert evaluator._capabilities.pivot == pivot
    dense = probe_accuracy(model, tokenizer, sets, block=pivot)["mean"]
    assert evaluator.evaluate(uniform(layout, 0.0))["probe"] == pytest.approx(dense, abs=1e-12)
    candidate = uniform(layout, 0.8)
    got = evaluator.evaluate(candidate)["probe"]
    expected = probe_accuracy(really_pruned(candidate, tokens), tokenizer, sets, block=pivot)["mean"]
    assert got == pytest.approx(expected, abs=1e-12)
    assert got != pytest.approx(dense)  # pruning changes what the probe reads: the check can fail


def greedy_prompt(model: torch.nn.Module, seed: int, length: int = 24, answer: int = 3) -> PasskeyPrompt:
    """A prompt whose "key" is what the dense model writes greedily after it: dense finds it."""
    ids = torch.randint(0, 256, (length,), generator=torch.Generator().manual_seed(seed))
    written = ids.clone()
    with torch.no_grad():
        for _ in range(answer):
            written = torch.cat([written, model(written[None]).logits[0, -1].argmax()[None]])
    return PasskeyPrompt(ids, written[length:], key="", depth=0.5, needle_start=0)


def test_passkey_objective_equals_greedy_retrieval_of_a_really_pruned_model() -> None:
    model, layout, tokens, stats = setup(layers=2)
    prompts = tuple(greedy_prompt(model, seed) for seed in range(8))
    inputs = CapabilityInputs(passkey=PasskeyInputs(prompts))
    evaluator = CandidateEvaluator(model, layout, stats, tokens, objectives=("passkey",), capabilities=inputs)
    assert evaluator.evaluate(uniform(layout, 0.0)) == {"passkey": 1.0}
    candidate = uniform(layout, 0.6)
    pruned = really_pruned(candidate, tokens, layers=2)
    expected = float(np.mean([passkey_found(pruned, prompt) for prompt in prompts]))
    assert evaluator.evaluate(candidate) == {"passkey": pytest.approx(expected, abs=1e-12)}
    assert expected < 1.0  # pruning loses some keys: the comparison can fail


def test_capability_objectives_without_their_inputs_are_one_line_errors() -> None:
    model, layout, tokens, stats = setup(layers=2)
    for name, what in (("probe", "truth statement sets"), ("passkey", "passkey prompts")):
        with pytest.raises(InputError, match=f"objective {name} needs its {what}"):
            CandidateEvaluator(model, layout, stats, tokens, objectives=("kl", name))
        evaluator_params = [linear.module for linear in layout.linears]
        assert all(not hasattr(module, "parametrizations") for module in evaluator_params)  # nothing left installed
    with pytest.raises(InputError, match="probe does not depend on tokens; drop @c4"):
        CandidateEvaluator(model, layout, stats, tokens, objectives=("probe@c4",))
    single = {"alpha": noisy_sets()["alpha"]}
    with pytest.raises(InputError, match="needs at least two topics"):
        ProbeInputs(encode_sets(model, byte_tokenizer(), single))
