"""Attribution-guided pruning: every weight scored by its LRP relevance (Hatefi et al., 2025).

Layer-wise Relevance Propagation hands an output's value back through the network with the
AttnLRP rules (:mod:`paretoprune.metrics.lrp`). A weight's relevance for one window is its share
of what the window's predictions receive: ``R_ij = sum_t W_ij x_tj R_ti / (z_ti + eps)`` over the
window's tokens t, under the epsilon rule of its linear ``z = W x``. The rules run as one modified
backward pass: hooks put each rule's gradient on the modules the model adapter names
(:func:`paretoprune.models.relevance_sites`), and then ``W * dF/dW`` is exactly that sum.

Choices (the paper leaves them to the application):

- **What is explained**: at every position, the logit of the true next token, all positions of a
  window at once. LRP is linear in the output relevance once the forward pass is fixed, so one
  backward of their sum gives the sum of the per-position explanations. The true token (rather
  than the predicted one) is what the language-modelling loss, and so perplexity, rewards.
- **Aggregation**: the score is the mean over windows of ``|R|``. The paper averages relevance
  over its reference samples and prunes the least relevant; with the epsilon rule relevance is
  signed, and a weight that pushes strongly against the prediction (large negative ``R``) changes
  the output as much when removed as one that pushes for it, so for compression its size is what
  counts. Taking ``|.|`` per window (not per mean) also keeps two windows' opposite contributions
  from cancelling, and gives the non-negative scores the masks expect.

The scores are cached under a key of the model, its weights, the windows and the settings, so a
second pruning at another sparsity reuses them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from paretoprune.global_scores import GlobalScoreInputs, cached_score_map
from paretoprune.metrics.lrp import (
    DEFAULT_EPSILON,
    EpsilonGrad,
    IdentityRule,
    constant_denominator,
    global_ranking_sparsities,
    scale_grad,
    weight_relevance,
)
from paretoprune.models import (
    ModelLayout,
    RelevanceSites,
    final_hidden_states,
    relevance_sites,
    target_logits,
)
from paretoprune.score_cache import read_score_map, score_map_path, write_score_map

__all__ = ["LrpSettings", "attnlrp", "lrp_cache_path", "lrp_scores", "lrp_sparsities", "relevance_scores"]

logger = logging.getLogger(__name__)

# Part of every cache key: bump it when the rules or the aggregation change the scores.
_CACHE_VERSION = 1

# The uniform rule's share for tensors behind one product (v; act(gate) * up) and two (q, k).
_ONE_PRODUCT, _TWO_PRODUCTS = 0.5, 0.25


@dataclass(frozen=True)
class LrpSettings:
    eps: float = DEFAULT_EPSILON  # the epsilon rule's stabiliser (and the identity rule's)


# --------------------------------------------------------------------------------------------
# The rules, installed as hooks for the length of a ``with`` block.


@contextmanager
def attnlrp(model: nn.Module, layout: ModelLayout, eps: float = DEFAULT_EPSILON) -> Iterator[RelevanceSites]:
    """Within the block, ``model``'s backward pass computes AttnLRP relevance (gradient x input).

    Forward values are unchanged, bit for bit; only the gradients are modified. The hooks are
    removed on the way out, even after an error.
    """
    sites = relevance_sites(model, layout)
    handles: list[torch.utils.hooks.RemovableHandle] = []
    for module in sites.linears:
        handles.append(module.register_forward_hook(lambda _m, _i, z: EpsilonGrad.apply(z, eps)))
    for module in sites.query_key:
        handles.append(module.register_forward_hook(lambda _m, _i, z: scale_grad(z, _TWO_PRODUCTS)))
    for module in sites.values:
        handles.append(module.register_forward_hook(lambda _m, _i, z: scale_grad(z, _ONE_PRODUCT)))
    for module in sites.gated:
        handles.append(module.register_forward_pre_hook(lambda _m, inputs: (scale_grad(inputs[0], _ONE_PRODUCT),)))
    for module in sites.activations:
        handles.append(module.register_forward_hook(lambda _m, inputs, y: IdentityRule.apply(inputs[0], y, eps)))
    for module, scale in sites.norms:
        handles.append(module.register_forward_hook(_norm_hook(scale)))
    try:
        yield sites
    finally:
        for handle in handles:
            handle.remove()


def _norm_hook(scale: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A forward hook that holds the normalisation's denominator constant in the backward."""

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], y: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        return constant_denominator(x, y, scale(x.detach()))

    return hook


# --------------------------------------------------------------------------------------------
# Relevance of every weight.


def relevance_scores(
    model: nn.Module,
    layout: ModelLayout,
    tokens: torch.Tensor,
    settings: LrpSettings = LrpSettings(),
    *,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Mean over the windows of ``|R|`` for every prunable weight: {name: [out, in] fp32, on the CPU}."""
    weights = [linear.module.weight for linear in layout.linears]
    totals = [torch.zeros(linear.out_features, linear.in_features) for linear in layout.linears]
    with _only_grad_for(model, weights), attnlrp(model, layout, settings.eps), torch.enable_grad():
        for window in tqdm(tokens, desc="LRP relevance", unit="window", disable=not progress):
            grads = _window_gradients(model, window, weights)
            for linear, total, weight, grad in zip(layout.linears, totals, weights, grads):
                relevance = weight_relevance(weight.detach().float(), grad.float()).abs().cpu()
                total += relevance.T if linear.transposed else relevance
    return {linear.name: total / len(tokens) for linear, total in zip(layout.linears, totals)}


def _window_gradients(model: nn.Module, window: torch.Tensor, weights: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The modified gradients of the window's summed next-token logits with respect to ``weights``."""
    ids = window[None].to(weights[0].device)
    hidden = final_hidden_states(model, ids)
    explained = target_logits(model, hidden[:, :-1], ids[:, 1:]).sum()
    return torch.autograd.grad(explained, weights)


@contextmanager
def _only_grad_for(model: nn.Module, weights: list[torch.Tensor]) -> Iterator[None]:
    """Gradients flow to ``weights`` only (and nothing is built for the other parameters)."""
    before = {parameter: parameter.requires_grad for parameter in model.parameters()}
    try:
        for parameter in before:
            parameter.requires_grad_(False)
        for weight in weights:
            weight.requires_grad_(True)
        yield
    finally:
        for parameter, flag in before.items():
            parameter.requires_grad_(flag)


# --------------------------------------------------------------------------------------------
# The global scoring rule, through the cache.


def lrp_scores(inputs: GlobalScoreInputs, settings: LrpSettings = LrpSettings()) -> dict[str, torch.Tensor]:
    """The ``lrp`` global scoring rule: mean ``|R|`` per weight over the calibration windows."""
    relevance_sites(inputs.model, inputs.layout)  # an unsupported family fails before any work
    path = lrp_cache_path(inputs, settings)
    cached = read_score_map(path, inputs.layout)
    if cached is not None:
        return cached
    started = time.perf_counter()
    scores = relevance_scores(inputs.model, inputs.layout, inputs.tokens, settings, progress=inputs.progress)
    logger.info("LRP relevance of %d windows took %.1f s", len(inputs.tokens), time.perf_counter() - started)
    if path is not None:
        write_score_map(path, scores, {"settings": json.dumps(asdict(settings))})
    return scores


def lrp_sparsities(
    model: nn.Module, layout: ModelLayout, tokens: torch.Tensor, target: float, *, progress: bool = True
) -> dict[str, float]:
    """``--allocation lrp``: each layer's sparsity from the global ranking of the LRP scores of
    all layers together (the paper's pruning), repaired to the exact target mean.

    The scores come from (and go to) the same cache as ``--method lrp``'s, so using both costs
    one relevance pass.
    """
    scores = cached_score_map("lrp", model, layout, tokens, progress=progress)
    sparsities = global_ranking_sparsities([scores[name] for name in layout.names], target)
    return {name: float(value) for name, value in zip(layout.names, sparsities)}


def lrp_cache_path(inputs: GlobalScoreInputs, settings: LrpSettings) -> Path | None:
    """Where the scores of this model, its weights, the windows and the settings are kept."""
    # Not the model's name: the weights are hashed, and --allocation lrp (which is not told the
    # name) then shares the scores of --method lrp.
    return score_map_path(inputs, "lrp", {"version": _CACHE_VERSION, "settings": asdict(settings)})
