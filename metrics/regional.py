"""Regional optimisation (Wanda++'s RO, Yang et al. 2025): the pure steps.

After a decoder block's linears are pruned, a few rounds move the block's weights toward
reproducing the dense block: each round takes small optimiser steps (RMSprop) on the mean
squared error between the pruned and the dense block's outputs on calibration samples, which
moves every weight of the block's linears, pruned ones included. Each round then re-prunes: the
scoring rule scores the moved weights and each layer keeps as many as before, in the same
structure (per row, per layer, or N per group of M). RO is the block-level sibling of SparseGPT's
update, which reconstructs one linear at a time.

The block runs in :mod:`paretoprune.evaluators.regional`; here are the settings, the loss, the
choice of samples per round and the re-pruning mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from paretoprune.errors import InputError
from paretoprune.metrics.masks import keep_mask_from_scores, nm_keep_mask
from paretoprune.metrics.row_allocation import keep_mask_with_row_counts

__all__ = ["RegionalSettings", "output_error", "round_batches", "same_budget_mask"]


@dataclass(frozen=True)
class RegionalSettings:
    """RO's knobs. The paper runs 5 rounds of RMSprop at lr 3e-7 on 32 of its 128 calibration
    samples per round, on LLaMA."""

    rounds: int = 5
    # RMSprop's step is about lr per weight whatever the gradient's scale, so the paper's 3e-7
    # (fp16 LLaMA, 32 steps a round) barely moves fp32 weights of SmolLM2's size. Measured on
    # SmolLM2-135M, fp32, 2:4 RGS masks, block 0, held-out windows (results/wanda_plus_plus):
    # the block's output MSE falls to 0.99x at 3e-7 (32 samples a round), 0.98x at 3e-6,
    # 0.85x at 3e-5 and 0.72x at 3e-4 (8 samples a round), the largest rate tried.
    lr: float = 3e-4
    # Calibration samples per round (whole batches of the walk): a quarter of the protocol's 32
    # windows, as the paper's 32 are a quarter of its 128; each round costs a forward and a
    # backward pass of the block per batch.
    samples: int = 8
    seed: int = 0  # which samples each round draws, when it does not take them all

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.samples < 1:
            raise InputError(f"regional optimisation needs rounds >= 1 and samples >= 1, got {self.rounds} and {self.samples}")
        if not self.lr > 0:
            raise InputError(f"regional optimisation needs a learning rate > 0, got {self.lr}")


def output_error(pruned: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the pruned and the dense block outputs, in fp32."""
    return torch.nn.functional.mse_loss(pruned.float(), dense.float())


def round_batches(sizes: list[int], samples: int, round_index: int, seed: int = 0) -> list[int]:
    """Which batches (indices into ``sizes``, the samples of each) one round uses: a seeded
    shuffle, cut once at least ``samples`` samples are in (all of them when there are fewer)."""
    order = torch.randperm(len(sizes), generator=torch.Generator().manual_seed(seed * 1009 + round_index))
    chosen, total = [], 0
    for index in order.tolist():
        if total >= samples:
            break
        chosen.append(index)
        total += sizes[index]
    return chosen


def same_budget_mask(
    scores: torch.Tensor, keep: torch.Tensor, structure: tuple[int, int] | None, group: str = "row"
) -> torch.Tensor:
    """The keep mask of ``scores`` that keeps what ``keep`` kept, in the same structure: N of
    every M for N:M, the same count per row for ``group="row"`` (a row allocation's counts
    included), the same count over the layer for ``group="layer"``."""
    if scores.shape != keep.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and mask {tuple(keep.shape)} differ in shape")
    if structure is not None:
        return nm_keep_mask(scores, structure[0], structure[1])
    if group == "layer":
        pruned = keep.numel() - int(keep.sum())
        return keep_mask_from_scores(scores, pruned / keep.numel(), "layer")
    pruned_per_row = keep.shape[1] - keep.sum(dim=1)
    return keep_mask_with_row_counts(scores, pruned_per_row)
