"""Which fitness predicts perplexity: Spearman's rho per objective and budget."""

from __future__ import annotations

import pytest

from benchmarks.fitness import FitnessScore, correlations


def test_each_objective_and_budget_is_ranked_against_perplexity_best_first() -> None:
    ppl = [100.0, 200.0, 300.0, 400.0]
    scores = [FitnessScore(i, "kl", 4, 256, value, ppl[i]) for i, value in enumerate([1.0, 2.0, 3.0, 4.0])]
    scores += [FitnessScore(i, "kl", 16, 256, value, ppl[i]) for i, value in enumerate([1.0, 3.0, 2.0, 4.0])]
    scores += [FitnessScore(i, "hidden_mse", 4, 256, value, ppl[i]) for i, value in enumerate([4.0, 3.0, 2.0, 1.0])]
    found = [(c.objective, c.windows, c.tokens, c.rho) for c in correlations(scores)]
    assert found == [("kl", 4, 256, pytest.approx(1.0)), ("kl", 16, 256, pytest.approx(0.8)),
                     ("hidden_mse", 4, 256, pytest.approx(-1.0))]  # fmt: skip
