"""Truthfulness of a live model: its activations on the truth statement sets, how well each
block separates true from false, probes that read truth from them, and TPLO's allocation.

An activation is the residual stream at a block's output, at the last token of a statement
(where the model has read the whole claim). Statements run in batches padded on the right:
under causal attention a real token never attends to the padding after it, and the positions of
real tokens stay 0, 1, ..., as when a statement runs alone. The block modules come from
:func:`paretoprune.models.find_layout`; forward hooks on them read their outputs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from paretoprune.errors import InputError
from paretoprune.evaluators.stats import ChannelStats
from paretoprune.metrics.allocation import block_totals, expand_block_genes
from paretoprune.metrics.truth import (
    leave_one_topic_out,
    mean_separability,
    separability,
    tplo_block_sparsities,
    within_topic,
)
from paretoprune.models import ModelLayout, context_length, find_layout
from paretoprune.truth import StatementSet

__all__ = [
    "PROBE_SPLITS",
    "activations_by_topic",
    "block_separability",
    "probe_accuracy",
    "probe_accuracy_by_block",
    "separability_by_set",
    "statement_activations",
    "tplo_from_owl",
    "tplo_sparsities",
]

MEAN = "mean"  # key of the average over held-out topics in probe results
# How probes are tested: on a topic left out of training (truth itself), or on held-out
# statements of each topic (2-fold cross-validation within the topic: truth in that topic).
PROBE_SPLITS = ("topics", "statements")


# ----------------------------------------------------------------------------------------------
# Activations.


def statement_activations(
    model: nn.Module,
    tokenizer: Any,
    statements: Sequence[str],
    blocks: Sequence[int] | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Residual stream after each block at each statement's last token: [blocks, statements, hidden].

    ``blocks`` picks block indices (default all, in order); values are float32.
    """
    layout = find_layout(model)
    chosen = _block_indices(layout, blocks)
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    tokens = [_encode(model, tokenizer, text) for text in statements]
    if not tokens:
        raise InputError("no statements to run")
    # Longest first, so each batch pads little; results go back to the callers' order.
    order = sorted(range(len(tokens)), key=lambda index: -len(tokens[index]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    result: np.ndarray | None = None
    with torch.inference_mode(), _block_outputs(layout, chosen) as outputs:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            picked = _run_batch(model, [tokens[index] for index in batch], pad_id, outputs)
            if result is None:
                result = np.empty((len(chosen), len(tokens), picked.shape[-1]), dtype=np.float32)
            result[:, batch] = picked
    assert result is not None
    return result


def activations_by_topic(
    model: nn.Module,
    tokenizer: Any,
    sets: Mapping[str, StatementSet],
    blocks: Sequence[int] | None = None,
    batch_size: int = 32,
) -> dict[str, np.ndarray]:
    """:func:`statement_activations` of every statement set, by topic."""
    return {
        topic: statement_activations(model, tokenizer, statement_set.statements, blocks, batch_size)
        for topic, statement_set in sets.items()
    }


def _encode(model: nn.Module, tokenizer: Any, text: str) -> list[int]:
    # The tokenizer's own default for special tokens (a BOS where the model expects one).
    ids = list(tokenizer(text)["input_ids"])
    if not ids:
        raise InputError(f"statement {text!r} gives no tokens")
    context = context_length(getattr(model, "config", None))
    if context is not None and len(ids) > context:
        raise InputError(f"a statement of {len(ids)} tokens exceeds the model's context of {context}")
    return ids


def _block_indices(layout: ModelLayout, blocks: Sequence[int] | None) -> list[int]:
    count = len(layout.blocks)
    chosen = list(range(count)) if blocks is None else [int(block) for block in blocks]
    if not chosen:
        raise InputError("no blocks chosen: name at least one block")
    bad = [block for block in chosen if not 0 <= block < count]
    if bad:
        raise InputError(f"block {bad[0]} is not one of the model's blocks 0..{count - 1}")
    return chosen


class _DeepestBlockDone(Exception):
    """Raised once the deepest chosen block has run: the blocks after it are not needed."""


@contextmanager
def _block_outputs(layout: ModelLayout, blocks: list[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Forward hooks that keep each chosen block's latest output hidden states, by position in ``blocks``."""
    outputs: dict[int, torch.Tensor] = {}

    def keeper(slot: int) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            # Some transformers versions return (hidden, ...) from a block, others the tensor.
            outputs[slot] = output[0] if isinstance(output, tuple) else output
            if len(outputs) == len(blocks):  # every chosen block has run; stop the forward pass
                raise _DeepestBlockDone

        return hook

    handles = [layout.blocks[block].module.register_forward_hook(keeper(slot)) for slot, block in enumerate(blocks)]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def _run_batch(
    model: nn.Module, rows: list[list[int]], pad_id: int, outputs: dict[int, torch.Tensor]
) -> np.ndarray:
    """Run right-padded rows; the hooked outputs at each row's last real token, [blocks, rows, hidden]."""
    lengths = torch.tensor([len(row) for row in rows])
    ids = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[index, : len(row)] = 1
    device = next(model.parameters()).device
    outputs.clear()
    try:  # the backbone alone: the output head's [tokens x vocabulary] logits are not needed
        model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
    except _DeepestBlockDone:
        pass
    last = (lengths - 1).to(device)
    rows_index = torch.arange(len(rows), device=device)
    picked = [outputs[slot][rows_index, last].float().cpu() for slot in range(len(outputs))]
    return torch.stack(picked).numpy()


# ----------------------------------------------------------------------------------------------
# Separability and probes.


def separability_by_set(
    model: nn.Module, tokenizer: Any, sets: Mapping[str, StatementSet], batch_size: int = 32
) -> dict[str, np.ndarray]:
    """Each statement set's separability at every block (the raw ratios), by topic."""
    activations = activations_by_topic(model, tokenizer, sets, batch_size=batch_size)
    return {
        topic: np.array([separability(block, sets[topic].labels) for block in per_block])
        for topic, per_block in activations.items()
    }


def block_separability(
    model: nn.Module, tokenizer: Any, sets: Mapping[str, StatementSet], batch_size: int = 32
) -> np.ndarray:
    """TPLO's separability profile over blocks: each set normalised to sum 1, averaged; [blocks]."""
    return mean_separability(separability_by_set(model, tokenizer, sets, batch_size))


def probe_accuracy_by_block(
    model: nn.Module,
    tokenizer: Any,
    sets: Mapping[str, StatementSet],
    blocks: Sequence[int] | None = None,
    l2: float = 1.0,
    batch_size: int = 32,
    split: str = "topics",
) -> dict[int, dict[str, float]]:
    """Probe accuracy at each block: {block: {topic: acc, "mean": acc}}.

    ``split="topics"``: each topic scored by a probe trained on the other topics (leave one
    topic out); ``"statements"``: by 2-fold cross-validation on its own statements. The model
    runs once; each block's probes are fitted on its activations.
    """
    if split not in PROBE_SPLITS:
        raise InputError(f"unknown probe split {split!r}: use {' or '.join(PROBE_SPLITS)}")
    chosen = _block_indices(find_layout(model), blocks)
    activations = activations_by_topic(model, tokenizer, sets, chosen, batch_size)
    labels = {topic: statement_set.labels for topic, statement_set in sets.items()}
    results: dict[int, dict[str, float]] = {}
    for slot, block in enumerate(chosen):
        features = {topic: per_block[slot] for topic, per_block in activations.items()}
        if split == "topics":
            results[block] = _with_mean(leave_one_topic_out(features, labels, l2))
        else:
            results[block] = _with_mean(within_topic(features, labels, l2=l2))
    return results


def probe_accuracy(
    model: nn.Module,
    tokenizer: Any,
    sets: Mapping[str, StatementSet],
    block: int,
    l2: float = 1.0,
    batch_size: int = 32,
    split: str = "topics",
) -> dict[str, float]:
    """Probe accuracy at one block: {topic: acc, "mean": acc} (``split`` as in
    :func:`probe_accuracy_by_block`). For a pruned model, use the dense model's pivot block so
    both read the same depth."""
    return probe_accuracy_by_block(model, tokenizer, sets, [block], l2, batch_size, split)[block]


def _with_mean(accuracies: dict[str, float]) -> dict[str, float]:
    return {**accuracies, MEAN: float(np.mean(list(accuracies.values())))}


# ----------------------------------------------------------------------------------------------
# TPLO allocation.


def tplo_from_owl(
    layout: ModelLayout,
    owl: Mapping[str, float],
    separability_per_block: np.ndarray,
    target: float,
    scale: float = 0.04,
) -> dict[str, float]:
    """TPLO's sparsity of every linear, from OWL's per-linear sparsities and a separability profile.

    OWL gives all linears of a block one value; that value is the block's. Blocks weigh by
    their parameter counts, so the weighted mean over all linears is exactly ``target``.
    """
    block_of_linear = [linear.block_index for linear in layout.linears]
    missing = [name for name in layout.names if name not in owl]
    if missing:
        raise InputError(f"OWL sparsities lack {len(missing)} linear(s) of this model, e.g. {missing[0]}")
    owl_blocks = np.full(len(layout.blocks), np.nan)  # a block without linears stays NaN and is refused
    for linear in layout.linears:
        owl_blocks[linear.block_index] = owl[linear.name]
    if len(separability_per_block) != len(layout.blocks):
        raise InputError(f"separability of {len(separability_per_block)} blocks for a model of {len(layout.blocks)}")
    weights = block_totals(layout.numels, block_of_linear, len(layout.blocks))
    per_block = tplo_block_sparsities(separability_per_block, owl_blocks, weights, target, scale)
    per_linear = expand_block_genes(per_block, block_of_linear)
    return {name: float(value) for name, value in zip(layout.names, per_linear, strict=True)}


def tplo_sparsities(
    model: nn.Module,
    layout: ModelLayout,
    stats: Mapping[str, ChannelStats],
    tokenizer: Any,
    sets: Mapping[str, StatementSet],
    target: float,
    scale: float = 0.04,
    batch_size: int = 32,
) -> dict[str, float]:
    """TPLO: OWL's sparsities (from the calibration ``stats``) below the block of peak truth
    separability on ``sets``, separability-driven sparsities from it on; exact weighted mean."""
    # Imported here: the pruning module may come to offer TPLO as an allocation and import this one.
    from paretoprune.pruning import owl_sparsities

    owl = owl_sparsities(layout, stats, target)
    profile = block_separability(model, tokenizer, sets, batch_size)
    return tplo_from_owl(layout, owl, profile, target, scale)
