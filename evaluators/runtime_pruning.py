"""Test-time pruning (μ-MoE): masks made per prompt, from that prompt's own activations.

A static recipe fixes its masks once, from calibration text. Test-time pruning instead reads
the prompt first: for each linear, the Wanda score ``|W_ij| * ||x_j||`` with ``||x_j||`` the
norm of input channel ``j`` over the prompt's tokens (dense model), and keeps the ``ratio`` of
weights with the highest scores in every row. The continuation is then scored (or generated)
with those masks, so every prompt gets a sub-network of its own.

The structured variant keeps whole input channels (score ``||x_j|| * ||W_:j||``): the kept
columns make a smaller dense matrix, so the layer really computes less. For ``nn.Linear``
modules the smaller matrix is used directly (the input is gathered to the kept channels); for
GPT-2's transposed ``Conv1D`` the dropped columns are zeroed instead.

No leakage: the masks depend only on the context tokens given to :meth:`TestTimePruner.masked`;
the tokens being scored never reach the statistics.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from paretoprune.errors import InputError
from paretoprune.evaluators.stats import collect_stats
from paretoprune.metrics.masks import keep_mask_from_scores
from paretoprune.models import ModelLayout, PrunableLinear
from paretoprune.recipe import Recipe

__all__ = [
    "SplitPerplexity",
    "TestTimePruner",
    "channel_keep",
    "check_ratio",
    "context_length",
    "row_keep",
    "split_perplexity",
    "test_time_perplexity",
]


def check_ratio(ratio: float) -> float:
    """The active ratio must be in (0, 1]: the fraction of weights (or channels) kept."""
    if not 0.0 < float(ratio) <= 1.0:
        raise InputError(f"test-time ratio {ratio} is outside (0, 1]: it is the fraction kept, e.g. 0.5")
    return float(ratio)


def row_keep(weight: torch.Tensor, act_norm: torch.Tensor, ratio: float) -> torch.Tensor:
    """Unstructured: keep the ``ratio`` of each row's weights with the largest ``|W| * ||x||``."""
    scores = weight.detach().float().abs() * act_norm.float()[None, :]
    return keep_mask_from_scores(scores, 1.0 - ratio, "row")


def channel_keep(weight: torch.Tensor, act_norm: torch.Tensor, ratio: float) -> torch.Tensor:
    """Structured: the indices (ascending) of the ``ratio`` of input channels to keep, ranked by
    ``||x_j|| * ||W_:j||``; at least one channel is kept."""
    scores = act_norm.float() * weight.detach().float().norm(dim=0)
    count = max(1, math.ceil(ratio * weight.shape[1] - 1e-9))
    return torch.topk(scores, count, sorted=False).indices.sort().values


@dataclass
class _Saved:
    weight: torch.Tensor  # the dense weight, as stored in the module
    hook: torch.utils.hooks.RemovableHandle | None = None


class TestTimePruner:
    """Applies per-prompt masks to a live model and restores the dense weights afterwards.

    The dense weights are copied once, at construction; each :meth:`masked` block writes the
    pruned weights into the model and puts the dense ones back on exit, even on error.
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, model: nn.Module, layout: ModelLayout, ratio: float, structured: bool = False) -> None:
        self.model, self.layout = model, layout
        self.ratio, self.structured = check_ratio(ratio), bool(structured)
        self._dense = {linear.name: linear.module.weight.detach().clone() for linear in layout.linears}

    @classmethod
    def from_recipe(cls, model: nn.Module, layout: ModelLayout, recipe: Recipe) -> TestTimePruner:
        """A pruner with a test-time recipe's ratio and structure, so the recipe alone says how
        its model runs; a static recipe has no per-prompt masks and is refused."""
        runtime = recipe.test_time
        if runtime is None or runtime.ratio is None:
            raise InputError("this recipe has static masks (no runtime.mode test-time); apply it instead")
        return cls(model, layout, runtime.ratio, runtime.structured)

    def context_norms(self, context_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-linear input-channel RMS of the dense model over the context tokens alone."""
        ids = context_ids if context_ids.dim() == 2 else context_ids[None, :]
        if ids.shape[-1] < 1:
            raise InputError("test-time pruning needs at least one context token")
        stats = collect_stats(self.model, self.layout, ids, batch_size=max(1, ids.shape[0]))
        return {name: value.act_norm for name, value in stats.items()}

    @contextmanager
    def masked(self, context_ids: torch.Tensor) -> Iterator[dict[str, torch.Tensor]]:
        """Inside the block the model runs with the masks made from ``context_ids``; yields the
        keep masks ([out, in] bool, or kept channel indices when structured) by linear name."""
        norms = self.context_norms(context_ids)
        saved: list[tuple[PrunableLinear, _Saved]] = []
        kept: dict[str, torch.Tensor] = {}
        try:
            for linear in self.layout.linears:
                saved.append((linear, _Saved(linear.module.weight.data)))
                kept[linear.name] = self._apply(linear, norms[linear.name], saved[-1][1])
            yield kept
        finally:
            for linear, entry in saved:
                linear.module.weight.data = entry.weight
                if entry.hook is not None:
                    entry.hook.remove()

    def _apply(self, linear: PrunableLinear, act_norm: torch.Tensor, saved: _Saved) -> torch.Tensor:
        dense = self._dense[linear.name]
        matrix = dense.t() if linear.transposed else dense
        if not self.structured:
            keep = row_keep(matrix, act_norm, self.ratio)
            pruned = matrix * keep.to(matrix.dtype)
            linear.module.weight.data = (pruned.t() if linear.transposed else pruned).contiguous()
            return keep
        channels = channel_keep(matrix, act_norm, self.ratio)
        if linear.transposed:  # Conv1D: zero the dropped input rows of its [in, out] weight
            zeroed = torch.zeros_like(dense)
            zeroed[channels] = dense[channels]
            linear.module.weight.data = zeroed
        else:  # nn.Linear: a smaller matrix, and the input gathered to the kept channels
            linear.module.weight.data = dense[:, channels].contiguous()
            saved.hook = linear.module.register_forward_pre_hook(_gather_inputs(channels))
        return channels


def _gather_inputs(channels: torch.Tensor):
    def hook(_module: nn.Module, args: tuple) -> tuple:
        return (args[0].index_select(-1, channels.to(args[0].device)), *args[1:])

    return hook


# ------------------------------------------------------------------------------------------------
# Perplexity with the context split off: the norms read the first part, the loss the rest


@dataclass(frozen=True)
class SplitPerplexity:
    """Perplexity over the scored part of every window (the tokens after its context)."""

    perplexity: float
    tokens: int  # tokens scored
    context: int  # tokens per window that only condition (never scored)


def context_length(seqlen: int, context_fraction: float) -> int:
    """Tokens of a window given as context: at least one, and at least one left to score."""
    if not 0.0 < context_fraction < 1.0:
        raise InputError(f"--context-fraction {context_fraction} must be in (0, 1), e.g. 0.5")
    return min(max(1, round(seqlen * context_fraction)), seqlen - 1)


@torch.inference_mode()
def _scored_nll(model: nn.Module, window: torch.Tensor, context: int) -> float:
    """Summed negative log-likelihood of ``window[context:]``, the model reading the whole window."""
    ids = window[None, :].to(next(model.parameters()).device)
    logits = model(ids).logits[0, context - 1 : -1].float()
    return float(torch.nn.functional.cross_entropy(logits, ids[0, context:], reduction="sum"))


def split_perplexity(model: nn.Module, windows: torch.Tensor, context_fraction: float = 0.5) -> SplitPerplexity:
    """Perplexity of a model as it is (dense or statically pruned) on the same tokens that
    :func:`test_time_perplexity` scores, so the three are compared on exactly the same text."""
    context = context_length(windows.shape[1], context_fraction)
    total = sum(_scored_nll(model, window, context) for window in windows)
    tokens = windows.shape[0] * (windows.shape[1] - context)
    return SplitPerplexity(math.exp(total / tokens), tokens, context)


def test_time_perplexity(pruner: TestTimePruner, windows: torch.Tensor, context_fraction: float = 0.5) -> SplitPerplexity:
    """Perplexity with masks made per window from its context part; the rest is scored."""
    context = context_length(windows.shape[1], context_fraction)
    total = 0.0
    for window in windows:
        with pruner.masked(window[:context]):
            total += _scored_nll(pruner.model, window, context)
    tokens = windows.shape[0] * (windows.shape[1] - context)
    return SplitPerplexity(math.exp(total / tokens), tokens, context)


test_time_perplexity.__test__ = False  # type: ignore[attr-defined]  # a function, not a pytest test
