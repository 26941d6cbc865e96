"""Truthfulness math: how well activations separate true from false statements, linear probes
that read truth from them, and TPLO's truth-aware layer allocation.

Pure numpy on arrays the caller gives: ``activations`` are [statements, features], ``labels``
are 0 (false) or 1 (true), one per statement. Nothing here runs a model or reads a file.

TPLO ("Pruning Weights but Not Truth") in four steps, each a function below:

1. :func:`separability` of each block's activations, for each statement set;
2. :func:`mean_separability`: each set's per-block values divided by their sum (so a set whose
   classes lie far apart everywhere does not outweigh the others), averaged over the sets;
3. :func:`pivot_block`: the block where that average peaks;
4. :func:`tplo_block_sparsities`: OWL's sparsities below the pivot, sparsities from
   separability from the pivot on, then one common shift to the exact weighted mean.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from paretoprune.errors import InputError
from paretoprune.metrics.allocation import repair_to_mean

__all__ = [
    "Probe",
    "cross_validated",
    "fit_probe",
    "leave_one_topic_out",
    "mean_separability",
    "pivot_block",
    "separability",
    "statement_folds",
    "topic_splits",
    "tplo_block_sparsities",
    "tplo_proposal",
    "within_topic",
]

ArrayLike = Sequence[float] | np.ndarray

# Newton steps stop once no coefficient moves by more than this; logistic loss is smooth and
# strictly convex with an L2 penalty, so Newton gets there in a handful of steps.
_NEWTON_TOLERANCE = 1e-10
_NEWTON_STEPS = 100
_LINE_SEARCH_HALVINGS = 50


# ----------------------------------------------------------------------------------------------
# Separability.


def separability(activations: np.ndarray, labels: ArrayLike) -> float:
    """Between-class over within-class variance of one statement set's activations.

    With ``mu_0``, ``mu_1`` the mean activation of the false and of the true statements, ``mu``
    the mean of all statements, and ``S_c`` the unbiased covariance of class ``c``::

        between = (|mu_0 - mu|^2 + |mu_1 - mu|^2) / 2
        within  = (trace S_0 + trace S_1) / 2
        separability = between / within

    Both are sums over features; averaging over features instead gives the same ratio. The two
    classes weigh equally whatever their sizes. The value does not change when all activations
    are shifted or multiplied by one constant.
    """
    x = _matrix("activations", activations)
    is_true = _two_classes(labels, x.shape[0], "separability", minimum=2)
    overall = x.mean(axis=0)
    classes = (x[~is_true], x[is_true])
    between = sum(float(np.sum((part.mean(axis=0) - overall) ** 2)) for part in classes) / 2
    within = sum(float(np.sum(part.var(axis=0, ddof=1))) for part in classes) / 2
    if within <= 0.0:
        raise InputError("activations do not vary within a class: separability is undefined")
    return between / within


def mean_separability(per_set: Mapping[str, ArrayLike] | Sequence[ArrayLike]) -> np.ndarray:
    """Per-block separability of several statement sets, as one profile over blocks.

    Each set's vector is divided by its sum over blocks, then the vectors are averaged: the
    result sums to 1, and every set shapes it equally however large its raw ratios are.
    """
    vectors = list(per_set.values()) if isinstance(per_set, Mapping) else list(per_set)
    if not vectors:
        raise InputError("separability of no statement sets: give at least one set")
    rows = [_nonnegative_profile(vector) for vector in vectors]
    if len({row.size for row in rows}) != 1:
        raise InputError("statement sets give separability for different numbers of blocks")
    return np.mean(rows, axis=0)


def pivot_block(separability_per_block: ArrayLike) -> int:
    """The block of peak separability (the first one on ties)."""
    return int(np.argmax(_vector("separability", separability_per_block)))


# ----------------------------------------------------------------------------------------------
# TPLO allocation.


def tplo_proposal(
    separability_per_block: ArrayLike,
    owl_block_sparsities: ArrayLike,
    target: float,
    scale: float = 0.04,
) -> np.ndarray:
    """TPLO's per-block sparsities before the repair to the exact mean.

    ``p`` is the separability profile scaled to sum to 1 over the ``L`` blocks (a profile from
    :func:`mean_separability` already does). Blocks before the pivot (the argmax of ``p``) keep
    OWL's sparsity; the pivot and the blocks after it get::

        sparsity_b = target - scale * (L * p_b - 1)

    ``L * p_b - 1`` is how far block ``b`` separates truth above (or below) the average block,
    so a more separable block keeps more weights; ``scale`` (TPLO's ``c``) converts it to
    sparsity. Below the pivot truth is not formed yet and OWL's outlier rule is the better guide.
    """
    profile = _nonnegative_profile(separability_per_block)
    owl = _vector("OWL sparsities", owl_block_sparsities)
    if owl.size != profile.size:
        raise InputError(f"{owl.size} OWL sparsities for {profile.size} blocks of separability")
    if not np.isfinite(scale) or scale < 0:
        raise InputError(f"TPLO scale must be >= 0, got {scale}")
    pivot = pivot_block(profile)
    proposal = owl.copy()
    proposal[pivot:] = target - scale * (profile.size * profile[pivot:] - 1.0)
    return proposal


def tplo_block_sparsities(
    separability_per_block: ArrayLike,
    owl_block_sparsities: ArrayLike,
    block_weights: ArrayLike,
    target: float,
    scale: float = 0.04,
    lower: float = 0.0,
    upper: float = 0.99,
) -> np.ndarray:
    """TPLO's per-block sparsities (:func:`tplo_proposal`) at the exact weighted mean ``target``.

    Joining OWL's part and the separability part moves the mean off the target; one common
    shift (:func:`paretoprune.metrics.allocation.repair_to_mean`) brings it back, weighting
    blocks by their parameter counts ``block_weights``.
    """
    proposal = tplo_proposal(separability_per_block, owl_block_sparsities, target, scale)
    return repair_to_mean(proposal, block_weights, target, lower, upper)


# ----------------------------------------------------------------------------------------------
# Logistic-regression probes.


@dataclass(frozen=True)
class Probe:
    """A linear truth probe: ``P(true) = sigmoid(((x - mean) / scale) . weights + bias)``."""

    mean: np.ndarray  # [features], of the training split
    scale: np.ndarray  # [features], standard deviation of the training split (1 where constant)
    weights: np.ndarray  # [features], on the standardised features
    bias: float

    def logits(self, features: np.ndarray) -> np.ndarray:
        x = _matrix("features", features)
        if x.shape[1] != self.weights.size:
            raise InputError(f"the probe reads {self.weights.size} features, got {x.shape[1]}")
        return ((x - self.mean) / self.scale) @ self.weights + self.bias

    def predict(self, features: np.ndarray) -> np.ndarray:
        """1 where the probe calls a statement true, else 0."""
        return (self.logits(features) > 0).astype(np.int64)

    def accuracy(self, features: np.ndarray, labels: ArrayLike) -> float:
        """Fraction of statements whose label the probe predicts."""
        predicted = self.predict(features)
        truth = _labels(labels, predicted.size, "probe accuracy")
        return float(np.mean(predicted == truth))


def fit_probe(features: np.ndarray, labels: ArrayLike, l2: float = 1.0) -> Probe:
    """L2-penalised logistic regression, fitted by Newton's method.

    Features are standardised with the training split's mean and standard deviation; then the
    fitted ``(w, b)`` minimise::

        sum_i [log(1 + exp(z_i)) - y_i * z_i] + l2 / 2 * |w|^2,   z_i = x_i . w + b

    (the bias is not penalised). This is scikit-learn's ``LogisticRegression(C=1 / l2)`` on
    standardised features. The penalty keeps the weights finite when the classes are linearly
    separable, which they usually are when features outnumber statements.
    """
    x = _matrix("features", features)
    y = _two_classes(labels, x.shape[0], "a probe", minimum=1).astype(np.float64)
    if not np.isfinite(l2) or l2 <= 0:
        raise InputError(f"the probe's L2 penalty must be > 0, got {l2}")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)  # a constant feature carries nothing; avoid 0 / 0
    design = np.hstack([(x - mean) / scale, np.ones((x.shape[0], 1))])
    theta = _newton(design, y, l2)
    return Probe(mean=mean, scale=scale, weights=theta[:-1], bias=float(theta[-1]))


def _penalised_loss(design: np.ndarray, y: np.ndarray, theta: np.ndarray, l2: float) -> float:
    z = design @ theta
    return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * np.dot(theta[:-1], theta[:-1]))


def _newton(design: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """Minimise the penalised logistic loss over ``theta = (w, b)`` from zero."""
    theta = np.zeros(design.shape[1])
    penalty = np.full(design.shape[1], l2)
    penalty[-1] = 0.0  # the bias is free
    loss = _penalised_loss(design, y, theta, l2)
    for _ in range(_NEWTON_STEPS):
        probability = _sigmoid(design @ theta)
        gradient = design.T @ (probability - y) + penalty * theta
        curvature = probability * (1.0 - probability)
        hessian = (design * curvature[:, None]).T @ design + np.diag(penalty)
        step = _solve(hessian, gradient)
        theta, loss = _backtrack(design, y, theta, step, loss, l2)
        if np.max(np.abs(step)) <= _NEWTON_TOLERANCE:
            break
    return theta


def _backtrack(
    design: np.ndarray, y: np.ndarray, theta: np.ndarray, step: np.ndarray, loss: float, l2: float
) -> tuple[np.ndarray, float]:
    """A full Newton step, halved until the loss does not rise (far from the optimum a full
    step can overshoot where the sigmoid saturates)."""
    length = 1.0
    for _ in range(_LINE_SEARCH_HALVINGS):
        candidate = theta - length * step
        candidate_loss = _penalised_loss(design, y, candidate, l2)
        if candidate_loss <= loss:
            return candidate, candidate_loss
        length /= 2
    return theta, loss


def _solve(hessian: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(hessian, gradient)
    except np.linalg.LinAlgError:  # the bias row vanishes when every probability saturates
        return np.linalg.lstsq(hessian, gradient, rcond=None)[0]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


# ----------------------------------------------------------------------------------------------
# Leave one topic out.

FitProbe = Callable[[np.ndarray, np.ndarray], Probe]


def topic_splits(topics: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``(held-out topic, training topics)`` for each topic: train on all the others."""
    names = list(topics)
    if len(names) < 2:
        raise InputError(f"leave one topic out needs at least two topics, got {len(names)}")
    if len(set(names)) != len(names):
        raise InputError("topics must be distinct to leave one out")
    return [(held_out, [name for name in names if name != held_out]) for held_out in names]


def leave_one_topic_out(
    features_by_topic: Mapping[str, np.ndarray],
    labels_by_topic: Mapping[str, ArrayLike],
    l2: float = 1.0,
    fit: FitProbe | None = None,
) -> dict[str, float]:
    """Accuracy on each topic of a probe trained on all the other topics.

    Testing on a topic the probe never saw asks whether it found truth itself rather than a
    feature of one topic's statements. ``fit`` replaces :func:`fit_probe` (default, with ``l2``).
    """
    if set(features_by_topic) != set(labels_by_topic):
        raise InputError("features and labels must name the same topics")
    fitter = fit or (lambda x, y: fit_probe(x, y, l2))
    accuracies: dict[str, float] = {}
    for held_out, training in topic_splits(list(features_by_topic)):
        x = np.concatenate([_matrix(name, features_by_topic[name]) for name in training])
        y = np.concatenate([np.asarray(labels_by_topic[name]).reshape(-1) for name in training])
        probe = fitter(x, y)
        accuracies[held_out] = probe.accuracy(features_by_topic[held_out], labels_by_topic[held_out])
    return accuracies


# ----------------------------------------------------------------------------------------------
# Checks.


def _matrix(name: str, values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"{name} must be a non-empty [statements, features] matrix, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise InputError(f"{name} contain NaN or inf")
    return array


def _labels(labels: ArrayLike, count: int, what: str) -> np.ndarray:
    array = np.asarray(labels).reshape(-1)
    if array.size != count:
        raise InputError(f"{what}: {array.size} labels for {count} statements")
    if not np.all((array == 0) | (array == 1)):
        raise InputError(f"{what}: labels must be 0 (false) or 1 (true)")
    return array.astype(np.int64)


def _two_classes(labels: ArrayLike, count: int, what: str, minimum: int) -> np.ndarray:
    """The labels as a boolean "is true" mask, with at least ``minimum`` statements per class."""
    is_true = _labels(labels, count, what).astype(bool)
    true_count = int(is_true.sum())
    if min(true_count, count - true_count) < minimum:
        raise InputError(
            f"{what} needs at least {minimum} true and {minimum} false statement(s), got "
            f"{true_count} true and {count - true_count} false"
        )
    return is_true


def _vector(name: str, values: ArrayLike) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise InputError(f"{name} is empty; give one value per block")
    if not np.all(np.isfinite(array)):
        raise InputError(f"{name} contains NaN or inf")
    return array


def _nonnegative_profile(values: ArrayLike) -> np.ndarray:
    """``values`` divided by their sum, for non-negative values with a positive sum."""
    array = _vector("separability", values)
    if np.any(array < 0) or array.sum() <= 0:
        raise InputError("separability must be >= 0 with a positive total over the blocks")
    return array / array.sum()


# ----------------------------------------------------------------------------------------------
# Held-out statements of the same topic.


def statement_folds(count: int, folds: int, seed: int = 0, labels: ArrayLike | None = None) -> np.ndarray:
    """The fold of each of ``count`` statements: a seeded shuffle dealt out in turn, so fold
    sizes differ by at most one.

    With ``labels``, the deal is stratified: the true statements are dealt out first, then the
    false ones continue the turn, so every fold holds each class in proportion and every
    training split (all folds but one) holds both classes whenever each has at least ``folds``
    statements. Without it, a small set can leave a training split with a single class.
    """
    if folds < 2 or count < folds:
        raise InputError(f"cross-validation needs 2 <= folds <= statements, got {folds} folds for {count}")
    order = np.random.default_rng(seed).permutation(count)
    if labels is not None:
        is_true = _labels(labels, count, "cross-validation") == 1
        order = np.concatenate([order[is_true[order]], order[~is_true[order]]])
    assignment = np.empty(count, dtype=np.int64)
    assignment[order] = np.arange(count) % folds
    return assignment


def cross_validated(
    features: np.ndarray,
    labels: ArrayLike,
    folds: int = 2,
    seed: int = 0,
    l2: float = 1.0,
    fit: FitProbe | None = None,
) -> float:
    """Accuracy over all statements, each predicted by a probe fitted on the other folds.

    A weaker test than :func:`leave_one_topic_out`: the probe may read a feature of the topic
    rather than truth itself, but it shows whether a block separates truth at all.
    """
    x = _matrix("features", features)
    y = _labels(labels, x.shape[0], "cross-validation")
    fitter = fit or (lambda train_x, train_y: fit_probe(train_x, train_y, l2))
    assignment = statement_folds(x.shape[0], folds, seed, y)
    correct = 0
    for fold in range(folds):
        test = assignment == fold
        probe = fitter(x[~test], y[~test])
        correct += int(np.sum(probe.predict(x[test]) == y[test]))
    return correct / x.shape[0]


def within_topic(
    features_by_topic: Mapping[str, np.ndarray],
    labels_by_topic: Mapping[str, ArrayLike],
    folds: int = 2,
    seed: int = 0,
    l2: float = 1.0,
    fit: FitProbe | None = None,
) -> dict[str, float]:
    """:func:`cross_validated` accuracy of each topic on its own statements."""
    if set(features_by_topic) != set(labels_by_topic):
        raise InputError("features and labels must name the same topics")
    return {
        topic: cross_validated(features_by_topic[topic], labels_by_topic[topic], folds, seed, l2, fit)
        for topic in features_by_topic
    }
