"""Activation statistics: exact against a plain forward, one-shot versus sequential."""

from __future__ import annotations

import pytest
import torch

from paretoprune.evaluators.stats import collect_stats, on_device, walk_blocks
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


@pytest.mark.parametrize("family", FAMILIES)
def test_statistics_computed_on_a_named_device_match_and_leave_the_model_home(family: str) -> None:
    """The driver's path for a GPU (``--driver-device``): blocks and their inputs move to the
    compute device and back. On the CPU nothing moves, and every statistic must equal the plain
    walk's, bit for bit; the GPU check runs it on a GPU."""
    model = tiny_model(family, layers=2)
    layout = find_layout(model)
    tokens = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(1))
    plain = collect_stats(model, layout, tokens, batch_size=2, hessian=True, last_tokens=True, gradients=True)
    moved = collect_stats(model, layout, tokens, batch_size=2, hessian=True, last_tokens=True, gradients=True,
                          compute_device=torch.device("cpu"))  # fmt: skip
    for name, stat in plain.items():
        torch.testing.assert_close(moved[name].sq_sum, stat.sq_sum, rtol=0, atol=0)
        torch.testing.assert_close(moved[name].gram, stat.gram, rtol=0, atol=0)
        torch.testing.assert_close(moved[name].grad_sq_sum, stat.grad_sq_sum, rtol=0, atol=0)
        assert len(moved[name].last_inputs) == len(stat.last_inputs)  # none where a family flattens tokens (OPT)
        for ours, theirs in zip(moved[name].last_inputs, stat.last_inputs):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert {parameter.device.type for parameter in model.parameters()} == {"cpu"}


def test_channel_stats_move_with_every_field() -> None:
    model = tiny_model("llama", layers=1)
    layout = find_layout(model)
    tokens = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(2))
    stat = next(iter(collect_stats(model, layout, tokens, hessian=True, last_tokens=True, gradients=True).values()))
    moved = stat.to(torch.device("meta"))
    tensors = [moved.sq_sum, moved.gram, moved.grad_sq_sum, *moved.last_inputs]
    assert all(tensor.device.type == "meta" for tensor in tensors)
    assert (moved.count, moved.grad_samples, moved.grad_tokens) == (stat.count, stat.grad_samples, stat.grad_tokens)
    assert stat.sq_sum.device.type == "cpu"  # a copy: the original stays


def test_on_device_moves_every_tensor_of_a_blocks_arguments() -> None:
    arguments = (torch.ones(2), [torch.zeros(1), 3], {"position_embeddings": (torch.ones(1), torch.ones(1)), "x": None})
    moved = on_device(arguments, torch.device("meta"))
    assert moved[0].device.type == "meta" and moved[1][0].device.type == "meta" and moved[1][1] == 3
    assert all(tensor.device.type == "meta" for tensor in moved[2]["position_embeddings"])
    assert moved[2]["x"] is None
