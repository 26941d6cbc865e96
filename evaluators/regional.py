"""Wanda++'s regional optimisation, run on one decoder block during the pruner's walk.

The pruner calls :func:`regional_optimise` once a block's linears are pruned, with the block's
calibration inputs and its dense outputs on them (``walk_blocks(block_io=True)``). Each round
takes one RMSprop step per batch of calibration windows on the MSE between the block's outputs
and the dense ones (see :mod:`paretoprune.metrics.regional`), then re-prunes every pruned linear
with the scores the caller gives for the moved weights, at the budget and structure it had.

The steps run in fp32: a bf16 or fp16 block is cast up for them and back after, as the paper
does (its updates, about ``lr`` per weight, are far below a half-precision weight's resolution).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from paretoprune.evaluators.stats import BlockInput, BlockStep, trainable
from paretoprune.metrics.regional import RegionalSettings, output_error, round_batches, same_budget_mask
from paretoprune.models import PrunableLinear

__all__ = ["RescoreFn", "block_output_error", "regional_optimise"]

logger = logging.getLogger(__name__)

# The scores of one linear's current [out, in] weight (the rule that chose its first mask).
RescoreFn = Callable[[PrunableLinear, torch.Tensor], torch.Tensor]


def regional_optimise(
    step: BlockStep,
    masks: Mapping[str, torch.Tensor],
    rescore: RescoreFn,
    structure: tuple[int, int] | None,
    group: str = "row",
    settings: RegionalSettings = RegionalSettings(),
) -> dict[str, torch.Tensor]:
    """Run RO on the step's block in place and return each pruned linear's final keep mask.

    ``masks`` holds the keep mask [out, in] of every pruned linear of the block (a linear
    without one stays dense: it is optimised, never re-pruned).
    """
    if step.inputs is None or step.dense_outputs is None:
        raise ValueError("regional optimisation needs the block's inputs and dense outputs (walk_blocks(block_io=True))")
    inputs = [_trainable_input(item) for item in step.inputs]
    targets = [trainable(out).float() for out in step.dense_outputs]
    sizes = [item.hidden.shape[0] for item in inputs]
    current = dict(masks)
    with _in_fp32(step.block.module, inputs), _trained([linear.module.weight for linear in step.linears]) as weights:
        optimiser = torch.optim.RMSprop(weights, lr=settings.lr)
        for round_index in range(settings.rounds):
            chosen = round_batches(sizes, settings.samples, round_index, settings.seed)
            loss = sum(_step(step.block.module, inputs[i], targets[i], weights, optimiser) for i in chosen) / len(chosen)
            current = _reprune(step.linears, current, rescore, structure, group)
            logger.debug("block %d, round %d: output MSE %.4g before re-pruning", step.block.index, round_index, loss)
    return current


def block_output_error(block: nn.Module, inputs: list[BlockInput], dense_outputs: list[torch.Tensor]) -> float:
    """The mean squared error of the block's outputs against ``dense_outputs``, over all batches."""
    total, count = 0.0, 0
    with torch.inference_mode():
        for item, dense in zip(inputs, dense_outputs):
            out = _hidden(block(item.hidden, *item.args, **item.kwargs))
            total += float(output_error(out, dense)) * dense.numel()
            count += dense.numel()
    return total / max(count, 1)


def _step(block: nn.Module, item: BlockInput, target: torch.Tensor, weights: list[nn.Parameter],
          optimiser: torch.optim.Optimizer) -> float:  # fmt: skip
    """One RMSprop step on one batch; the loss before the step."""
    with torch.inference_mode(False), torch.enable_grad():
        loss = output_error(_hidden(block(item.hidden, *item.args, **item.kwargs)), target)
        grads = torch.autograd.grad(loss, weights)
    for weight, grad in zip(weights, grads):
        weight.grad = grad
    optimiser.step()
    optimiser.zero_grad(set_to_none=True)
    return float(loss.detach())


def _reprune(
    linears: list[PrunableLinear],
    masks: Mapping[str, torch.Tensor],
    rescore: RescoreFn,
    structure: tuple[int, int] | None,
    group: str,
) -> dict[str, torch.Tensor]:
    """Each pruned linear's moved weights re-scored and re-masked at its budget, in place."""
    updated = {}
    for linear in linears:
        if linear.name not in masks:
            continue
        matrix = linear.weight_matrix()
        keep = same_budget_mask(rescore(linear, matrix.float()), masks[linear.name], structure, group)
        matrix.mul_(keep.to(matrix.dtype))
        updated[linear.name] = keep
    return updated


def _hidden(out: torch.Tensor | tuple) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def _trainable_input(item: BlockInput) -> BlockInput:
    return BlockInput(hidden=trainable(item.hidden), args=trainable(item.args), kwargs=trainable(item.kwargs))


@contextmanager
def _trained(weights: list[nn.Parameter]) -> Iterator[list[nn.Parameter]]:
    """The weights with gradients switched on, their flags as they were after."""
    flags = [weight.requires_grad for weight in weights]
    try:
        for weight in weights:
            weight.requires_grad_(True)
        yield weights
    finally:
        for weight, flag in zip(weights, flags):
            weight.grad = None
            weight.requires_grad_(flag)


@contextmanager
def _in_fp32(block: nn.Module, inputs: list[BlockInput]) -> Iterator[None]:
    """The block and its (already copied) inputs in fp32 for the steps; the block's dtype after."""
    dtype = next(block.parameters()).dtype
    if dtype == torch.float32:
        yield
        return
    block.float()
    for index, item in enumerate(inputs):
        inputs[index] = BlockInput(hidden=_floats_to_fp32(item.hidden), args=_floats_to_fp32(item.args),
                                   kwargs=_floats_to_fp32(item.kwargs))  # fmt: skip
    try:
        yield
    finally:
        block.to(dtype)


def _floats_to_fp32(value):  # type: ignore[no-untyped-def]
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_floats_to_fp32(item) for item in value)
    if isinstance(value, dict):
        return {key: _floats_to_fp32(item) for key, item in value.items()}
    return value
