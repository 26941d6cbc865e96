"""Regional gradients (Wanda++'s G): the walk's statistic against plain autograd, sample by sample."""

from __future__ import annotations

import math

import pytest
import torch

from paretoprune.evaluators.stats import collect_stats, walk_blocks
from paretoprune.metrics.gradients import regional_grad, regional_loss, squared_sample_gradients
from paretoprune.models import find_layout
from paretoprune.testing import tiny_model


def _naive_squared_gradients(model, layout, block_index: int, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """For each sample alone: the dense model's input to the block, ``||block(x)||_2`` backward
    through that block only, and the squares of every linear's ``weight.grad`` summed."""
    block = layout.blocks[block_index]
    linears = layout.linears_of_block(block_index)
    calls: list[tuple[tuple, dict]] = []
    handle = block.module.register_forward_pre_hook(lambda _m, a, k: calls.append((a, dict(k))), with_kwargs=True)
    sums = {linear.name: torch.zeros(linear.out_features, linear.in_features, dtype=torch.float64) for linear in linears}
    try:
        for sample in tokens.split(1):
            calls.clear()
            with torch.no_grad():
                model(input_ids=sample, use_cache=False)
            args, kwargs = calls[0]
            hidden = (args[0] if args else kwargs.pop("hidden_states")).detach().clone()
            model.zero_grad()
            out = block.module(hidden, *args[1:], **kwargs)
            (out[0] if isinstance(out, tuple) else out).norm().backward()
            for linear in linears:
                grad = linear.module.weight.grad
                sums[linear.name] += (grad.t() if linear.transposed else grad).double().square()
    finally:
        handle.remove()
        model.zero_grad()
    return sums


@pytest.mark.parametrize("family", ["llama", "opt", "gpt2"])  # OPT flattens tokens, GPT-2 stores [in, out]
def test_walk_gradients_match_naive_autograd_per_sample(family: str) -> None:
    model = tiny_model(family, layers=2)
    layout = find_layout(model)
    tokens = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(0))
    steps = list(walk_blocks(model, layout, tokens, batch_size=2, gradients=True, propagate="dense"))
    for block_index in (0, 1):
        expected = _naive_squared_gradients(model, layout, block_index, tokens)
        for name, sums in expected.items():
            stats = steps[block_index].stats[name]
            assert stats.grad_samples == 3 and stats.grad_tokens == 48
            torch.testing.assert_close(stats.grad_sq_sum.double(), sums, rtol=1e-4, atol=1e-10)
            torch.testing.assert_close(stats.grad_rms.double(), (sums / 3).sqrt(), rtol=1e-4, atol=1e-8)
            assert float(sums.max()) > 0  # a vacuous zero gradient would pass the comparison


def test_a_plain_walk_gathers_no_gradients_and_says_so() -> None:
    model = tiny_model("llama")
    layout = find_layout(model)
    tokens = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    stats = collect_stats(model, layout, tokens)
    first = stats[layout.names[0]]
    assert first.grad_sq_sum is None and not first.has_gradients
    with pytest.raises(RuntimeError, match="without regional gradients"):
        first.regional_grad


def test_gradients_leave_the_model_and_its_flags_untouched() -> None:
    model = tiny_model("llama")
    layout = find_layout(model)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    tokens = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(2))
    list(walk_blocks(model, layout, tokens, gradients=True))
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]) and param.requires_grad == flags[name] and param.grad is None


def test_squared_sample_gradients_are_the_sum_of_each_samples_outer_products() -> None:
    generator = torch.Generator().manual_seed(3)
    x, dy = torch.randn(4, 5, 3, generator=generator), torch.randn(4, 5, 2, generator=generator)
    expected = torch.einsum("bto,bti->boi", dy, x).square().sum(0)
    torch.testing.assert_close(squared_sample_gradients(x, dy), expected)
    with pytest.raises(ValueError, match="same samples and tokens"):
        squared_sample_gradients(x, dy[:, :4])


def test_regional_loss_is_the_sum_of_per_sample_norms_and_the_statistic_its_scaled_rms() -> None:
    outputs = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(4))
    assert float(regional_loss(outputs)) == pytest.approx(sum(float(o.norm()) for o in outputs), rel=1e-6)
    sums = torch.tensor([[8.0, 18.0]])
    # G = sqrt(sums / 2 samples) = [2, 3]; 32 tokens over 2 samples: divided by sqrt(16) = 4.
    torch.testing.assert_close(regional_grad(sums, samples=2, tokens=32), torch.tensor([[0.5, 0.75]]))
    assert math.isclose(float(regional_grad(sums, 2, 2)[0, 0]), 2.0)
