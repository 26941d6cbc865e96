"""Regional gradients (Wanda++, Yang et al. 2025): the per-weight statistic of its RGS score.

For one decoder block ``f`` and one calibration sample ``x`` (a window of tokens) the regional
loss is the norm of the block's output, ``L(x) = ||f(x)||_2`` over all its tokens and features.
It is backpropagated through that block only, never through the rest of the model. Wanda++ scores
each weight with the root mean square of ``dL/dW`` over the samples::

    G = sqrt(1/N sum_n (dL(x_n)/dW)^2)

A linear ``y_t = W x_t`` inside the block gets, for sample ``n``, ``dL/dW = sum_t dy_t x_t^T``
with ``dy_t = dL/dy_t``: a product of the linear's output gradient and its input over the sample's
tokens. Samples do not mix inside a block (attention runs within each sequence), so one backward
pass of the sum of the samples' losses gives every sample's own ``dy``, and the per-sample weight
gradients follow from one matrix product each, without a backward pass per sample.

These are the pure steps; :mod:`paretoprune.evaluators.stats` runs the block and accumulates.
"""

from __future__ import annotations

import math

import torch

__all__ = ["regional_loss", "regional_grad", "squared_sample_gradients"]


def regional_loss(outputs: torch.Tensor) -> torch.Tensor:
    """The sum over samples of ``||f(x_n)||_2``: outputs [samples, tokens, hidden] -> scalar.

    Its gradient with respect to sample n's activations is that of ``L(x_n)`` alone. The norms
    are taken in fp32 whatever the block's dtype.
    """
    return outputs.float().flatten(1).norm(dim=1).sum()


def squared_sample_gradients(inputs: torch.Tensor, output_grads: torch.Tensor) -> torch.Tensor:
    """``sum_n (dL(x_n)/dW)^2`` [out, in] for a linear, in fp32.

    ``inputs`` [samples, tokens, in] are its inputs and ``output_grads`` [samples, tokens, out]
    the gradients of the loss at its outputs. One sample at a time, so only one [out, in]
    gradient exists beside the sum.
    """
    if inputs.dim() != 3 or output_grads.dim() != 3 or inputs.shape[:2] != output_grads.shape[:2]:
        raise ValueError(f"inputs {tuple(inputs.shape)} and output gradients {tuple(output_grads.shape)} "
                         "must be [samples, tokens, features] over the same samples and tokens")  # fmt: skip
    total = torch.zeros(output_grads.shape[-1], inputs.shape[-1], dtype=torch.float32, device=inputs.device)
    for x, dy in zip(inputs.float(), output_grads.float()):
        total.add_((dy.t() @ x).square_())
    return total


def regional_grad(squared_sum: torch.Tensor, samples: int, tokens: int) -> torch.Tensor:
    """The RGS gradient statistic on the footing of the per-token activation RMS.

    ``sqrt(squared_sum / samples)`` is Wanda++'s G. It is divided by ``sqrt(tokens / samples)``
    (tokens per sample): Wanda++ adds G to Wanda's per-sample input norm ``||X_j||``, which is
    that factor times the per-token RMS the scores use, so the sum keeps its balance.
    """
    if samples <= 0 or tokens <= 0:
        raise ValueError("regional gradients need at least one sample of at least one token")
    return (squared_sum / samples).sqrt() / math.sqrt(tokens / samples)
