"""Regional optimisation's pure steps: the re-pruning mask keeps each budget, the rounds' samples."""

from __future__ import annotations

import pytest
import torch

from paretoprune.errors import InputError
from paretoprune.metrics.masks import keep_mask_from_scores, nm_keep_mask
from paretoprune.metrics.regional import RegionalSettings, output_error, round_batches, same_budget_mask
from paretoprune.metrics.row_allocation import keep_mask_with_row_counts


def _scores(seed: int, shape: tuple[int, int] = (6, 16)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_re_pruning_keeps_n_of_m_and_follows_the_new_scores() -> None:
    old = nm_keep_mask(_scores(0), 2, 4)
    new_scores = _scores(1)
    keep = same_budget_mask(new_scores, old, (2, 4))
    assert torch.equal(keep, nm_keep_mask(new_scores, 2, 4))
    assert bool((keep.reshape(6, -1, 4).sum(-1) == 2).all()) and not torch.equal(keep, old)


def test_re_pruning_keeps_each_rows_count_even_when_rows_differ() -> None:
    # A row allocation (TRIM) gives rows their own counts; re-pruning must keep every one.
    pruned = torch.tensor([2, 5, 8, 0, 11, 7])
    old = keep_mask_with_row_counts(_scores(2), pruned)
    keep = same_budget_mask(_scores(3), old, None, "row")
    assert torch.equal(keep.sum(dim=1), old.sum(dim=1))
    assert torch.equal(keep, keep_mask_with_row_counts(_scores(3), pruned))


def test_re_pruning_a_layer_wide_mask_keeps_the_layers_count() -> None:
    old = keep_mask_from_scores(_scores(4), 0.6, "layer")
    keep = same_budget_mask(_scores(5), old, None, "layer")
    assert int(keep.sum()) == int(old.sum())
    assert torch.equal(keep, keep_mask_from_scores(_scores(5), 0.6, "layer"))


def test_rounds_draw_whole_batches_up_to_the_sample_count() -> None:
    sizes = [8, 8, 8, 8]
    assert sorted(round_batches(sizes, 32, 0)) == [0, 1, 2, 3]
    assert sorted(round_batches(sizes, 100, 1)) == [0, 1, 2, 3]  # fewer samples than asked: all
    picks = [tuple(round_batches(sizes, 16, r)) for r in range(6)]
    assert all(len(p) == 2 for p in picks) and len(set(picks)) > 1  # each round its own draw
    assert round_batches(sizes, 16, 3) == round_batches(sizes, 16, 3)  # seeded


def test_output_error_is_the_mean_square() -> None:
    a, b = torch.ones(2, 3), torch.zeros(2, 3)
    b[0, 0] = 4.0
    assert float(output_error(a, b)) == pytest.approx((9 + 5) / 6)


@pytest.mark.parametrize("fields", [{"rounds": 0}, {"samples": 0}, {"lr": 0.0}, {"lr": -1e-5}])
def test_bad_settings_are_input_errors(fields: dict) -> None:
    with pytest.raises(InputError):
        RegionalSettings(**fields)
