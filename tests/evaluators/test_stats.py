"""Activation statistics: exact against a plain forward, one-shot versus sequential."""

from __future__ import annotations

import pytest
import torch

from paretoprune.evaluators.stats import collect_stats, walk_blocks
from paretoprune.models import find_layout
from paretoprune.testing import FAMILIES, tiny_model


def _reference_sq_sums(model, layout, tokens) -> dict[str, torch.Tensor]:
    """Per-channel sums of squared inputs, hooked on one ordinary forward of the whole model."""
    sums: dict[str, torch.Tensor] = {}
    handles = []
    for linear in layout.linears:
        def record(_module, args, name=linear.name):
            rows = args[0].reshape(-1, args[0].shape[-1]).double()
            sums[name] = sums.get(name, 0) + rows.square().sum(0)
        handles.append(linear.module.register_forward_pre_hook(record))
    with torch.no_grad():
        model(input_ids=tokens)
    for handle in handles:
        handle.remove()
    return sums


@pytest.mark.parametrize("family", FAMILIES)
def test_block_walk_matches_a_plain_forward(family: str) -> None:
    model = tiny_model(family, layers=3)
    layout = find_layout(model)
    tokens = torch.randint(0, 256, (5, 24), generator=torch.Generator().manual_seed(0))
    stats = collect_stats(model, layout, tokens, batch_size=2)  # 2 does not divide 5 on purpose
    reference = _reference_sq_sums(model, layout, tokens)
    assert set(stats) == set(layout.names)
    for name, expected in reference.items():
        torch.testing.assert_close(stats[name].sq_sum, expected, rtol=1e-5, atol=1e-6)
        assert stats[name].count == 5 * 24
        assert stats[name].act_norm.shape == (layout.linear(name).in_features,)


def test_gram_matrix_is_x_transpose_x() -> None:
    model = tiny_model("llama")
    layout = find_layout(model)
    tokens = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    first = layout.linears[0]
    seen: list[torch.Tensor] = []
    handle = first.module.register_forward_pre_hook(lambda _m, a: seen.append(a[0].reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        model(input_ids=tokens)
    handle.remove()
    x = torch.cat(seen)
    stats = collect_stats(model, layout, tokens, hessian=True)[first.name]
    torch.testing.assert_close(stats.gram, x.t() @ x, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(stats.hessian(), 2 * x.t() @ x / x.shape[0], rtol=1e-4, atol=1e-5)


def _prune_half_of(step) -> None:
    for linear in step.linears:
        weight = linear.weight_matrix()
        weight[:, : weight.shape[1] // 2] = 0


def test_sequential_sees_pruned_blocks_one_shot_does_not() -> None:
    model = tiny_model("llama", layers=3)
    layout = find_layout(model)
    tokens = torch.randint(0, 256, (3, 20), generator=torch.Generator().manual_seed(2))
    dense = collect_stats(model, layout, tokens)

    def walk(propagate: str):
        pruned = tiny_model("llama", layers=3)  # same seed, same weights
        seen = {}
        for step in walk_blocks(pruned, find_layout(pruned), tokens, propagate=propagate):
            seen.update({name: s.sq_sum.clone() for name, s in step.stats.items()})
            _prune_half_of(step)
        return seen

    one_shot, sequential = walk("dense"), walk("pruned")
    block0 = [linear.name for linear in layout.linears_of_block(0)]
    later = [linear.name for linear in layout.linears if linear.block_index > 0]
    for name in block0:  # block 0 sees the embeddings either way
        torch.testing.assert_close(sequential[name], dense[name].sq_sum)
    for name in later:  # one-shot keeps calibrating on dense activations
        torch.testing.assert_close(one_shot[name], dense[name].sq_sum)
    assert any(not torch.allclose(sequential[name], dense[name].sq_sum) for name in later)
