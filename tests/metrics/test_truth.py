"""Truthfulness math: separability, the logistic probe, leave one topic out, TPLO's allocation."""

from __future__ import annotations

import numpy as np
import pytest

from paretoprune.errors import InputError
from paretoprune.metrics.allocation import weighted_mean
from paretoprune.metrics.truth import (
    Probe,
    cross_validated,
    fit_probe,
    leave_one_topic_out,
    mean_separability,
    pivot_block,
    separability,
    statement_folds,
    topic_splits,
    tplo_block_sparsities,
    tplo_proposal,
    within_topic,
)


def naive_separability(x: np.ndarray, labels: np.ndarray) -> float:
    """Between over within variance, feature by feature and statement by statement."""
    n, d = x.shape
    between = within = 0.0
    for j in range(d):
        overall = sum(x[i, j] for i in range(n)) / n
        for c in (0, 1):
            members = [x[i, j] for i in range(n) if labels[i] == c]
            mean = sum(members) / len(members)
            between += (mean - overall) ** 2 / 2
            within += sum((v - mean) ** 2 for v in members) / (len(members) - 1) / 2
    return between / within


def two_blobs(rng: np.random.Generator, n: int, d: int, gap: float) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 2, size=n)
    labels[:2], labels[2:4] = 0, 1  # both classes, at least two each
    direction = rng.normal(size=d)
    x = rng.normal(size=(n, d)) + gap * np.outer(labels - 0.5, direction / np.linalg.norm(direction))
    return x, labels


# ----------------------------------------------------------------------------------------------
# Separability.


@pytest.mark.parametrize("seed", range(4))
def test_separability_matches_a_naive_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, labels = two_blobs(rng, n=int(rng.integers(8, 40)), d=int(rng.integers(1, 9)), gap=rng.uniform(0, 4))
    assert separability(x, labels) == pytest.approx(naive_separability(x, labels), rel=1e-12)


def test_separability_weighs_classes_equally_not_by_size() -> None:
    # Three false statements, nine true ones: a size-weighted between-class term would differ.
    x = np.array([[0.0], [1.0], [2.0]] + [[5.0 + 0.1 * i] for i in range(9)])
    labels = np.array([0] * 3 + [1] * 9)
    assert separability(x, labels) == pytest.approx(naive_separability(x, labels), rel=1e-12)


def test_separability_ignores_shift_and_scale_and_grows_with_the_gap() -> None:
    rng = np.random.default_rng(5)
    x, labels = two_blobs(rng, n=60, d=6, gap=2.0)
    assert separability(3.5 * x - 7.0, labels) == pytest.approx(separability(x, labels), rel=1e-10)
    wider, _ = two_blobs(np.random.default_rng(5), n=60, d=6, gap=6.0)
    assert separability(wider, labels) > separability(x, labels)


@pytest.mark.parametrize(
    "labels, message",
    [([1, 1, 1, 1], "0 false"), ([0, 1, 1, 1], "1 false"), ([0, 1, 2, 1], "0 \\(false\\) or 1")],
)
def test_separability_refuses_a_single_class_or_bad_labels(labels: list[int], message: str) -> None:
    with pytest.raises(InputError, match=message):
        separability(np.arange(8.0).reshape(4, 2), labels)


def test_mean_separability_normalises_each_set_then_averages() -> None:
    first, second = np.array([1.0, 3.0, 0.0, 4.0]), np.array([10.0, 10.0, 20.0, 60.0])
    expected = (first / 8.0 + second / 100.0) / 2
    assert mean_separability({"a": first, "b": second}) == pytest.approx(expected, rel=1e-15)
    # A set whose ratios are all 1000 times larger shapes the profile no more than before.
    assert mean_separability([first, 1000 * second]) == pytest.approx(expected, rel=1e-15)
    assert mean_separability([first, second]).sum() == pytest.approx(1.0)


def test_mean_separability_refuses_mismatched_or_negative_sets() -> None:
    with pytest.raises(InputError, match="different numbers of blocks"):
        mean_separability([[1.0, 2.0], [1.0, 2.0, 3.0]])
    with pytest.raises(InputError, match=">= 0"):
        mean_separability([[1.0, -2.0]])


def test_pivot_is_the_first_peak() -> None:
    assert pivot_block([0.1, 0.5, 0.2, 0.5]) == 1


# ----------------------------------------------------------------------------------------------
# TPLO.

PROFILE = np.array([0.01, 0.03, 0.08, 0.20, 0.16, 0.12, 0.15, 0.10, 0.09, 0.06])  # peak at block 3
OWL = np.array([0.62, 0.58, 0.55, 0.49, 0.47, 0.50, 0.53, 0.51, 0.48, 0.52])
WEIGHTS = np.array([3.0, 1.0, 2.0, 5.0, 1.0, 4.0, 2.0, 2.0, 6.0, 1.0]) * 1e5


def test_tplo_proposal_keeps_owl_below_the_pivot_and_uses_the_formula_from_it() -> None:
    proposal = tplo_proposal(PROFILE, OWL, target=0.5, scale=0.04)
    pivot = pivot_block(PROFILE)
    assert pivot == 3
    np.testing.assert_array_equal(proposal[:pivot], OWL[:pivot])
    expected = 0.5 - 0.04 * (PROFILE.size * PROFILE[pivot:] / PROFILE.sum() - 1.0)
    np.testing.assert_allclose(proposal[pivot:], expected, rtol=1e-14)


def test_tplo_proposal_reads_raw_ratios_as_their_profile() -> None:
    np.testing.assert_allclose(tplo_proposal(7.0 * PROFILE, OWL, 0.5), tplo_proposal(PROFILE, OWL, 0.5), rtol=1e-14)


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
def test_tplo_hits_the_exact_weighted_mean(target: float) -> None:
    sparsities = tplo_block_sparsities(PROFILE, OWL + target - 0.5, WEIGHTS, target)
    assert weighted_mean(sparsities, WEIGHTS) == pytest.approx(target, abs=1e-10)
    assert np.all((sparsities >= 0) & (sparsities <= 0.99))


def test_tplo_gives_more_separable_blocks_after_the_pivot_less_sparsity() -> None:
    sparsities = tplo_block_sparsities(PROFILE, OWL, WEIGHTS, 0.5)
    after = slice(pivot_block(PROFILE), None)
    # Ranks by separability (descending) equal ranks by sparsity (ascending).
    by_separability = np.argsort(-PROFILE[after], kind="stable")
    np.testing.assert_array_equal(by_separability, np.argsort(sparsities[after], kind="stable"))
    # The repair is one common shift: before the pivot OWL's differences survive.
    np.testing.assert_allclose(np.diff(sparsities[:3]), np.diff(OWL[:3]), atol=1e-12)


def test_tplo_with_zero_scale_is_flat_from_the_pivot() -> None:
    sparsities = tplo_block_sparsities(PROFILE, OWL, WEIGHTS, 0.5, scale=0.0)
    assert np.ptp(sparsities[3:]) == pytest.approx(0.0, abs=1e-12)


def test_tplo_refuses_mismatched_lengths() -> None:
    with pytest.raises(InputError, match="9 OWL sparsities for 10 blocks"):
        tplo_proposal(PROFILE, OWL[:-1], 0.5)


# ----------------------------------------------------------------------------------------------
# The probe.


def penalised_gradient(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: float, l2: float) -> tuple[np.ndarray, float]:
    p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
    return x.T @ (p - y) + l2 * w, float(np.sum(p - y))


def gradient_descent_reference(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Plain full-batch gradient descent on standardised features, run until the gradient vanishes."""
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    w, b = np.zeros(z.shape[1]), 0.0
    rate = 1.0 / (0.25 * np.linalg.norm(z, 2) ** 2 + z.shape[0] + l2)  # below 1 / Lipschitz constant
    for _ in range(200_000):
        grad_w, grad_b = penalised_gradient(z, y, w, b, l2)
        if max(np.abs(grad_w).max(), abs(grad_b)) < 1e-11:
            break
        w, b = w - rate * grad_w, b - rate * grad_b
    return w, b


def test_probe_matches_gradient_descent_to_convergence() -> None:
    rng = np.random.default_rng(11)
    x, labels = two_blobs(rng, n=80, d=4, gap=1.5)
    x = x * np.array([1.0, 10.0, 0.1, 3.0]) + 2.0  # uneven feature scales: standardisation matters
    probe = fit_probe(x, labels, l2=2.0)
    w, b = gradient_descent_reference(x, labels.astype(float), l2=2.0)
    np.testing.assert_allclose(probe.weights, w, atol=1e-8)
    assert probe.bias == pytest.approx(b, abs=1e-8)
    # Stationary point of the documented objective on the training split's standardisation.
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    grad_w, grad_b = penalised_gradient(z, labels.astype(float), probe.weights, probe.bias, 2.0)
    assert max(np.abs(grad_w).max(), abs(grad_b)) < 1e-8


def test_probe_matches_scipy_on_a_wide_problem() -> None:
    optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(3)
    x, labels = two_blobs(rng, n=60, d=90, gap=3.0)  # more features than statements: separable
    probe = fit_probe(x, labels, l2=0.5)
    z = np.hstack([(x - x.mean(axis=0)) / x.std(axis=0), np.ones((60, 1))])

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        logits = z @ theta
        p = 1.0 / (1.0 + np.exp(-logits))
        loss = np.sum(np.logaddexp(0.0, logits) - labels * logits) + 0.25 * theta[:-1] @ theta[:-1]
        return loss, z.T @ (p - labels) + np.append(0.5 * theta[:-1], 0.0)

    settings = {"gtol": 1e-12, "ftol": 0.0, "maxiter": 10_000}  # ftol 0: stop on the gradient alone
    found = optimize.minimize(objective, np.zeros(91), jac=True, method="L-BFGS-B", options=settings)
    np.testing.assert_allclose(np.append(probe.weights, probe.bias), found.x, atol=1e-6)
    assert probe.accuracy(x, labels) == 1.0


def test_probe_accuracy_counts_correct_predictions() -> None:
    probe = Probe(mean=np.zeros(1), scale=np.ones(1), weights=np.array([1.0]), bias=-0.5)
    features = np.array([[0.0], [1.0], [2.0], [-3.0]])
    assert probe.predict(features).tolist() == [0, 1, 1, 0]
    assert probe.accuracy(features, [0, 1, 0, 0]) == 0.75


def test_probe_separates_separable_data_on_held_out_statements() -> None:
    rng = np.random.default_rng(4)
    x, labels = two_blobs(rng, n=400, d=10, gap=8.0)
    probe = fit_probe(x[:200], labels[:200])
    assert probe.accuracy(x[200:], labels[200:]) == 1.0


def test_probe_on_random_labels_is_at_chance_on_held_out_statements() -> None:
    rng = np.random.default_rng(8)
    x, labels = rng.normal(size=(4200, 20)), rng.integers(0, 2, size=4200)
    probe = fit_probe(x[:200], labels[:200])
    assert 0.46 < probe.accuracy(x[200:], labels[200:]) < 0.54


def test_probe_refuses_a_single_class_and_a_non_positive_penalty() -> None:
    x = np.arange(12.0).reshape(6, 2)
    with pytest.raises(InputError, match="a probe needs at least 1 true and 1 false statement.*6 true and 0 false"):
        fit_probe(x, np.ones(6))
    with pytest.raises(InputError, match="L2 penalty must be > 0"):
        fit_probe(x, [0, 1, 0, 1, 0, 1], l2=0.0)


# ----------------------------------------------------------------------------------------------
# Leave one topic out.


def test_topic_splits_never_train_on_the_held_out_topic() -> None:
    splits = topic_splits(["a", "b", "c", "d"])
    assert [held_out for held_out, _ in splits] == ["a", "b", "c", "d"]
    for held_out, training in splits:
        assert held_out not in training and sorted(training + [held_out]) == ["a", "b", "c", "d"]
    with pytest.raises(InputError, match="at least two topics"):
        topic_splits(["a"])


def test_leave_one_topic_out_trains_only_on_the_other_topics() -> None:
    rng = np.random.default_rng(2)
    # Column 0 tags each row with its topic, so the spy can tell which rows a probe saw.
    features = {name: np.column_stack([np.full(20 + 5 * i, float(i)), rng.normal(size=(20 + 5 * i, 3))])
                for i, name in enumerate(["a", "b", "c"])}
    labels = {name: np.arange(len(x)) % 2 for name, x in features.items()}
    seen: list[set[float]] = []

    def spy(x: np.ndarray, y: np.ndarray) -> Probe:
        seen.append(set(x[:, 0].tolist()))
        assert len(x) == len(y)
        return fit_probe(x, y)

    leave_one_topic_out(features, labels, fit=spy)
    assert seen == [{1.0, 2.0}, {0.0, 2.0}, {0.0, 1.0}]


def test_leave_one_topic_out_scores_each_topic_with_the_others_probe() -> None:
    rng = np.random.default_rng(6)

    def topic(flip: bool) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, size=100)
        x = rng.normal(size=(100, 5))
        x[:, 0] += 6.0 * ((1 - y) if flip else y)  # the truth direction; reversed in "flipped"
        return x, y

    data = {"a": topic(False), "b": topic(False), "c": topic(False), "flipped": topic(True)}
    accuracy = leave_one_topic_out({k: v[0] for k, v in data.items()}, {k: v[1] for k, v in data.items()})
    assert set(accuracy) == set(data)
    assert accuracy["flipped"] < 0.1  # a probe from a, b, c reads it backwards
    assert accuracy["a"] > 0.9


# ----------------------------------------------------------------------------------------------
# Held-out statements of the same topic.


def test_statement_folds_are_balanced_and_seeded() -> None:
    folds = statement_folds(11, 3, seed=1)
    assert sorted(np.bincount(folds).tolist()) == [3, 4, 4]
    np.testing.assert_array_equal(folds, statement_folds(11, 3, seed=1))
    assert not np.array_equal(folds, statement_folds(11, 3, seed=2))
    with pytest.raises(InputError, match="2 <= folds"):
        statement_folds(5, 1)


def test_folds_with_labels_keep_each_class_in_every_fold() -> None:
    labels = np.array([1] * 4 + [0] * 4)
    for seed in range(20):  # unstratified, some seeds put all of one class in one of two folds
        folds = statement_folds(8, 2, seed=seed, labels=labels)
        assert np.bincount(folds).tolist() == [4, 4]
        assert [int(labels[folds == fold].sum()) for fold in (0, 1)] == [2, 2]
    # Without labels the classes are not spread evenly for every seed: the stratification matters.
    assert any(int(labels[statement_folds(8, 2, seed=seed) == 0].sum()) != 2 for seed in range(20))


def test_cross_validation_tests_each_statement_once_on_a_probe_that_never_saw_it() -> None:
    rng = np.random.default_rng(9)
    x = np.column_stack([np.arange(30.0), rng.normal(size=(30, 2))])  # column 0 names the statement
    labels = np.arange(30) % 2
    trained_on: list[set[float]] = []

    def spy(train_x: np.ndarray, train_y: np.ndarray) -> Probe:
        trained_on.append(set(train_x[:, 0].tolist()))
        return fit_probe(train_x, train_y)

    cross_validated(x, labels, folds=3, seed=0, fit=spy)
    held_out = [set(range(30)) - seen for seen in trained_on]
    assert len(held_out) == 3 and sorted(len(h) for h in held_out) == [10, 10, 10]
    assert set().union(*held_out) == set(range(30))


def test_within_topic_separates_what_leave_one_topic_out_cannot() -> None:
    rng = np.random.default_rng(12)

    def topic(axis: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(200) % 2
        x = rng.normal(size=(200, 4))
        x[:, axis] += 6.0 * y  # each topic keeps truth on its own axis
        return x, y

    data = {name: topic(axis) for axis, name in enumerate("abcd")}
    features, labels = {k: v[0] for k, v in data.items()}, {k: v[1] for k, v in data.items()}
    assert min(within_topic(features, labels).values()) > 0.95
    assert max(leave_one_topic_out(features, labels).values()) < 0.75
