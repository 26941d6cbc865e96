"""Keep-masks from scores: per output row, per whole layer, and N:M; and rank caches.

A mask is a bool tensor shaped like the weight, True where the weight is kept. The weights with
the lowest scores are pruned. Ties are broken deterministically: among equal scores the lower
column index (the lower flat index for a whole layer) ranks lower and is pruned first, exactly as
a stable ascending sort orders them.

Rounding: a row of ``in`` weights at sparsity ``s`` loses ``round(s * in)`` weights (Python's
``round``, halves to even); a whole layer of ``n`` weights loses ``round(s * n)``. Sparsity must
lie in [0, 1). Scores must not be NaN (``compute_scores`` never returns one).

For a fixed scoring rule the order of weights in a comparison group does not depend on the
sparsity, so the evaluator caches ranks once (:func:`row_ranks`, :func:`layer_ranks`,
:func:`nm_ranks`) and turns them into a mask for any sparsity with one comparison
(:func:`keep_mask_from_ranks`). :func:`keep_mask_from_scores` gives the identical mask without
the cache, by selection instead of a full sort.

N:M structure keeps N of every M consecutive input weights of a row ("2:4": 2 kept of 4).
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch

from paretoprune.errors import InputError

__all__ = [
    "GROUPS",
    "check_sparsity",
    "check_structure_fits",
    "format_structure",
    "keep_mask",
    "keep_mask_from_nm_ranks",
    "keep_mask_from_ranks",
    "keep_mask_from_scores",
    "keep_mask_without_lowest",
    "layer_ranks",
    "nm_keep_mask",
    "nm_ranks",
    "parse_structure",
    "pruned_count",
    "rank_dtype",
    "row_ranks",
]

GROUPS: tuple[str, ...] = ("row", "layer")

_STRUCTURE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


# ----------------------------------------------------------------------------------------------
# Structures and sparsities.


def parse_structure(text: str | None) -> tuple[int, int] | None:
    """``"unstructured"`` (or None) -> None; ``"2:4"`` -> (2, 4), N kept of every M inputs."""
    if text is None or text.strip().lower() == "unstructured":
        return None
    match = _STRUCTURE.match(text)
    if match is None:
        raise InputError(f"structure {text!r} is not understood; write 'unstructured' or N:M such as '2:4'")
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise InputError(f"structure {text!r} needs 0 < N < M (N kept of every M weights); e.g. '2:4'")
    return n, m


def format_structure(structure: tuple[int, int] | None) -> str:
    """Inverse of :func:`parse_structure`."""
    return "unstructured" if structure is None else f"{structure[0]}:{structure[1]}"


def check_structure_fits(in_features: int, structure: tuple[int, int] | None, layer_name: str) -> None:
    """Raise InputError unless M divides the layer's input width (N:M groups tile each row)."""
    if structure is None:
        return
    n, m = structure
    if in_features % m != 0:
        raise InputError(
            f"structure {n}:{m} does not fit layer {layer_name}: its input width {in_features} "
            f"is not a multiple of {m}; choose an M that divides {in_features} or prune unstructured"
        )


def check_sparsity(sparsity: float) -> float:
    """The sparsity as a float, or InputError unless it lies in [0, 1)."""
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise InputError(f"sparsity must be a number in [0, 1), got {sparsity!r}") from None
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise InputError(f"sparsity must lie in [0, 1), got {sparsity!r}")
    return value


def pruned_count(size: int, sparsity: float) -> int:
    """How many of ``size`` weights a group loses at ``sparsity``: round(sparsity * size)."""
    return round(check_sparsity(sparsity) * size)


def _check_group(group: str) -> None:
    if group not in GROUPS:
        raise InputError(f"comparison group {group!r} is not known; choose 'row' or 'layer'")


def _check_matrix(scores: torch.Tensor) -> None:
    if scores.dim() != 2:
        raise InputError(f"scores must be a 2-D [out, in] matrix, got shape {tuple(scores.shape)}")


# ----------------------------------------------------------------------------------------------
# Ranks: computed once per scoring rule, then a mask for any sparsity is one comparison.


def rank_dtype(size: int) -> torch.dtype:
    """The most compact integer dtype that holds ranks 0 .. size-1."""
    if size <= torch.iinfo(torch.int8).max + 1:
        return torch.int8
    if size <= torch.iinfo(torch.int16).max + 1:
        return torch.int16
    if size <= torch.iinfo(torch.int32).max + 1:
        return torch.int32
    return torch.int64


def _ranks_along_last(scores: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Stable ascending rank of each entry along the last dimension."""
    order = torch.argsort(scores, dim=-1, stable=True)
    positions = torch.arange(scores.shape[-1], dtype=dtype, device=scores.device).expand_as(order)
    return torch.empty(scores.shape, dtype=dtype, device=scores.device).scatter_(-1, order, positions)


def row_ranks(scores: torch.Tensor) -> torch.Tensor:
    """Rank of each weight within its row (0 = pruned first), int16 when the row fits, else int32."""
    _check_matrix(scores)
    width = scores.shape[1]
    dtype = torch.int16 if width <= torch.iinfo(torch.int16).max + 1 else torch.int32
    return _ranks_along_last(scores, dtype)


def layer_ranks(scores: torch.Tensor) -> torch.Tensor:
    """Rank of each weight within the whole matrix (flat order breaks ties), int32 (int64 if huge)."""
    _check_matrix(scores)
    dtype = torch.int32 if scores.numel() <= torch.iinfo(torch.int32).max + 1 else torch.int64
    return _ranks_along_last(scores.reshape(-1), dtype).reshape(scores.shape)


def keep_mask_from_ranks(ranks: torch.Tensor, sparsity: float, group: str = "row") -> torch.Tensor:
    """Keep-mask from cached ranks: one comparison, ``ranks >= pruned count``."""
    _check_group(group)
    size = ranks.shape[-1] if group == "row" else ranks.numel()
    pruned = pruned_count(size, sparsity)
    if pruned >= size:  # the count may not fit the compact rank dtype (it would wrap around)
        return torch.zeros(ranks.shape, dtype=torch.bool, device=ranks.device)
    return ranks >= pruned


# ----------------------------------------------------------------------------------------------
# Masks straight from scores, identical to the rank path.


def keep_mask_from_scores(
    scores: torch.Tensor, sparsity: float, group: str = "row", *, dtype: torch.dtype = torch.bool
) -> torch.Tensor:
    """Keep-mask at ``sparsity`` per row or per layer, identical to ``keep_mask_from_ranks``.

    It selects the k-th smallest score of each group instead of sorting the group: weights below
    it are pruned, weights above it kept, and only groups where several weights tie at that
    value need the ties split by index. A ``dtype`` other than bool gives the mask as 0 and 1 in
    that dtype, ready to multiply a weight by (a product converts a bool mask first).
    """
    _check_matrix(scores)
    _check_group(group)
    size = scores.shape[1] if group == "row" else scores.numel()
    return keep_mask_without_lowest(scores, pruned_count(size, sparsity), group, dtype=dtype)


def keep_mask_without_lowest(
    scores: torch.Tensor, count: int, group: str = "row", *, dtype: torch.dtype = torch.bool
) -> torch.Tensor:
    """Keep-mask that prunes exactly ``count`` lowest scores of each group (ties: lowest index)."""
    _check_matrix(scores)
    _check_group(group)
    groups = scores if group == "row" else scores.reshape(1, -1)
    if not 0 <= count <= groups.shape[1]:
        raise InputError(f"cannot prune {count} of {groups.shape[1]} weights in a {group}")
    return _keep_lowest_pruned(groups, count, dtype).reshape(scores.shape)


def _keep_lowest_pruned(groups: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    """Mask of each row of ``groups`` without its k lowest entries (stable order breaks ties)."""
    width = groups.shape[1]
    if k == 0 or k == width:
        return torch.full(groups.shape, k == 0, dtype=dtype, device=groups.device)
    threshold, successor = _kth_and_next_smallest(groups, k)
    keep = torch.gt(groups, threshold, out=torch.empty(groups.shape, dtype=dtype, device=groups.device))
    # That prunes exactly the k entries up to the threshold, unless the next one ties with it.
    tied_rows = torch.nonzero(successor.flatten() == threshold.flatten()).flatten()
    if tied_rows.numel() == groups.shape[0]:  # every row tied: no need to gather and scatter them
        return _split_ties(groups, threshold, keep, k)
    if tied_rows.numel():
        keep[tied_rows] = _split_ties(groups[tied_rows], threshold[tied_rows], keep[tied_rows], k)
    return keep


def _split_ties(
    groups: torch.Tensor, threshold: torch.Tensor, above: torch.Tensor, k: int
) -> torch.Tensor:
    """Rows where several entries equal the threshold: prune the lowest-index ones among them.

    ``above`` marks the entries over the threshold (it is filled in and returned). The k pruned
    entries of a row are those below the threshold and then its first ties, so a tie survives
    when its position among the row's ties exceeds k - (entries below).
    """
    tied = groups == threshold
    tie_position = torch.cumsum(tied, dim=1, dtype=torch.int32)  # 1 at a row's first tie, 2, ...
    tie_count = tie_position[:, -1:]
    below = groups.shape[1] - tie_count - above.sum(dim=1, keepdim=True, dtype=torch.int32)
    return above.masked_fill_(tied & (tie_position > k - below), True)


# numpy's selection handles these dtypes natively; others (half precision) go to torch.
_NUMPY_SELECTABLE = frozenset({torch.float32, torch.float64, torch.int16, torch.int32, torch.int64})


def _kth_and_next_smallest(groups: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k-th and (k+1)-th smallest entries (k from 1) of each row, as two [rows, 1] columns.

    On the CPU both come from one pass of numpy's introselect, several times faster than
    ``torch.kthvalue``: that one also builds an int64 index tensor the masks never use, and
    spreads each call over OpenMP threads, whose start-up dominates on busy machines. Both are
    exact order statistics, so the masks do not depend on which one ran.
    """
    if groups.device.type == "cpu" and groups.dtype in _NUMPY_SELECTABLE:
        partitioned = np.partition(groups.detach().numpy(), k - 1, axis=1)
        # Everything after the k-th place is at least as large, so the next one is their minimum
        # (partitioning at both places at once takes numpy several times longer). The copy lets
        # the partitioned array go, which a view would keep alive.
        kth = partitioned[:, k - 1 : k].copy()
        return torch.from_numpy(kth), torch.from_numpy(partitioned[:, k:].min(axis=1, keepdims=True))
    kth = torch.kthvalue(groups, k, dim=1, keepdim=True).values
    return kth, torch.kthvalue(groups, k + 1, dim=1, keepdim=True).values


# ----------------------------------------------------------------------------------------------
# N:M.


def nm_ranks(scores: torch.Tensor, m: int, layer_name: str = "this layer") -> torch.Tensor:
    """Stable rank (int8) of each weight inside its group of ``m`` consecutive inputs of a row."""
    _check_matrix(scores)
    if m < 2:
        raise InputError(f"an N:M group needs M >= 2, got M = {m}")
    check_structure_fits(scores.shape[1], (1, m), layer_name)
    groups = scores.reshape(scores.shape[0], -1, m)
    if m <= _PAIRWISE_UP_TO:
        return _ranks_by_comparison(groups).reshape(scores.shape)
    return _ranks_along_last(groups, rank_dtype(m)).reshape(scores.shape)


# Up to this group size, counting pairwise comparisons beats sorting tiny groups (measured: 4-5x
# faster at M = 4, 2x at M = 8, slower at M = 16).
_PAIRWISE_UP_TO = 8


def _ranks_by_comparison(groups: torch.Tensor) -> torch.Tensor:
    """Stable rank along the last (small) dimension: how many entries sort before each one.

    Entry j sorts before entry i when it is smaller, or equal and to the left of i.
    """
    size = groups.shape[-1]
    ranks = torch.zeros(groups.shape, dtype=rank_dtype(size), device=groups.device)
    for i in range(size):
        rank_i, value_i = ranks[..., i], groups[..., i]
        for j in range(size):
            if j < i:
                rank_i += groups[..., j] <= value_i
            elif j > i:
                rank_i += groups[..., j] < value_i
    return ranks


def keep_mask_from_nm_ranks(ranks: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """N:M keep-mask from :func:`nm_ranks`: the n highest of every m, one comparison."""
    if not 0 < n < m:
        raise InputError(f"structure {n}:{m} needs 0 < N < M (N kept of every M weights)")
    return ranks >= m - n


def nm_keep_mask(scores: torch.Tensor, n: int, m: int, layer_name: str = "this layer") -> torch.Tensor:
    """Keep the ``n`` highest scores of every ``m`` consecutive inputs of each row."""
    if not 0 < n < m:
        raise InputError(f"structure {n}:{m} needs 0 < N < M (N kept of every M weights)")
    return keep_mask_from_nm_ranks(nm_ranks(scores, m, layer_name), n, m)


def keep_mask(
    scores: torch.Tensor,
    sparsity: float,
    structure: tuple[int, int] | None = None,
    group: str = "row",
    layer_name: str = "this layer",
    *,
    dtype: torch.dtype = torch.bool,
) -> torch.Tensor:
    """One entry point: N:M when ``structure`` is given (its pattern fixes the sparsity, so
    ``sparsity`` is not used), else unstructured at ``sparsity`` over ``group``. The mask is
    bool, or 0 and 1 in ``dtype`` (see :func:`keep_mask_from_scores`)."""
    if structure is None:
        return keep_mask_from_scores(scores, sparsity, group, dtype=dtype)
    return nm_keep_mask(scores, structure[0], structure[1], layer_name).to(dtype)
