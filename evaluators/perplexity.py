"""Perplexity of a causal LM over token windows: the number pruning papers report.

The protocol is SparseGPT's and Wanda's: every window is scored on its own (no state carried
between windows), each of its positions 0..L-2 predicts the next token, so a window of ``L``
tokens contributes ``L - 1`` predicted tokens; perplexity is ``exp`` of the mean negative
log-likelihood over all predicted tokens. (SparseGPT multiplies each window's mean loss by ``L``
and divides by ``n * L``; with equal-length windows that is the same number.)

The log-softmax is taken in fp32 whatever the model's dtype, one window at a time, so a large
batch never holds more than one window's fp32 logits beside the model's own output.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from paretoprune.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["PerplexityResult", "perplexity"]


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity, the mean token NLL (nats) it is the exp of, and how much text was scored."""

    perplexity: float
    nll: float
    tokens: int
    windows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def perplexity(
    model: torch.nn.Module,
    windows: torch.Tensor,
    batch_size: int = 1,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> PerplexityResult:
    """Score ``windows`` (LongTensor[n, L], L >= 2) with ``model``, ``batch_size`` windows a pass.

    ``device`` is where the windows are sent; by default the device of the model's first
    parameter (the model itself is never moved). The model runs in eval mode under
    ``torch.inference_mode`` and gets its training flag back afterwards.
    """
    _check_inputs(windows, batch_size)
    target = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    try:
        total_nll = _total_nll(model, windows, batch_size, target, progress)
    finally:
        model.train(was_training)
    count, length = windows.shape
    tokens = count * (length - 1)
    mean_nll = total_nll / tokens
    return PerplexityResult(_safe_exp(mean_nll), mean_nll, tokens, count)


def _window_nll_sum(logits: torch.Tensor, window: torch.Tensor) -> float:
    """Summed next-token NLL of one window from its logits [L, V]: fp32 log-softmax over the
    first L-1 positions against tokens 1..L-1."""
    predictions = logits[:-1].float()
    targets = window[1:].to(predictions.device)
    return float(F.cross_entropy(predictions, targets, reduction="sum"))


def _total_nll(
    model: torch.nn.Module,
    windows: torch.Tensor,
    batch_size: int,
    device: torch.device,
    progress: bool,
) -> float:
    """Sum of the NLL over every predicted token, accumulated in Python floats (double)."""
    total = 0.0
    bar = tqdm(
        total=len(windows), desc="perplexity", unit="window", file=sys.stderr, disable=not progress
    )
    with bar, torch.inference_mode():
        for batch in _batches(windows, batch_size):
            batch = batch.to(device=device, dtype=torch.long)
            logits = model(input_ids=batch, use_cache=False).logits
            total += sum(_window_nll_sum(row, window) for row, window in zip(logits, batch))
            del logits
            bar.update(len(batch))
    return total


def _batches(windows: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(windows), batch_size):
        yield windows[start : start + batch_size]


def _model_device(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _safe_exp(value: float) -> float:
    """exp that says ``inf`` instead of raising for a model that is (nearly) broken."""
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf


def _check_inputs(windows: torch.Tensor, batch_size: int) -> None:
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2:
        raise InputError("perplexity needs windows as a 2-D token tensor [n, L]; cut them first")
    if windows.dtype not in (torch.int64, torch.int32):
        raise InputError(f"perplexity needs integer token ids, got {windows.dtype}")
    if windows.shape[0] < 1 or windows.shape[1] < 2:
        raise InputError(
            f"perplexity needs at least one window of at least 2 tokens, got {tuple(windows.shape)}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
