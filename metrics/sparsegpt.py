"""SparseGPT (Frantar & Alistarh 2023): prune a linear and reconstruct what remains.

For a layer ``y = W x`` and calibration inputs with Hessian ``H = X^T X`` (any positive multiple
works), pruning weight ``w_q`` of a row costs ``w_q^2 / [H^-1]_qq`` in output error, and the
optimal brain surgeon update of that row's remaining weights is ``-w_q / [H^-1]_qq * H^-1[q, :]``.
SparseGPT makes this cheap by pruning columns left to right: after column ``q`` only the columns
to its right are updated, and row ``q`` of the upper Cholesky factor ``U`` of ``H^-1``, times
``U_qq``, is row ``q`` of the inverse Hessian of that shrinking problem, so one factorisation
serves every step. Updates inside a block of columns are applied eagerly, to the rest of the
matrix once per block (lazy batching).

It is greedy: a column already swept is never revisited, so on a fixed mask it lands a little
above the least-squares optimum on weakly correlated inputs, and well above it where inputs are
nearly low-rank (the last columns then have few successors to absorb their error).

Masks are chosen adaptively as the sweep goes: for unstructured sparsity, at the start of each
block the lowest ``w^2 / [H^-1]_qq^2`` of that block across all rows are pruned; for N:M, at the
start of each group of M columns the lowest M - N of each row's group. The unstructured count is
spread over the blocks so that the layer loses exactly ``round(sparsity * out * in)`` weights.

``sparsegpt_update`` runs the same sweep on a mask chosen beforehand (by Wanda, RIA or a searched
rule): it only reconstructs, so any scoring rule's masks get SparseGPT's weight update.

Inputs never seen in calibration (zero Hessian diagonal) carry no signal: their weights are
zeroed and their Hessian entry set to 1 so the factorisation stays defined.

The solve is fp32 whatever dtype the model runs in: the weight and the Hessian are converted,
and matrix products run at full fp32 precision even where the process allows TF32 (10 bits of
mantissa, too few for the error propagation of thousands of columns). The caller writes the
result back in the model's dtype.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from paretoprune.errors import InputError
from paretoprune.metrics.masks import (
    check_sparsity,
    check_structure_fits,
    keep_mask_from_nm_ranks,
    keep_mask_without_lowest,
    nm_ranks,
)

__all__ = ["check_weight_and_hessian", "fp32_matmuls", "sparsegpt_prune", "sparsegpt_update"]

# Damping is multiplied by this factor and retried when the damped Hessian is still not
# positive definite (numerically rank-deficient calibration data).
_DAMP_GROWTH = 10.0
_DAMP_RETRIES = 4


def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    structure: tuple[int, int] | None = None,
    blocksize: int = 128,
    damp: float = 0.01,
) -> torch.Tensor:
    """The pruned and reconstructed weight [out, in] as a new fp32 tensor.

    ``hessian`` is ``X^T X`` (or a positive multiple) over the layer's calibration inputs,
    [in, in]; it is not modified. With an N:M ``structure`` the pattern fixes the sparsity and
    ``sparsity`` is only checked. ``damp`` adds ``damp * mean(diag H)`` to the diagonal.
    """
    sparsity = check_sparsity(sparsity)
    _check_arguments(weight, hessian, structure, blocksize, damp)
    result = weight.detach().float().clone()
    total = round(sparsity * result.numel())
    if structure is None and total == 0:
        return result
    with fp32_matmuls():
        inverse_factor = _prepare_sweep(result, hessian, damp)
        step = _aligned_blocksize(blocksize, structure)
        for start in range(0, result.shape[1], step):
            end = min(start + step, result.shape[1])
            pruned_here = _block_budget(sparsity, result.shape[0], start, end)
            _prune_block(result, inverse_factor, start, end, structure, pruned_here)
    return result


def sparsegpt_update(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    keep: torch.Tensor,
    blocksize: int = 128,
    damp: float = 0.01,
) -> torch.Tensor:
    """The weight [out, in] pruned to the given ``keep`` mask, its survivors updated to
    reconstruct the layer's output, as a new fp32 tensor.

    The same sweep as ``sparsegpt_prune``, with the weights to drop fixed: exactly the ``False``
    entries of ``keep`` become zero (and the weights of inputs never seen in calibration, as
    there). ``hessian`` and ``damp`` mean what they mean there.
    """
    _check_arguments(weight, hessian, None, blocksize, damp)
    if keep.shape != weight.shape or keep.dtype != torch.bool:
        raise InputError(f"the keep mask must be a bool tensor of the weight's shape {tuple(weight.shape)}")
    result = weight.detach().float().clone()
    dropped = ~keep.to(result.device)
    if not bool(dropped.any()):
        return result
    with fp32_matmuls():
        inverse_factor = _prepare_sweep(result, hessian, damp)
        for start in range(0, result.shape[1], blocksize):
            end = min(start + blocksize, result.shape[1])
            _prune_block(result, inverse_factor, start, end, None, 0, fixed=dropped[:, start:end])
    return result


@contextmanager
def fp32_matmuls() -> Iterator[None]:
    """fp32 matrix products at full precision inside the block, as the process had them after.

    A process may allow TF32 for speed (``torch.set_float32_matmul_precision("high")``); the
    solve and the Gram matrices it reads must not be rounded so.
    """
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def check_weight_and_hessian(weight: torch.Tensor, hessian: torch.Tensor) -> None:
    """One linear's problem is well formed: a 2-D weight [out, in] and an [in, in] Hessian."""
    if weight.dim() != 2:
        raise InputError(f"a weight matrix must be 2-D [out, in], got shape {tuple(weight.shape)}")
    columns = weight.shape[1]
    if tuple(hessian.shape) != (columns, columns):
        shape = tuple(hessian.shape)
        raise InputError(f"the Hessian must be [{columns}, {columns}] for this weight, not {shape}")


def _check_arguments(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    structure: tuple[int, int] | None,
    blocksize: int,
    damp: float,
) -> None:
    check_weight_and_hessian(weight, hessian)
    columns = weight.shape[1]
    if structure is not None and not 0 < structure[0] < structure[1]:
        raise InputError(f"structure {structure} needs 0 < N < M (N kept of every M weights)")
    check_structure_fits(columns, structure, "the layer given to SparseGPT")
    if blocksize < 1:
        raise InputError(f"blocksize must be >= 1, got {blocksize}")
    if not damp > 0:
        raise InputError(f"damp must be > 0, got {damp}")


def _prepare_sweep(result: torch.Tensor, hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """Zero the weights of never-active inputs in ``result``; the inverse Hessian's factor."""
    hessian, dead = _without_dead_inputs(hessian, result.device)
    result[:, dead] = 0.0
    return _inverse_hessian_factor(hessian, damp)


def _without_dead_inputs(hessian: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """An fp32 copy on ``device`` with the diagonal of never-active inputs set to 1, and their mask."""
    hessian = hessian.detach().to(device=device, dtype=torch.float32, copy=True)
    dead = torch.diagonal(hessian) == 0
    hessian[dead, dead] = 1.0
    return hessian, dead


def _inverse_hessian_factor(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1, growing damp if needed."""
    diagonal = torch.arange(hessian.shape[0], device=hessian.device)
    scale = float(torch.diagonal(hessian).mean())
    for attempt in range(_DAMP_RETRIES + 1):
        damped = hessian.clone()
        damped[diagonal, diagonal] += damp * _DAMP_GROWTH**attempt * scale
        factor, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(factor)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0:
                return upper
    raise InputError(
        "the calibration Hessian is not positive definite even with heavy damping; "
        "use more calibration samples or a larger damp"
    )


def _aligned_blocksize(blocksize: int, structure: tuple[int, int] | None) -> int:
    """The block size, rounded down to a multiple of M so no N:M group straddles two blocks."""
    if structure is None:
        return blocksize
    m = structure[1]
    return max(m, blocksize // m * m)


def _block_budget(sparsity: float, rows: int, start: int, end: int) -> int:
    """Weights to prune in columns [start, end): the cumulative counts telescope to the exact total."""
    return round(sparsity * rows * end) - round(sparsity * rows * start)


def _prune_block(
    weight: torch.Tensor,
    inverse_factor: torch.Tensor,
    start: int,
    end: int,
    structure: tuple[int, int] | None,
    pruned_here: int,
    fixed: torch.Tensor | None = None,
) -> None:
    """Prune columns [start, end) of ``weight`` in place and push their error to the right.

    The weights to drop are chosen here from the current weights, unless ``fixed`` gives them.
    """
    block = weight[:, start:end].clone()
    factor = inverse_factor[start:end, start:end]
    pivots = torch.diagonal(factor)
    errors = torch.zeros_like(block)
    pruned = fixed
    if pruned is None and structure is None:
        pruned = _unstructured_block_mask(block, pivots, pruned_here)
    for column in range(end - start):
        if structure is not None and column % structure[1] == 0:
            pruned = _nm_group_mask(block, pivots, column, structure, pruned)
        kept = block[:, column].masked_fill(pruned[:, column], 0.0)
        error = (block[:, column] - kept) / pivots[column]
        block[:, column:] -= error[:, None] * factor[column, column:][None, :]
        block[:, column] = kept
        errors[:, column] = error
    weight[:, start:end] = block
    weight[:, end:] -= errors @ inverse_factor[start:end, end:]


def _saliency(block: torch.Tensor, pivots: torch.Tensor) -> torch.Tensor:
    """OBS error of pruning each weight alone: w^2 / [H^-1]_qq^2 (with the factor's pivots)."""
    return block.square() / pivots.square()[None, :]


def _unstructured_block_mask(block: torch.Tensor, pivots: torch.Tensor, count: int) -> torch.Tensor:
    """Pruned-mask of the ``count`` lowest saliencies of the whole block (ties: lowest flat index)."""
    return ~keep_mask_without_lowest(_saliency(block, pivots), count, group="layer")


def _nm_group_mask(
    block: torch.Tensor,
    pivots: torch.Tensor,
    column: int,
    structure: tuple[int, int],
    pruned: torch.Tensor | None,
) -> torch.Tensor:
    """Pruned-mask with the group of M columns starting at ``column`` decided by current weights."""
    n, m = structure
    if pruned is None:
        pruned = torch.zeros(block.shape, dtype=torch.bool, device=block.device)
    group = slice(column, column + m)
    ranks = nm_ranks(_saliency(block[:, group], pivots[group]), m)
    pruned[:, group] = ~keep_mask_from_nm_ranks(ranks, n, m)
    return pruned
