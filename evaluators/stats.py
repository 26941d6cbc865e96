"""Activation statistics of the prunable linears, gathered block by block.

Pruning scores need, for every linear, a summary of its inputs on calibration text: the
per-channel squared norm (Wanda, RIA, OWL) and, for SparseGPT, the Gram matrix X^T X.

We walk the decoder blocks one at a time, as SparseGPT and Wanda do: the inputs of block 0 are
captured once, then each block is run on its inputs with hooks on its linears, and its outputs
become the next block's inputs. Only one block's activations are ever held, so memory stays
bounded by ``nsamples x seqlen x hidden`` whatever the depth of the model.

The walk yields after gathering each block's statistics, so a caller may prune the block in
place before the walk moves on. Whether the next block then sees the pruned or the dense
outputs is the difference between sequential and one-shot pruning.

On request (``gradients=True``) the walk also gathers Wanda++'s regional gradients: each block's
output norm per sample, backpropagated through that block alone (see
:mod:`paretoprune.metrics.gradients`), summed as squares per weight. It costs a backward pass
through each block and an [out, in] sum per linear, so walks that do not ask pay nothing.

Whatever dtype the model runs in, the sums are kept in fp64 (squared norms) and fp32 (the Gram
matrix), on the device of each linear: a bf16 model gives the statistics of its bf16
activations without rounding them further, and a GPU never copies its activations out.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from paretoprune.metrics.gradients import regional_grad, regional_loss, squared_sample_gradients
from paretoprune.metrics.sparsegpt import fp32_matmuls
from paretoprune.models import DecoderBlock, ModelLayout, PrunableLinear

__all__ = ["BlockInput", "BlockStep", "ChannelStats", "collect_stats", "on_device", "walk_blocks"]


@dataclass
class ChannelStats:
    """What one linear saw of the calibration text."""

    sq_sum: torch.Tensor  # [in] float64: sum over tokens of x_j^2
    count: int = 0  # tokens seen
    gram: torch.Tensor | None = None  # [in, in] float32: sum over tokens of x x^T (SparseGPT)
    # The input at each sequence's last position, kept when asked (TRIM judges rows on them).
    last_inputs: list[torch.Tensor] | None = None
    # Regional gradients, kept when asked: sum over samples of (dL/dW)^2 [out, in] float32, and
    # the samples and tokens it summed over.
    grad_sq_sum: torch.Tensor | None = None
    grad_samples: int = 0
    grad_tokens: int = 0

    @property
    def act_norm(self) -> torch.Tensor:
        """Per-channel RMS of the inputs, sqrt(mean_t x_tj^2), as float32."""
        return (self.sq_sum / max(self.count, 1)).sqrt().float()

    @property
    def has_gradients(self) -> bool:
        return self.grad_sq_sum is not None and self.grad_samples > 0

    @property
    def grad_rms(self) -> torch.Tensor:
        """Wanda++'s G: the RMS over calibration samples of dL/dW, [out, in] float32."""
        return (self._gradient_sums() / self.grad_samples).sqrt()

    @property
    def regional_grad(self) -> torch.Tensor:
        """G on act_norm's per-token footing, as the scores read it (see metrics.gradients)."""
        return regional_grad(self._gradient_sums(), self.grad_samples, self.grad_tokens)

    def _gradient_sums(self) -> torch.Tensor:
        if self.grad_sq_sum is None or self.grad_samples == 0:
            raise RuntimeError("statistics were gathered without regional gradients (gradients=False)")
        return self.grad_sq_sum

    def add_gradients(self, inputs: torch.Tensor, output_grads: torch.Tensor) -> None:
        """Add the samples of one batch: the linear's inputs and its output gradients, both
        [samples, tokens, features]."""
        sums = squared_sample_gradients(inputs, output_grads)
        self.grad_sq_sum = sums if self.grad_sq_sum is None else self.grad_sq_sum.add_(sums.to(self.grad_sq_sum.device))
        self.grad_samples += inputs.shape[0]
        self.grad_tokens += inputs.shape[0] * inputs.shape[1]

    def hessian(self) -> torch.Tensor:
        """SparseGPT's layer Hessian 2/n X^T X (needs ``gram``)."""
        if self.gram is None:
            raise RuntimeError("statistics were gathered without the Gram matrix (hessian=False)")
        return self.gram * (2.0 / max(self.count, 1))

    def add(self, inputs: torch.Tensor) -> None:
        # fp32 rows: the square of a bf16 or fp16 value is exact in fp32, and the sums over
        # thousands of tokens are accumulated in fp64 (norms) and fp32 (Gram), never in the
        # model's dtype.
        rows = inputs.reshape(-1, inputs.shape[-1]).to(self.sq_sum.device, torch.float32)
        self.sq_sum += rows.square().sum(dim=0, dtype=torch.float64)
        self.count += rows.shape[0]
        if self.gram is not None:
            with fp32_matmuls():  # SparseGPT's Hessian: never TF32
                self.gram.addmm_(rows.t(), rows)
        if self.last_inputs is not None and inputs.dim() == 3:
            self.last_inputs.append(inputs[:, -1, :].to(self.sq_sum.device, torch.float32))

    def to(self, device: torch.device) -> ChannelStats:
        """The same statistics with every tensor on ``device``."""
        return ChannelStats(
            sq_sum=self.sq_sum.to(device), count=self.count, gram=None if self.gram is None else self.gram.to(device),
            last_inputs=None if self.last_inputs is None else [inputs.to(device) for inputs in self.last_inputs],
            grad_sq_sum=None if self.grad_sq_sum is None else self.grad_sq_sum.to(device),
            grad_samples=self.grad_samples, grad_tokens=self.grad_tokens,
        )  # fmt: skip

    def last_token_inputs(self) -> torch.Tensor:
        """[sequences, in]: the input each calibration sequence gave at its last position."""
        if not self.last_inputs:
            raise RuntimeError("statistics were gathered without last-token inputs (last_tokens=False)")
        return torch.cat(self.last_inputs)


@dataclass
class BlockStep:
    """One decoder block, with the statistics of its linears on its current inputs.

    With ``block_io`` the step also holds those inputs and the dense block's outputs on them:
    what a block-level solver (Wanda++'s regional optimisation) fits the pruned block to.
    """

    block: DecoderBlock
    linears: list[PrunableLinear]
    stats: dict[str, ChannelStats] = field(default_factory=dict)
    inputs: list["BlockInput"] | None = None
    dense_outputs: list[torch.Tensor] | None = None


class _StopForward(Exception):
    """Raised by the capture hook once block 0's inputs are known."""


@dataclass
class BlockInput:
    """What a block is called with for one batch of calibration windows."""

    hidden: torch.Tensor
    args: tuple[Any, ...]  # the other positional arguments of the block call
    kwargs: dict[str, Any]  # attention mask, position embeddings, ...


def walk_blocks(
    model: nn.Module,
    layout: ModelLayout,
    tokens: torch.Tensor,
    *,
    batch_size: int = 8,
    hessian: bool = False,
    propagate: str = "pruned",
    last_tokens: bool = False,
    gradients: bool = False,
    block_io: bool = False,
    compute_device: torch.device | None = None,
) -> Iterator[BlockStep]:
    """Yield each block with its linears' statistics; the caller may prune it in place.

    ``propagate="pruned"`` (sequential): the next block's inputs are computed after the caller
    had its turn, through the pruned block. ``propagate="dense"`` (one-shot): they are computed
    before, so every block is calibrated as in the dense model. ``last_tokens`` also keeps each
    linear's input at every sequence's last position; ``gradients`` gathers the regional
    gradients; ``block_io`` hands the caller the block's inputs and dense outputs.

    ``compute_device`` runs the blocks somewhere other than where the model lives (a copy kept
    on the CPU, its statistics computed on a GPU): each block moves there for its turn, with the
    blocks' inputs, and back once the walk has passed it; its statistics are left there.
    """
    if propagate not in ("pruned", "dense"):
        raise ValueError(f"propagate must be 'pruned' or 'dense', not {propagate!r}")
    device = next(model.parameters()).device
    inputs = _capture_block_inputs(model, layout, tokens.to(device), batch_size)
    if compute_device is not None:
        inputs = [BlockInput(*on_device((item.hidden, item.args, item.kwargs), compute_device)) for item in inputs]
    for block in layout.blocks:
        home = next(block.module.parameters()).device  # a model spread over GPUs keeps each block's own
        if compute_device is not None:
            block.module.to(compute_device)
        try:
            step = BlockStep(block=block, linears=layout.linears_of_block(block.index))
            step.stats = _block_stats(block, step.linears, inputs, hessian, last_tokens)
            if gradients:
                _add_regional_gradients(block, step.linears, inputs, step.stats)
            dense = _run_block(block, inputs) if (propagate == "dense" or block_io) else None
            if block_io:
                assert dense is not None
                step.inputs, step.dense_outputs = inputs, [item.hidden for item in dense]
            if propagate == "dense":
                assert dense is not None
                inputs = dense
            yield step
            if propagate == "pruned":
                inputs = _run_block(block, inputs)
        finally:
            if compute_device is not None:
                block.module.to(home)


def collect_stats(
    model: nn.Module,
    layout: ModelLayout,
    tokens: torch.Tensor,
    *,
    batch_size: int = 8,
    hessian: bool = False,
    last_tokens: bool = False,
    gradients: bool = False,
    compute_device: torch.device | None = None,
) -> dict[str, ChannelStats]:
    """Statistics of every prunable linear on the dense model (one pass, nothing pruned);
    ``last_tokens`` and ``gradients`` gather what TRIM and Wanda++'s term read, as in
    :func:`walk_blocks`. With ``compute_device`` the blocks run there, and the statistics come
    back to the model's device."""
    stats: dict[str, ChannelStats] = {}
    home = next(model.parameters()).device
    for step in walk_blocks(
        model, layout, tokens, batch_size=batch_size, hessian=hessian, propagate="dense",
        last_tokens=last_tokens, gradients=gradients, compute_device=compute_device,
    ):  # fmt: skip
        moved = compute_device is not None
        stats.update({name: stat.to(home) for name, stat in step.stats.items()} if moved else step.stats)
    return stats


def _capture_block_inputs(
    model: nn.Module, layout: ModelLayout, tokens: torch.Tensor, batch_size: int
) -> list[BlockInput]:
    """Run the model up to block 0, batch by batch, and keep what block 0 was called with."""
    captured: list[BlockInput] = []

    def capture(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden, rest = (args[0], args[1:]) if args else (kwargs.pop("hidden_states"), ())
        captured.append(BlockInput(hidden=hidden, args=rest, kwargs=kwargs))
        raise _StopForward

    first = layout.blocks[0].module
    handle = first.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.inference_mode():
            for batch in tokens.split(batch_size):
                try:
                    model(input_ids=batch, use_cache=False)
                except _StopForward:
                    pass
    finally:
        handle.remove()
    return captured


def _block_stats(
    block: DecoderBlock,
    linears: list[PrunableLinear],
    inputs: list[BlockInput],
    hessian: bool,
    last_tokens: bool = False,
) -> dict[str, ChannelStats]:
    stats = {linear.name: _empty_stats(linear, hessian, last_tokens) for linear in linears}
    with _recording(linears, stats), torch.inference_mode():
        for item in inputs:
            block.module(item.hidden, *item.args, **item.kwargs)
    return stats


def _add_regional_gradients(
    block: DecoderBlock,
    linears: list[PrunableLinear],
    inputs: list[BlockInput],
    stats: dict[str, ChannelStats],
) -> None:
    """Backpropagate each sample's block output norm through this block alone, batch by batch,
    and add each linear's per-sample squared weight gradients to its statistics."""
    for item in inputs:
        seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        with torch.inference_mode(False), torch.enable_grad(), _capturing(linears, seen):
            hidden = item.hidden.clone().requires_grad_(True)  # a leaf the graph starts from
            out = block.module(hidden, *trainable(item.args), **trainable(item.kwargs))
            out = out[0] if isinstance(out, tuple) else out
            names = [linear.name for linear in linears if linear.name in seen]
            grads = torch.autograd.grad(regional_loss(out), [seen[name][1] for name in names])
        samples = item.hidden.shape[0]  # some families (OPT) flatten the tokens inside a block
        for name, grad in zip(names, grads):
            x = seen[name][0]
            stats[name].add_gradients(x.reshape(samples, -1, x.shape[-1]), grad.detach().reshape(samples, -1, grad.shape[-1]))


def trainable(value: Any) -> Any:
    """``value`` with every tensor in it cloned outside inference mode, so autograd may save it
    (tensors made under ``torch.inference_mode`` cannot be saved for backward)."""
    if isinstance(value, torch.Tensor):
        with torch.inference_mode(False):
            return value.clone()
    if isinstance(value, tuple):
        return tuple(trainable(item) for item in value)
    if isinstance(value, list):
        return [trainable(item) for item in value]
    if isinstance(value, dict):
        return {key: trainable(item) for key, item in value.items()}
    return value


def on_device(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor in it (inside tuples, lists and dicts) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(on_device(item, device) for item in value)
    if isinstance(value, list):
        return [on_device(item, device) for item in value]
    if isinstance(value, dict):
        return {key: on_device(item, device) for key, item in value.items()}
    return value


@contextmanager
def _capturing(linears: list[PrunableLinear], seen: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
    """Record each linear's (input, output) of the forward pass, the output still in the graph."""

    def hook_for(name: str):
        def record(_module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            seen[name] = (args[0].detach(), output)

        return record

    handles = [linear.module.register_forward_hook(hook_for(linear.name)) for linear in linears]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _empty_stats(linear: PrunableLinear, hessian: bool, last_tokens: bool) -> ChannelStats:
    """Zero sums on the linear's own device, where its inputs arrive."""
    device, size = linear.module.weight.device, linear.in_features
    return ChannelStats(
        sq_sum=torch.zeros(size, dtype=torch.float64, device=device),
        gram=torch.zeros(size, size, dtype=torch.float32, device=device) if hessian else None,
        last_inputs=[] if last_tokens else None,
    )


@contextmanager
def _recording(linears: list[PrunableLinear], stats: dict[str, ChannelStats]) -> Iterator[None]:
    def hook_for(name: str):
        def record(_module: nn.Module, args: tuple) -> None:
            stats[name].add(args[0].detach())

        return record

    handles = [linear.module.register_forward_pre_hook(hook_for(linear.name)) for linear in linears]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _run_block(block: DecoderBlock, inputs: list[BlockInput]) -> list[BlockInput]:
    outputs = []
    with torch.inference_mode():
        for item in inputs:
            out = block.module(item.hidden, *item.args, **item.kwargs)
            hidden = out[0] if isinstance(out, tuple) else out
            outputs.append(BlockInput(hidden=hidden, args=item.args, kwargs=item.kwargs))
    return outputs
