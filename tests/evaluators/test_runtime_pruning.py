"""Test-time (per-prompt) pruning: exact at ratio 1, no leakage, dense weights restored."""

from __future__ import annotations

import pytest
import torch

from paretoprune.errors import InputError
from paretoprune.evaluators.runtime_pruning import (
    TestTimePruner,
    channel_keep,
    check_ratio,
    split_perplexity,
    test_time_perplexity,
)
from paretoprune.models import find_layout
from paretoprune.testing import tiny_model


def _windows(seed: int, count: int = 2, seqlen: int = 48) -> torch.Tensor:
    return torch.randint(0, 250, (count, seqlen), generator=torch.Generator().manual_seed(seed))


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("structured", [False, True])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_ratio_one_is_dense_exactly_and_weights_come_back(family: str, structured: bool) -> None:
    model = tiny_model(family)
    layout = find_layout(model)
    windows = _windows(0)
    dense = _logits(model, windows)
    before = {linear.name: linear.module.weight.detach().clone() for linear in layout.linears}
    pruner = TestTimePruner(model, layout, ratio=1.0, structured=structured)
    with pruner.masked(windows[0, :24]):
        assert torch.equal(_logits(model, windows), dense)
    with pytest.raises(RuntimeError, match="boom"), TestTimePruner(model, layout, 0.5, structured).masked(windows[0]):
        raise RuntimeError("boom")
    assert all(torch.equal(linear.module.weight, before[linear.name]) for linear in layout.linears)
    assert all(not linear.module._forward_pre_hooks for linear in layout.linears)
    assert torch.equal(_logits(model, windows), dense)


@pytest.mark.parametrize("structured", [False, True])
def test_masks_read_only_the_context(structured: bool) -> None:
    model = tiny_model("llama")
    layout = find_layout(model)
    pruner = TestTimePruner(model, layout, ratio=0.5, structured=structured)
    first, second = _windows(1)[0], _windows(2)[0]
    shared_context = torch.cat([first[:24], second[24:]])  # same context, other scored tokens

    def masks(context: torch.Tensor) -> dict[str, torch.Tensor]:
        with pruner.masked(context) as kept:
            return {name: value.clone() for name, value in kept.items()}

    from_first = masks(first[:24])
    assert all(torch.equal(from_first[k], v) for k, v in masks(shared_context[:24]).items())
    # Another context gives other masks: the comparison above can fail.
    assert any(not torch.equal(from_first[k], v) for k, v in masks(second[:24]).items())
    # And the scored perplexity sees the masks of each window's own context only.
    batch = torch.stack([first, shared_context])
    scored = test_time_perplexity(pruner, batch, context_fraction=0.5)
    assert scored.context == 24 and scored.tokens == 48


def test_unstructured_keeps_the_ratio_per_row_and_structured_equals_zeroed_columns() -> None:
    model = tiny_model("llama")
    layout = find_layout(model)
    windows = _windows(3)
    pruner = TestTimePruner(model, layout, ratio=0.25)
    with pruner.masked(windows[0, :24]) as kept:
        for linear in layout.linears:
            assert (kept[linear.name].sum(dim=1) == round(0.25 * linear.in_features)).all()
            assert int((linear.weight_matrix() != 0).sum()) <= kept[linear.name].sum()
    structured = TestTimePruner(model, layout, ratio=0.25, structured=True)
    with structured.masked(windows[0, :24]) as channels:
        gathered = _logits(model, windows)
    # The same channels, zeroed in full-size weights instead of gathered: the same outputs.
    originals = {linear.name: linear.module.weight.data for linear in layout.linears}
    for linear in layout.linears:
        zeroed = torch.zeros_like(originals[linear.name])
        zeroed[:, channels[linear.name]] = originals[linear.name][:, channels[linear.name]]
        linear.module.weight.data = zeroed
    try:
        torch.testing.assert_close(gathered, _logits(model, windows), rtol=1e-5, atol=1e-5)
    finally:
        for linear in layout.linears:
            linear.module.weight.data = originals[linear.name]


def test_test_time_perplexity_at_ratio_one_equals_dense_on_the_same_tokens() -> None:
    model = tiny_model("qwen2")
    layout = find_layout(model)
    windows = _windows(4, count=3)
    dense = split_perplexity(model, windows, 0.25)
    exact = test_time_perplexity(TestTimePruner(model, layout, 1.0), windows, 0.25)
    assert exact.tokens == dense.tokens == 3 * 36
    assert exact.perplexity == pytest.approx(dense.perplexity, rel=1e-6)
    pruned = test_time_perplexity(TestTimePruner(model, layout, 0.3), windows, 0.25)
    assert pruned.perplexity != pytest.approx(dense.perplexity, rel=1e-3)


def test_bad_ratios_and_fractions_are_one_line_errors() -> None:
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(InputError, match="outside \\(0, 1\\]"):
            check_ratio(bad)
    with pytest.raises(InputError, match="--context-fraction"):
        split_perplexity(tiny_model("llama"), _windows(0), context_fraction=1.0)
    assert channel_keep(torch.ones(3, 10), torch.ones(10), 0.01).numel() == 1
