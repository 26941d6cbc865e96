"""UniPruning's math: a stochastic RIA saliency and the mirror-descent step that follows it.

UniPruning (Tang et al., 2025) scores every weight once, after a short calibration, and then
cuts masks at any sparsity from those scores. Two quantities per weight matrix take part:

- a **saliency** ``S``: RIA's relative importance, with the row and column sums taken over
  random subsets of each row and column (so each step sees a slightly different view of the
  matrix), times the input channel's second moment ``E[x^2] ** 0.35``, divided by its mean so
  that every layer speaks on the same scale;
- a **dual variable** ``z`` and its sparse image ``Gamma``, updated once per calibration step::

      z     <- z + kappa * (S - Gamma)
      Gamma <- soft_threshold(z, quantile(|z|, lambda))

Because ``Gamma`` shrinks ``z`` towards zero, ``z`` behaves as a running average of the
saliency (plus a small constant), and ``Gamma`` zeroes the ``lambda`` fraction of weights whose
average saliency is smallest. Masks keep the largest ``|Gamma|``.

Everything here is a pure function of tensors: no model, no files. The orchestration (the
calibration fine-tune, the activation hooks, the cache) is in :mod:`paretoprune.unipruning`.
"""

from __future__ import annotations

import math

import torch

from paretoprune.errors import InputError

__all__ = [
    "mirror_descent_step",
    "quantile",
    "random_subset_mask",
    "soft_threshold",
    "stochastic_ria",
    "subset_size",
]

# Smallest denominator of the subset sums: a subset of zero weights gives 0 / tiny = 0, not NaN.
_TINY = torch.finfo(torch.float32).tiny


def subset_size(shape: tuple[int, int], fraction: float) -> int:
    """How many entries each random subset holds: ``fraction`` of the matrix's shorter side.

    The authors draw row and column subsets of the same size, so that the row term and the
    column term of the relative importance are sums of equally many weights and weigh alike.
    """
    if not 0.0 < fraction <= 1.0:
        raise InputError(f"the subset fraction must lie in (0, 1], got {fraction}")
    return max(1, int(fraction * min(shape)))


def random_subset_mask(
    shape: tuple[int, int], size: int, dim: int, generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:  # fmt: skip
    """A bool mask with exactly ``size`` True entries, drawn uniformly, in every slice along ``dim``.

    ``dim=1``: each row holds ``size`` chosen columns; ``dim=0``: each column ``size`` chosen rows.
    """
    length = shape[dim]
    if not 0 < size <= length:
        raise InputError(f"a subset of {size} cannot be drawn from {length} entries")
    keys = torch.rand(shape, generator=generator, device=device)
    chosen = keys.topk(size, dim=dim, sorted=False).indices
    return torch.zeros(shape, dtype=torch.bool, device=device).scatter_(dim, chosen, True)


def stochastic_ria(
    weight: torch.Tensor,
    act_second_moment: torch.Tensor,
    *,
    fraction: float = 0.2,
    power: float = 0.35,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """UniPruning's saliency of a weight [out, in] with its inputs' ``E[x^2]`` [in], fp32.

    ``S = (|W| / colsum_sub + |W| / rowsum_sub) * E[x^2] ** power / mean(...)``, where each
    row sum runs over a random ``fraction`` of the row and each column sum over a random subset
    of the column, both of :func:`subset_size` entries. The result is non-negative with mean 1
    (all zeros for an all-zero product).
    """
    if weight.dim() != 2:
        raise InputError(f"a weight matrix must be 2-D [out, in], got shape {tuple(weight.shape)}")
    if act_second_moment.shape != (weight.shape[1],):
        raise InputError(f"E[x^2] has shape {tuple(act_second_moment.shape)}, the weight needs [{weight.shape[1]}]")
    magnitude = weight.detach().float().abs()
    shape = (magnitude.shape[0], magnitude.shape[1])
    size = subset_size(shape, fraction)
    row_mask = random_subset_mask(shape, size, dim=1, generator=generator, device=magnitude.device)
    col_mask = random_subset_mask(shape, size, dim=0, generator=generator, device=magnitude.device)
    row_sums = (magnitude * row_mask).sum(dim=1, keepdim=True).clamp_min_(_TINY)
    col_sums = (magnitude * col_mask).sum(dim=0, keepdim=True).clamp_min_(_TINY)
    relative = magnitude / col_sums + magnitude / row_sums
    scale = act_second_moment.detach().float().to(magnitude.device).clamp_min(0.0).pow(power)
    saliency = relative.mul_(scale[None, :])
    mean = float(saliency.mean())
    return saliency.div_(mean) if math.isfinite(mean) and mean > 0 else saliency


def soft_threshold(values: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """``sign(v) * max(|v| - threshold, 0)``: the proximal map of ``threshold * ||v||_1``."""
    return torch.sign(values) * (values.abs() - threshold).clamp_min(0.0)


def quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q``-quantile of all entries, interpolated linearly as ``torch.quantile`` does.

    ``torch.quantile`` refuses inputs of more than 2**24 entries, which a 7B model's MLP
    matrices exceed; two order statistics by selection have no such limit.
    """
    if not 0.0 <= q <= 1.0:
        raise InputError(f"a quantile must lie in [0, 1], got {q}")
    flat = values.detach().reshape(-1).float()
    if flat.numel() == 0:
        raise InputError("the quantile of an empty tensor is undefined")
    position = q * (flat.numel() - 1)
    lower, upper = math.floor(position), math.ceil(position)
    low = torch.kthvalue(flat, lower + 1).values
    if upper == lower:
        return low
    high = torch.kthvalue(flat, upper + 1).values
    return low + (high - low) * (position - lower)


def mirror_descent_step(
    z: torch.Tensor, gamma: torch.Tensor, saliency: torch.Tensor, *, kappa: float = 0.01, lam: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the global controller: the new ``(z, Gamma)`` (new tensors; inputs untouched).

    ``z + kappa * (S - Gamma)``, then ``Gamma = soft_threshold(z, quantile(|z|, lam))``:
    the ``lam`` fraction of entries with the smallest ``|z|`` become exact zeros.
    """
    if not (z.shape == gamma.shape == saliency.shape):
        raise InputError(f"z, Gamma and S must share one shape, got {tuple(z.shape)}, "
                         f"{tuple(gamma.shape)} and {tuple(saliency.shape)}")  # fmt: skip
    if kappa <= 0:
        raise InputError(f"kappa must be positive, got {kappa}")
    moved = z + kappa * (saliency.float() - gamma)
    return moved, soft_threshold(moved, quantile(moved.abs(), lam))
