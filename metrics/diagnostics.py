"""Model-intrinsic diagnostics of a pruned model (after ACBench): the pure math, no model.

Each function takes the outputs of one run (or of a dense and a pruned run on the same tokens)
as tensors and returns a number per position or one number for the set:

- :func:`effective_rank`: how many directions a set of representations really spreads over.
  Diff-ERank is ``ERank(dense) - ERank(pruned)``: positive when pruning collapses the
  representations onto fewer directions.
- :func:`kendall_tau` and :func:`topk_kendall_tau`: whether the pruned model still orders the
  dense model's top-k next tokens the same way (1: same order, -1: reversed).
- :func:`energy`: ``-logsumexp(logits)`` per position, the energy score of the output; its shift
  from dense is ``mean(E_pruned) - mean(E_dense)``, and :func:`wasserstein_1d` is a distance
  between the two per-position distributions.
"""

from __future__ import annotations

import torch

__all__ = ["effective_rank", "energy", "kendall_tau", "topk_kendall_tau", "wasserstein_1d"]

# Positions per block of pairwise comparisons: a block holds [positions, k, k] signs, so even
# at k = 20 a block stays a few megabytes.
_TAU_CHUNK = 4096


# ----------------------------------------------------------------------------------------------
# Effective rank.


def effective_rank(representations: torch.Tensor) -> torch.Tensor:
    """ERank of n representations [n, d]: exp of the entropy of the normalised covariance spectrum.

    The rows are centred (the mean row subtracted) and scaled to unit length, so that only their
    directions count; the eigenvalues of ``R^T R / n`` are normalised to sum to 1 (``l_i``) and
    ``ERank = exp(-sum l_i log l_i)`` with ``0 log 0 = 0``. It lies between 1 (all rows on one
    line) and ``min(n - 1, d)``. A set without any spread (a single row, or identical rows) has no
    direction at all and gets ERank 0. Computed in float64; returns a 0-d float64 tensor.
    """
    spectrum = _covariance_spectrum(_unit_rows(representations.double()))
    total = spectrum.sum()
    if total <= 0:
        return torch.zeros((), dtype=torch.float64, device=representations.device)
    weights = spectrum / total
    # 0 log 0 = 0: the zero eigenvalues (centring removes a direction; n or d may be small) add nothing.
    entropy = -torch.special.xlogy(weights, weights).sum()
    return entropy.exp()


def _unit_rows(representations: torch.Tensor) -> torch.Tensor:
    centred = representations - representations.mean(dim=0, keepdim=True)
    norms = centred.norm(dim=1, keepdim=True)
    # A row equal to the mean has no direction: it stays zero instead of becoming 0/0.
    return centred / norms.clamp_min(torch.finfo(centred.dtype).tiny)


def _covariance_spectrum(rows: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of ``rows^T rows / n``, from whichever Gram side (n x n or d x d) is smaller."""
    n, d = rows.shape
    gram = rows @ rows.T if n <= d else rows.T @ rows
    # A symmetric positive semi-definite matrix, up to rounding: clip the tiny negatives.
    return torch.linalg.eigvalsh(gram / n).clamp_min(0.0)


# ----------------------------------------------------------------------------------------------
# Ranking agreement.


def kendall_tau(x: torch.Tensor, y: torch.Tensor, chunk: int = _TAU_CHUNK) -> torch.Tensor:
    """Kendall's tau-b between ``x`` and ``y`` along the last dimension, one value per row.

    ``x`` and ``y`` are [..., k]. Over all pairs i < j, with ``s = sign(x_i - x_j) * sign(y_i - y_j)``:
    ``tau_b = sum s / sqrt(pairs untied in x * pairs untied in y)``; without ties this is the
    plain tau-a, (concordant - discordant) / (k (k - 1) / 2). A row with every value tied in
    ``x`` or in ``y`` says nothing about order and gets 0. Rows are compared ``chunk`` at a time,
    each as a [chunk, k, k] block of pairwise signs. Returns float32 values in [-1, 1].
    """
    if x.shape != y.shape:
        raise ValueError(f"kendall_tau needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    k = x.shape[-1]
    rows_x, rows_y = x.reshape(-1, k), y.reshape(-1, k)
    taus = [_tau_b(part_x, part_y) for part_x, part_y in zip(rows_x.split(chunk), rows_y.split(chunk))]
    return torch.cat(taus).reshape(x.shape[:-1])


def _tau_b(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    sx, sy = _pair_signs(x), _pair_signs(y)
    # Each pair appears twice (i, j and j, i) in all three sums, which cancels in the ratio.
    agreement = (sx * sy).sum(dim=(-2, -1))
    untied = sx.abs().sum(dim=(-2, -1)) * sy.abs().sum(dim=(-2, -1))
    return torch.where(untied > 0, agreement / untied.clamp_min(1.0).sqrt(), 0.0)


def _pair_signs(values: torch.Tensor) -> torch.Tensor:
    """[rows, k] -> [rows, k, k] of sign(v_i - v_j), as float32 (exact sums even for bf16 inputs)."""
    return torch.sign(values.unsqueeze(-1) - values.unsqueeze(-2)).float()


def topk_kendall_tau(reference_logits: torch.Tensor, logits: torch.Tensor, k: int) -> torch.Tensor:
    """Per position, Kendall's tau-b of ``logits`` against ``reference_logits`` on the reference's top k.

    Both are [positions, vocabulary]. The k tokens are those with the largest reference logits
    (all of them if the vocabulary is smaller than k); tau compares how the two order them.
    """
    k = min(k, reference_logits.shape[-1])
    reference_top, ids = reference_logits.topk(k, dim=-1)
    return kendall_tau(reference_top, logits.gather(-1, ids))


# ----------------------------------------------------------------------------------------------
# Energy.


def energy(logits: torch.Tensor) -> torch.Tensor:
    """The energy ``-logsumexp(logits)`` of each position of [..., vocabulary] logits (temperature 1)."""
    return -torch.logsumexp(logits, dim=-1)


def wasserstein_1d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Wasserstein-1 distance between the empirical distributions of two 1-D samples.

    W1 is the area between the two quantile functions. Each is a step function that changes
    value only at multiples of 1/len, so on the common grid of multiples of
    ``1 / (len(a) len(b))`` both are constant between consecutive breakpoints and the integral
    is an exact sum; with equal sizes it is ``mean |sort(a) - sort(b)|``. Computed in float64.
    """
    if a.dim() != 1 or b.dim() != 1 or a.numel() == 0 or b.numel() == 0:
        raise ValueError("wasserstein_1d needs two non-empty 1-D samples")
    n, m = a.numel(), b.numel()
    # Breakpoints in units of 1 / (n m): a's quantile steps at multiples of m, b's at multiples of n.
    steps_a = torch.arange(1, n + 1, device=a.device) * m
    steps_b = torch.arange(1, m + 1, device=b.device) * n
    ends = torch.unique(torch.cat([steps_a, steps_b]))  # sorted; the last one is n m
    widths = torch.diff(ends, prepend=ends.new_zeros(1))
    # On the interval (end - width, end], the quantile of a is its ((end - 1) // m)-th smallest value.
    quantile_a = a.double().sort().values[(ends - 1) // m]
    quantile_b = b.double().sort().values[(ends - 1) // n]
    return ((quantile_a - quantile_b).abs() * widths).sum() / (n * m)
