"""Masks: rounding, deterministic ties, rank caches equal to direct selection, N:M validity."""

from __future__ import annotations

import pytest
import torch

from paretoprune.errors import InputError
from paretoprune.metrics.masks import (
    check_sparsity,
    check_structure_fits,
    format_structure,
    keep_mask,
    keep_mask_from_nm_ranks,
    keep_mask_from_ranks,
    keep_mask_from_scores,
    keep_mask_without_lowest,
    layer_ranks,
    nm_keep_mask,
    nm_ranks,
    parse_structure,
    pruned_count,
    row_ranks,
)


def brute_force_keep(values: list[float], pruned: int) -> list[bool]:
    """The definition: prune the ``pruned`` lowest by (score, index)."""
    order = sorted(range(len(values)), key=lambda j: (values[j], j))
    dropped = set(order[:pruned])
    return [j not in dropped for j in range(len(values))]


def tie_rich(seed: int, rows: int, width: int, levels: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, (rows, width), generator=generator).float()


# ----------------------------------------------------------------------------------------------
# Structures and sparsities.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("unstructured", None),
        ("Unstructured", None),
        (None, None),
        ("2:4", (2, 4)),
        (" 4 : 8 ", (4, 8)),
        ("1:3", (1, 3)),
    ],
)
def test_parse_structure(text: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_structure(text) == expected
    assert parse_structure(format_structure(expected)) == expected


@pytest.mark.parametrize("text", ["4:2", "2:2", "0:4", "x", "2:4:8", "-1:4", "2/4", ""])
def test_malformed_structures_are_input_errors(text: str) -> None:
    with pytest.raises(InputError, match="structure"):
        parse_structure(text)


def test_structure_that_does_not_tile_names_layer_and_width() -> None:
    check_structure_fits(576, (2, 4), "model.layers.0.mlp.up_proj")
    check_structure_fits(30, None, "anything")
    with pytest.raises(InputError) as error:
        check_structure_fits(30, (4, 8), "model.layers.3.self_attn.q_proj")
    assert "model.layers.3.self_attn.q_proj" in str(error.value) and "30" in str(error.value)


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5, float("nan"), float("inf"), "half"])
def test_sparsity_outside_zero_one_is_an_input_error(sparsity: object) -> None:
    with pytest.raises(InputError, match="sparsity"):
        check_sparsity(sparsity)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        keep_mask_from_scores(torch.rand(2, 4), sparsity)  # type: ignore[arg-type]


def test_pruned_count_is_round_of_sparsity_times_width() -> None:
    # Python's round: halves go to the even neighbour.
    assert pruned_count(10, 0.5) == 5
    assert pruned_count(5, 0.5) == 2
    assert pruned_count(3, 0.5) == 2
    assert pruned_count(7, 0.0) == 0
    assert pruned_count(7, 0.99) == 7
    scores = torch.rand(4, 7)
    for sparsity in (0.0, 0.1, 0.33, 0.5, 0.64, 0.93):
        kept = keep_mask_from_scores(scores, sparsity).sum(dim=1)
        assert kept.tolist() == [7 - round(sparsity * 7)] * 4


def test_bad_group_and_shape_are_input_errors() -> None:
    with pytest.raises(InputError, match="group"):
        keep_mask_from_scores(torch.rand(2, 4), 0.5, group="column")
    with pytest.raises(InputError, match="2-D"):
        row_ranks(torch.rand(8))


# ----------------------------------------------------------------------------------------------
# Ranks and direct selection.


def test_ties_prune_the_lower_column_first() -> None:
    scores = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 1.0, 2.0, 1.0]])
    half, quarter = keep_mask_from_scores(scores, 0.5), keep_mask_from_scores(scores, 0.25)
    assert half.tolist() == [[False, False, True, True], [True, False, True, False]]
    assert quarter.tolist() == [[False, True, True, True], [True, False, True, True]]
    assert row_ranks(scores).tolist() == [[0, 1, 2, 3], [2, 0, 3, 1]]
    # Whole layer: the flat index breaks ties, so the first row's ones go before the second's.
    assert layer_ranks(scores).tolist() == [[0, 1, 2, 3], [6, 4, 7, 5]]
    assert keep_mask_from_scores(scores, 0.5, group="layer").tolist() == [
        [False, False, False, False],
        [True, True, True, True],
    ]
    assert keep_mask_from_scores(scores, 0.75, group="layer").tolist() == [
        [False, False, False, False],
        [True, False, True, False],
    ]


@pytest.mark.parametrize("group", ["row", "layer"])
def test_direct_masks_equal_rank_masks_and_the_definition(group: str) -> None:
    ranks_of = row_ranks if group == "row" else layer_ranks
    for seed in range(12):
        rows, width = 1 + seed % 5, 1 + (seed * 7) % 13
        scores = tie_rich(seed, rows, width)
        ranks = ranks_of(scores)
        for sparsity in (0.0, 0.05, 0.2, 0.25, 0.5, 0.6, 0.75, 0.9, 0.99):
            direct = keep_mask_from_scores(scores, sparsity, group)
            assert torch.equal(direct, keep_mask_from_ranks(ranks, sparsity, group))
            if group == "row":
                expected = [brute_force_keep(row, round(sparsity * width)) for row in scores.tolist()]
            else:
                expected = torch.tensor(
                    brute_force_keep(scores.flatten().tolist(), round(sparsity * scores.numel()))
                ).reshape(rows, width).tolist()
            assert direct.tolist() == expected


def test_identity_on_a_realistic_layer_with_many_ties() -> None:
    # Quantised weights (as dequantised GGUF) tie often; real-valued scores rarely.
    generator = torch.Generator().manual_seed(0)
    quantised = (torch.randn(96, 576, generator=generator) * 6).round().abs()
    smooth = torch.rand(96, 576, generator=generator)
    for scores in (quantised, smooth):
        for group, ranks in (("row", row_ranks(scores)), ("layer", layer_ranks(scores))):
            for sparsity in (0.1, 0.5, 0.7):
                direct = keep_mask_from_scores(scores, sparsity, group)
                assert torch.equal(direct, keep_mask_from_ranks(ranks, sparsity, group))


@pytest.mark.parametrize("group", ["row", "layer"])
def test_every_dtype_selects_the_same_mask(group: str) -> None:
    # On the CPU float32/float64/int scores are selected by numpy, half precision by torch (as on
    # a GPU): small integer scores are exact in every dtype, so all must give the same mask.
    for seed in range(8):
        scores = tie_rich(seed, 1 + seed % 6, 24 + seed, levels=2 + seed % 4)
        for sparsity in (0.05, 0.3, 0.5, 0.8, 0.97):
            expected = keep_mask_from_scores(scores, sparsity, group)
            for dtype in (torch.float64, torch.float16, torch.bfloat16, torch.int32):
                got = keep_mask_from_scores(scores.to(dtype), sparsity, group)
                assert torch.equal(got, expected), dtype


@pytest.mark.parametrize("group", ["row", "layer"])
def test_a_mask_in_a_weight_dtype_is_the_bool_mask_as_numbers(group: str) -> None:
    for seed in range(6):
        scores = tie_rich(seed, 1 + seed % 4, 16)
        for sparsity in (0.0, 0.3, 0.5, 0.99):  # 0.99 prunes every weight of a 16-wide row
            expected = keep_mask_from_scores(scores, sparsity, group)
            for dtype in (torch.float32, torch.bfloat16):
                got = keep_mask(scores, sparsity, group=group, dtype=dtype)
                assert got.dtype == dtype and torch.equal(got, expected.to(dtype))
    nm = keep_mask(scores, 0.0, structure=(2, 4), dtype=torch.float16)
    assert torch.equal(nm, nm_keep_mask(scores, 2, 4).half())


def test_some_rows_tied_and_others_not() -> None:
    # Row 0 ties at its threshold, row 1 does not: only row 0 goes through the tie split.
    scores = torch.tensor([[3.0, 1.0, 1.0, 1.0, 2.0, 1.0], [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    keep = keep_mask_from_scores(scores, 0.5)
    assert keep.tolist() == [
        [True, False, False, False, True, True],
        [True, True, True, False, False, False],
    ]


def test_masks_are_deterministic() -> None:
    scores = tie_rich(3, 16, 64, levels=2)
    first = keep_mask_from_scores(scores, 0.5)
    for _ in range(3):
        assert torch.equal(keep_mask_from_scores(scores.clone(), 0.5), first)
        assert torch.equal(row_ranks(scores.clone()), row_ranks(scores))


def test_rank_dtypes_are_compact() -> None:
    assert row_ranks(torch.rand(3, 576)).dtype == torch.int16
    assert row_ranks(torch.rand(2, 32768)).dtype == torch.int16
    assert row_ranks(torch.rand(1, 40000)).dtype == torch.int32
    assert layer_ranks(torch.rand(3, 576)).dtype == torch.int32
    wide = torch.rand(1, 40000)
    assert torch.equal(keep_mask_from_ranks(row_ranks(wide), 0.3), keep_mask_from_scores(wide, 0.3))


def test_pruning_a_whole_int16_row_does_not_wrap_around() -> None:
    # 32768 ranks fill int16; pruning all of them compares against 32768, which int16 cannot hold.
    scores = torch.rand(1, 32768)
    ranks = row_ranks(scores)
    assert ranks.dtype == torch.int16
    assert not bool(keep_mask_from_ranks(ranks, 0.99999).any())
    assert torch.equal(keep_mask_from_ranks(ranks, 0.99999), keep_mask_from_scores(scores, 0.99999))


def test_ranks_are_a_permutation_per_row() -> None:
    scores = tie_rich(4, 6, 50)
    ranks = row_ranks(scores).long()
    assert torch.equal(ranks.sort(dim=1).values, torch.arange(50).expand(6, 50))


def test_without_lowest_prunes_an_exact_count() -> None:
    scores = tie_rich(5, 4, 10)
    assert int((~keep_mask_without_lowest(scores, 13, group="layer")).sum()) == 13
    assert (~keep_mask_without_lowest(scores, 3)).sum(dim=1).tolist() == [3, 3, 3, 3]
    assert not bool(keep_mask_without_lowest(scores, 10).any())
    assert not bool(keep_mask_without_lowest(scores, 40, group="layer").any())
    with pytest.raises(InputError):
        keep_mask_without_lowest(scores, 11)


# ----------------------------------------------------------------------------------------------
# N:M.


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 4), (3, 4), (1, 2), (2, 6), (5, 16), (7, 32)])
def test_nm_keeps_the_n_highest_of_every_m(n: int, m: int) -> None:
    width = 3 * m
    scores = tie_rich(n * 100 + m, 5, width, levels=4)
    mask = nm_keep_mask(scores, n, m)
    groups = mask.reshape(5, -1, m)
    assert bool((groups.sum(dim=2) == n).all())
    for row in range(5):
        for start in range(0, width, m):
            values = scores[row, start : start + m].tolist()
            assert mask[row, start : start + m].tolist() == brute_force_keep(values, m - n)


def test_nm_ranks_path_equals_direct_path_and_has_small_dtype() -> None:
    scores = tie_rich(9, 8, 64)
    for m in (4, 8, 16):
        ranks = nm_ranks(scores, m)
        assert ranks.dtype == torch.int8
        for n in range(1, m):
            assert torch.equal(keep_mask_from_nm_ranks(ranks, n, m), nm_keep_mask(scores, n, m))


def test_nm_errors_name_the_problem() -> None:
    with pytest.raises(InputError, match="q_proj.*30"):
        nm_keep_mask(torch.rand(2, 30), 2, 4, layer_name="q_proj")
    with pytest.raises(InputError, match="0 < N < M"):
        nm_keep_mask(torch.rand(2, 8), 4, 4)
    with pytest.raises(InputError, match="0 < N < M"):
        keep_mask_from_nm_ranks(torch.zeros(2, 8, dtype=torch.int8), 0, 4)


def test_keep_mask_dispatches_on_structure() -> None:
    scores = torch.rand(4, 16)
    assert torch.equal(keep_mask(scores, 0.3), keep_mask_from_scores(scores, 0.3))
    assert torch.equal(keep_mask(scores, 0.3, group="layer"), keep_mask_from_scores(scores, 0.3, "layer"))
    assert torch.equal(keep_mask(scores, 0.0, structure=(2, 4)), nm_keep_mask(scores, 2, 4))
