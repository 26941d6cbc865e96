"""UniPruning's math against hand-computed values and the reference formulas."""

from __future__ import annotations

import pytest
import torch

from paretoprune.errors import InputError
from paretoprune.metrics.scores import ria_scores
from paretoprune.metrics.unipruning import (
    mirror_descent_step,
    quantile,
    random_subset_mask,
    soft_threshold,
    stochastic_ria,
    subset_size,
)


def test_soft_threshold_by_hand() -> None:
    values = torch.tensor([-3.0, -0.5, 0.0, 0.2, 2.0])
    assert torch.equal(soft_threshold(values, 1.0), torch.tensor([-2.0, 0.0, 0.0, 0.0, 1.0]))


def test_one_mirror_descent_step_by_hand() -> None:
    z = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
    gamma = torch.tensor([[0.0, 0.5], [1.5, 3.0]])
    saliency = torch.tensor([[1.0, 2.0], [3.0, 1.0]])
    # z + 0.5 * (S - Gamma) = [[0.5, 1.75], [2.75, 3.0]]; the median of |z| interpolates
    # between 1.75 and 2.75: 2.25; soft-thresholding at 2.25 leaves [[0, 0], [0.5, 0.75]].
    moved, new_gamma = mirror_descent_step(z, gamma, saliency, kappa=0.5, lam=0.5)
    assert torch.equal(moved, torch.tensor([[0.5, 1.75], [2.75, 3.0]]))
    assert torch.equal(new_gamma, torch.tensor([[0.0, 0.0], [0.5, 0.75]]))
    assert torch.equal(z, torch.tensor([[0.0, 1.0], [2.0, 4.0]]))  # the inputs are left alone


def test_the_paper_step_zeroes_the_lambda_fraction_of_smallest_entries() -> None:
    generator = torch.Generator().manual_seed(0)
    saliency = torch.rand(100, 100, generator=generator)
    z, gamma = mirror_descent_step(torch.zeros(100, 100), torch.zeros(100, 100), saliency, kappa=0.01, lam=1e-3)
    assert int((gamma == 0).sum()) == 10  # 0.1 % of 10 000, the smallest z = 0.01 * S
    assert torch.equal(gamma == 0, saliency <= saliency.flatten().kthvalue(10).values)


@pytest.mark.parametrize("q", [0.0, 1e-3, 0.37, 0.5, 1.0])
def test_quantile_equals_torch_quantile(q: float) -> None:
    values = torch.randn(37, 53, generator=torch.Generator().manual_seed(3))
    assert float(quantile(values, q)) == pytest.approx(float(torch.quantile(values.flatten(), q)), abs=1e-6)


def test_random_subsets_have_the_exact_size_in_every_row_and_column() -> None:
    generator = torch.Generator().manual_seed(1)
    rows = random_subset_mask((6, 40), 8, dim=1, generator=generator)
    cols = random_subset_mask((6, 40), 2, dim=0, generator=generator)
    assert rows.sum(dim=1).tolist() == [8] * 6
    assert cols.sum(dim=0).tolist() == [2] * 40
    assert subset_size((6, 40), 0.2) == 1 and subset_size((512, 2048), 0.2) == 102


def test_whole_subsets_give_ria_with_the_second_moment_over_its_mean() -> None:
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(16, 16, generator=generator)
    second_moment = torch.rand(16, generator=generator) + 0.1
    # RIA's input norm to the power 0.7 is the second moment to the power 0.35.
    expected = ria_scores(weight, second_moment.sqrt(), alpha=0.7)
    saliency = stochastic_ria(weight, second_moment, fraction=1.0, power=0.35, generator=generator)
    torch.testing.assert_close(saliency, expected / expected.mean(), rtol=1e-5, atol=1e-6)


def test_the_saliency_changes_with_its_subsets_but_keeps_mean_one() -> None:
    generator = torch.Generator().manual_seed(4)
    weight, second_moment = torch.randn(32, 48, generator=generator), torch.rand(48, generator=generator)
    first = stochastic_ria(weight, second_moment, generator=generator)
    second = stochastic_ria(weight, second_moment, generator=generator)
    assert not torch.equal(first, second)
    assert float(first.mean()) == pytest.approx(1.0, abs=1e-5) and bool((first >= 0).all())


def test_bad_inputs_are_one_line_errors() -> None:
    with pytest.raises(InputError, match="E\\[x\\^2\\] has shape"):
        stochastic_ria(torch.ones(4, 8), torch.ones(4))
    with pytest.raises(InputError, match="share one shape"):
        mirror_descent_step(torch.zeros(2, 2), torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(InputError, match="quantile"):
        quantile(torch.ones(3), 1.5)
    with pytest.raises(InputError, match="fraction"):
        subset_size((4, 4), 0.0)
