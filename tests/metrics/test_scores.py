"""Scores: hand-computed examples, the family's known points, and finiteness under abuse."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
import torch

from paretoprune.errors import InputError
from paretoprune.metrics.masks import keep_mask_from_scores, nm_keep_mask
from paretoprune.metrics.scores import (
    KNOWN_METRICS,
    NORMALISERS,
    TRANSFORMS,
    MetricSpec,
    compute_scores,
    magnitude_scores,
    metric_by_name,
    ria_scores,
    wanda_plus_plus_scores,
    wanda_scores,
)

# A 2x3 layer small enough to score by hand: |W| = [[1, 2, 3], [4, 5, 0]].
WEIGHT = torch.tensor([[1.0, -2.0, 3.0], [-4.0, 5.0, 0.0]])
ACT = torch.tensor([1.0, 4.0, 0.25])  # square roots 1, 2, 0.5


def realistic_layer(seed: int = 0, out: int = 48, width: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian weights and activation norms with a few outlier channels, as in LLMs."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(out, width, generator=generator) * 0.02
    act = torch.rand(width, generator=generator) + 0.1
    act[torch.randint(0, width, (3,), generator=generator)] *= 40.0
    return weight, act


# ----------------------------------------------------------------------------------------------
# Hand-computed examples.


def test_magnitude_by_hand() -> None:
    scores = compute_scores(WEIGHT, None, metric_by_name("magnitude"))
    assert torch.equal(scores, torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 0.0]]))


def test_wanda_by_hand() -> None:
    scores = compute_scores(WEIGHT, ACT, metric_by_name("wanda"))
    assert torch.equal(scores, torch.tensor([[1.0, 8.0, 0.75], [4.0, 20.0, 0.0]]))


def test_ria_by_hand() -> None:
    # Row sums 6 and 9; column sums 5, 7 and 3; activation term sqrt(act) = 1, 2, 0.5.
    expected = torch.tensor(
        [
            [(1 / 6 + 1 / 5) * 1, (2 / 6 + 2 / 7) * 2, (3 / 6 + 3 / 3) * 0.5],
            [(4 / 9 + 4 / 5) * 1, (5 / 9 + 5 / 7) * 2, 0.0],
        ]
    )
    torch.testing.assert_close(compute_scores(WEIGHT, ACT, metric_by_name("ria")), expected)


def test_operator_point_by_hand() -> None:
    # sqrt(|W|) normalised by its row sum, times log1p(act).
    spec = MetricSpec.operators("sqrt", "row", "log", "none")
    root = [[1.0, math.sqrt(2), math.sqrt(3)], [2.0, math.sqrt(5), 0.0]]
    logs = [math.log1p(1.0), math.log1p(4.0), math.log1p(0.25)]
    expected = torch.tensor([[v / sum(row) * logs[j] for j, v in enumerate(row)] for row in root])
    torch.testing.assert_close(compute_scores(WEIGHT, ACT, spec), expected)


def test_continuous_point_by_hand() -> None:
    # x = |W|^2; 0.5 * x / rowsum(x) + 0.25 * x / (mean row sum); activations absent.
    spec = MetricSpec(weight_power=2.0, row_coef=0.5, abs_coef=0.25, abs_scale="rowsum")
    x = [[1.0, 4.0, 9.0], [16.0, 25.0, 0.0]]
    mean_rowsum = (14.0 + 41.0) / 2
    expected = torch.tensor([[0.5 * v / sum(row) + 0.25 * v / mean_rowsum for v in row] for row in x])
    torch.testing.assert_close(compute_scores(WEIGHT, None, spec), expected)


def test_activation_normalisers_by_hand() -> None:
    # The broadcast activation matrix has column sums rows * act: "column" leaves 1/rows (0 if
    # dead); "relative" adds act / sum(act). Two rows here; act sums to 8.
    act = torch.tensor([2.0, 0.0, 6.0])
    column = compute_scores(WEIGHT, act, MetricSpec(act_power=1.0, act_norm="column"))
    torch.testing.assert_close(column, WEIGHT.abs() * torch.tensor([0.5, 0.0, 0.5]))
    relative = compute_scores(WEIGHT, act, MetricSpec(act_power=1.0, act_norm="relative"))
    torch.testing.assert_close(relative, WEIGHT.abs() * torch.tensor([0.5 + 0.25, 0.0, 0.5 + 0.75]))


# ----------------------------------------------------------------------------------------------
# Known metrics are exact points of the family.


def test_known_metrics_equal_the_paper_formulas_bit_for_bit() -> None:
    weight, act = realistic_layer()
    magnitude = compute_scores(weight, act, KNOWN_METRICS["magnitude"])
    assert torch.equal(magnitude, magnitude_scores(weight))
    assert torch.equal(compute_scores(weight, act, KNOWN_METRICS["wanda"]), wanda_scores(weight, act))
    assert torch.equal(compute_scores(weight, act, KNOWN_METRICS["ria"]), ria_scores(weight, act))


def family_points() -> list[tuple[str, MetricSpec]]:
    """Settings of the family, written out as numbers and operators, for each known metric."""
    return [
        ("magnitude", MetricSpec.operators(use_activations=False)),
        ("magnitude", MetricSpec(abs_coef=2.5, abs_scale="fro")),  # a global factor: same masks
        ("magnitude", MetricSpec.operators("none", "mean", use_activations=False)),
        ("wanda", MetricSpec.operators("none", "none", "none", "none")),
        ("wanda", MetricSpec(act_power=1.0, abs_scale="rowsum")),
        ("wanda", MetricSpec.operators("none", "sum", "none", "sum")),
        ("ria", MetricSpec(weight_power=1.0, row_coef=1.0, col_coef=1.0, abs_coef=0.0, act_power=0.5)),
        ("ria", replace(MetricSpec.operators(weight_norm="relative"), act_power=0.5)),
    ]


@pytest.mark.parametrize(("known", "spec"), family_points())
def test_family_settings_give_identical_masks(known: str, spec: MetricSpec) -> None:
    weight, act = realistic_layer(seed=1)
    weight[3, :8] = weight[3, 8:16]  # some exact ties inside a row
    reference = compute_scores(weight, act, KNOWN_METRICS[known])
    scores = compute_scores(weight, act, spec)
    for sparsity in (0.1, 0.3, 0.5, 0.7, 0.9):
        for group in ("row", "layer"):
            expected = keep_mask_from_scores(reference, sparsity, group)
            found = keep_mask_from_scores(scores, sparsity, group)
            assert torch.equal(found, expected), (spec, sparsity, group)
    for n, m in ((2, 4), (4, 8), (1, 4)):
        assert torch.equal(nm_keep_mask(scores, n, m), nm_keep_mask(reference, n, m))


def test_family_points_differ_from_each_other() -> None:
    # Guard against a vacuous equivalence test: the known masks really are different.
    weight, act = realistic_layer(seed=2)
    grad = torch.rand(weight.shape, generator=torch.Generator().manual_seed(3)) * act.mean() / 50
    masks = [keep_mask_from_scores(compute_scores(weight, act, spec, grad), 0.5) for spec in KNOWN_METRICS.values()]
    for first, second in itertools.combinations(masks, 2):
        assert not torch.equal(first, second)


def test_uses_activations_only_when_the_act_term_is_present() -> None:
    assert not KNOWN_METRICS["magnitude"].uses_activations
    assert KNOWN_METRICS["wanda"].uses_activations and KNOWN_METRICS["ria"].uses_activations
    assert not MetricSpec.operators("exp", "row", "log", "relative", use_activations=False).uses_activations
    # Magnitude does not need activations at all.
    compute_scores(WEIGHT, None, KNOWN_METRICS["magnitude"])


# ----------------------------------------------------------------------------------------------
# The spec as data.


def test_round_trip_through_dict_keeps_every_field() -> None:
    spec = MetricSpec(
        name="found",
        weight_power=0.75,
        weight_transform="sqrt",
        row_coef=0.3,
        col_coef=0.6,
        abs_coef=0.1,
        abs_scale="rowsum",
        act_power=0.4,
        act_transform="log",
        act_norm="relative",
    )
    again = MetricSpec.from_dict(spec.to_dict())
    assert again == spec and again.name == "found" and again.to_dict() == spec.to_dict()
    for known in KNOWN_METRICS.values():
        assert MetricSpec.from_dict(known.to_dict()).to_dict() == known.to_dict()


def test_from_dict_fills_missing_fields_from_the_named_metric() -> None:
    assert MetricSpec.from_dict({"name": "ria"}) == KNOWN_METRICS["ria"]
    assert MetricSpec.from_dict({"name": "meta", "act_power": 1}) == KNOWN_METRICS["wanda"]


def test_name_is_a_label_not_part_of_identity() -> None:
    twin = MetricSpec(name="meta", act_power=1.0)
    assert twin == KNOWN_METRICS["wanda"] and hash(twin) == hash(KNOWN_METRICS["wanda"])


def test_describe_reads_as_a_formula() -> None:
    assert KNOWN_METRICS["wanda"].describe() == "wanda: |W| * act"
    assert KNOWN_METRICS["magnitude"].describe() == "magnitude: |W|"
    ria = KNOWN_METRICS["ria"].describe()
    assert "x/rowsum(x)" in ria and "x/colsum(x)" in ria and "act^0.5" in ria
    assert "log1p" in MetricSpec.operators("none", "row", "log", "none").describe()


def test_weight_norm_names_the_discrete_point() -> None:
    for name in NORMALISERS:
        assert MetricSpec.operators(weight_norm=name).weight_norm == name
    assert MetricSpec(row_coef=0.2, col_coef=0.7).weight_norm == "mixed"


@pytest.mark.parametrize(
    "fields",
    [
        {"weight_transform": "cube"},
        {"act_norm": "l2"},
        {"weight_power": 0.0},
        {"act_power": -1.0},
        {"row_coef": -0.1},
        {"abs_coef": 0.0},
        {"weight_power": float("nan")},
        {"act_power": "much"},
    ],
)
def test_bad_specs_are_input_errors(fields: dict) -> None:
    with pytest.raises(InputError):
        MetricSpec(**fields)


def test_unknown_names_and_fields_are_input_errors() -> None:
    with pytest.raises(InputError, match="unknown scoring rule .sparsegpt-ish.: choose one of magnitude, wanda, ria, wanda"):
        metric_by_name("sparsegpt-ish")
    with pytest.raises(InputError, match="unknown metric fields"):
        MetricSpec.from_dict({"name": "wanda", "alpha": 0.5})


def test_shape_problems_are_input_errors() -> None:
    with pytest.raises(InputError, match="activation norms"):
        compute_scores(WEIGHT, None, KNOWN_METRICS["wanda"])
    with pytest.raises(InputError, match="shape"):
        compute_scores(WEIGHT, torch.ones(4), KNOWN_METRICS["wanda"])
    with pytest.raises(InputError, match="2-D"):
        compute_scores(torch.ones(3), None, KNOWN_METRICS["magnitude"])


def test_inputs_are_not_modified() -> None:
    weight, act = realistic_layer(seed=3)
    weight_copy, act_copy = weight.clone(), act.clone()
    for spec in (MetricSpec.operators("exp", "relative", "softmax", "relative"), KNOWN_METRICS["ria"]):
        compute_scores(weight, act, spec)
    assert torch.equal(weight, weight_copy) and torch.equal(act, act_copy)


# ----------------------------------------------------------------------------------------------
# Never NaN or inf.


def adversarial_inputs() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    weight, act = realistic_layer(seed=4, out=5, width=8)
    zero_row, zero_col = weight.clone(), weight.clone()
    zero_row[2] = 0.0
    zero_col[:, 3] = 0.0
    dead_act = act.clone()
    dead_act[[0, 5]] = 0.0
    huge = weight.clone()
    huge[1, 1] = 3e38
    huge[4] = 1e30
    return {
        "zeros": (torch.zeros(5, 8), torch.zeros(8)),
        "zero row": (zero_row, act),
        "zero column": (zero_col, act),
        "dead inputs": (weight, dead_act),
        "huge weights": (huge, act),
        "huge activations": (weight, act * 1e36),
        "tiny": (weight * 1e-40, act * 1e-40),
        "both huge": (huge, torch.full((8,), 3e38)),
    }


def operator_points() -> list[MetricSpec]:
    """Every weight operator pair and every activation operator pair, each met three times
    (the full 2401-point product takes too long for what it adds)."""
    pairs = list(itertools.product(TRANSFORMS, NORMALISERS))
    return [
        MetricSpec.operators(*pairs[i], *pairs[(i + shift) % len(pairs)])
        for shift in (0, 17, 33)
        for i in range(len(pairs))
    ]


@pytest.mark.parametrize("case", list(adversarial_inputs()))
def test_every_operator_point_stays_finite(case: str) -> None:
    weight, act = adversarial_inputs()[case]
    for spec in operator_points():
        scores = compute_scores(weight, act, spec)
        assert bool(torch.isfinite(scores).all()), (case, spec)
        assert bool((scores >= 0).all()), (case, spec)


@pytest.mark.parametrize("case", list(adversarial_inputs()))
def test_continuous_points_stay_finite(case: str) -> None:
    weight, act = adversarial_inputs()[case]
    generator = torch.Generator().manual_seed(5)
    specs = list(KNOWN_METRICS.values())
    for index in range(60):
        draw = torch.rand(6, generator=generator) * torch.tensor([3.0, 3.0, 1.0, 1.0, 1.0, 200.0])
        a, b, r, c, u, g = draw.tolist()
        point = {"weight_power": a + 0.05, "act_power": b, "row_coef": r, "col_coef": c, "abs_coef": u + 1e-3,
                 "grad_coef": g if index % 2 else 0.0}  # fmt: skip
        specs.append(MetricSpec(abs_scale="rowsum", **point))
    grad = weight.abs()  # as adversarial as the weights: zero, huge or tiny with them
    for spec in specs:
        scores = compute_scores(weight, act, spec, grad)
        assert bool(torch.isfinite(scores).all()) and bool((scores >= 0).all()), (case, spec)


def test_overflow_fallback_keeps_the_order_of_a_homogeneous_rule() -> None:
    # |W|^3 of 1e20 overflows fp32; the rescaled computation still ranks the big weight first.
    weight = torch.tensor([[1e20, 2.0, 3.0, 1e19]])
    scores = compute_scores(weight, None, MetricSpec(weight_power=3.0))
    assert bool(torch.isfinite(scores).all())
    assert scores.argmax().item() == 0 and scores[0, 3] > scores[0, 2] >= scores[0, 1]


# ----------------------------------------------------------------------------------------------
# Wanda++'s gradient term.


def test_wanda_plus_plus_is_the_papers_formula_on_its_own_footing() -> None:
    # The paper adds alpha * G to Wanda's per-sample norm ||X_j||, which is sqrt(tokens per
    # sample) times the per-token RMS the scores read; the statistic divides G by the same
    # factor. With 16 tokens per sample the factor is 4, a power of two: both sides then do the
    # same roundings and must agree bit for bit.
    weight, act = realistic_layer(seed=7)
    rms_grad = torch.rand(weight.shape, generator=torch.Generator().manual_seed(8)) * 0.05
    paper_norm, paper_grad = act * 4.0, rms_grad * 4.0
    ours = compute_scores(weight, act, KNOWN_METRICS["wanda++"], rms_grad)
    literal = wanda_plus_plus_scores(weight, paper_norm, paper_grad, alpha=100.0)
    assert torch.equal(ours * 4.0, literal)
    assert torch.equal(nm_keep_mask(ours, 2, 4), nm_keep_mask(literal, 2, 4))
    # The gradient term matters: without it the masks are Wanda's, and they differ.
    assert not torch.equal(keep_mask_from_scores(ours, 0.5), keep_mask_from_scores(wanda_scores(weight, act), 0.5))


def test_wanda_plus_plus_by_hand() -> None:
    grad = torch.tensor([[0.01, 0.0, 0.02], [0.0, 0.03, 1.0]])
    scores = compute_scores(WEIGHT, ACT, KNOWN_METRICS["wanda++"], grad)
    # |W| * (act + 100 * grad): act = 1, 4, 0.25.
    expected = torch.tensor([[1 * (1 + 1), 2 * 4.0, 3 * (0.25 + 2)], [4 * 1.0, 5 * (4 + 3), 0.0]])
    torch.testing.assert_close(scores, expected)
    # Without activations (b = 0) the act term is act^0 = 1.
    no_act = MetricSpec(grad_coef=10.0)
    torch.testing.assert_close(compute_scores(WEIGHT, None, no_act, grad), WEIGHT.abs() * (1 + 10 * grad))


def test_specs_without_the_gradient_term_keep_their_scores_bit_for_bit() -> None:
    # A gradient handed to a rule without the term is not read: the old computation, unchanged.
    weight, act = realistic_layer(seed=9)
    grad = torch.rand(weight.shape, generator=torch.Generator().manual_seed(10))
    specs = [KNOWN_METRICS[name] for name in ("magnitude", "wanda", "ria")] + operator_points()[::20]
    for spec in specs:
        acts = act if spec.uses_activations else None
        assert torch.equal(compute_scores(weight, acts, spec, grad), compute_scores(weight, acts, spec)), spec
    assert torch.equal(compute_scores(weight, act, KNOWN_METRICS["wanda"], grad), wanda_scores(weight, act))


def test_old_specs_write_what_they_wrote_and_gradient_specs_round_trip() -> None:
    for name in ("magnitude", "wanda", "ria"):
        assert "grad_coef" not in KNOWN_METRICS[name].to_dict()
    assert "grad_coef" not in MetricSpec.operators("exp", "row", "log", "relative").to_dict()
    plus = KNOWN_METRICS["wanda++"]
    assert plus.to_dict()["grad_coef"] == 100.0
    assert MetricSpec.from_dict(plus.to_dict()) == plus
    assert MetricSpec.from_dict({"name": "wanda++"}) == plus
    searched = MetricSpec(name="found", act_power=0.7, grad_coef=42.5)
    assert MetricSpec.from_dict(searched.to_dict()) == searched
    assert plus != KNOWN_METRICS["wanda"] and plus.uses_gradients and not KNOWN_METRICS["wanda"].uses_gradients
    assert plus.describe() == "wanda++: |W| * (act + 100*grad)"


def test_gradient_problems_are_one_line_input_errors() -> None:
    with pytest.raises(InputError, match="grad_coef must be >= 0"):
        MetricSpec(grad_coef=-1.0)
    with pytest.raises(InputError, match="has a gradient term and needs regional-gradient statistics"):
        compute_scores(WEIGHT, ACT, KNOWN_METRICS["wanda++"])
    with pytest.raises(InputError, match="gradients have shape"):
        compute_scores(WEIGHT, ACT, KNOWN_METRICS["wanda++"], torch.ones(3, 2))
