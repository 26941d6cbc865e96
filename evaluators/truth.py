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
from dataclasses import dataclass
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
    pivot_block,
    separability,
    tplo_block_sparsities,
    within_topic,
)
from paretoprune.models import ModelLayout, context_length, find_layout
from paretoprune.truth import StatementSet

__all__ = [
    "PROBE_SPLITS",
    "EncodedStatements",
    "activations_by_topic",
    "block_separability",
    "check_split",
    "encode_sets",
    "encode_statements",
    "encoded_activations",
    "pivot_of",
    "probe_accuracy",
    "probe_accuracy_by_block",
    "probe_scores",
    "separability_by_set",
    "statement_activations",
    "truth_probe",
    "tplo_from_owl",
    "tplo_sparsities",
]

MEAN = "mean"  # key of the average over held-out topics in probe results
# How probes are tested: on a topic left out of training (truth itself), or on held-out
# statements of each topic (2-fold cross-validation within the topic: truth in that topic).
PROBE_SPLITS = ("topics", "statements")


# ----------------------------------------------------------------------------------------------
# Activations.


@dataclass(frozen=True)
class EncodedStatements:
    """One statement set as token ids, ready to run without a tokenizer (e.g. inside an actor)."""

    tokens: tuple[tuple[int, ...], ...]  # one row of ids per statement, in file order
    labels: np.ndarray  # int64, 1 = true, 0 = false
    pad_id: int  # filler after a short row; never attended to by a real token

    def __len__(self) -> int:
        return len(self.tokens)


def encode_statements(model: nn.Module, tokenizer: Any, statements: Sequence[str], labels: Any = None) -> EncodedStatements:
    """Statements as token ids (checked against the model's context); ``labels`` default to 0."""
    tokens = tuple(tuple(_encode(model, tokenizer, text)) for text in statements)
    if not tokens:
        raise InputError("no statements to run")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    values = np.zeros(len(tokens), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)
    return EncodedStatements(tokens, values, int(pad_id))


def encode_sets(model: nn.Module, tokenizer: Any, sets: Mapping[str, StatementSet]) -> dict[str, EncodedStatements]:
    """:func:`encode_statements` of every statement set, by topic."""
    return {topic: encode_statements(model, tokenizer, s.statements, s.labels) for topic, s in sets.items()}


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
    return encoded_activations(model, encode_statements(model, tokenizer, statements), blocks, batch_size)


def encoded_activations(
    model: nn.Module, encoded: EncodedStatements, blocks: Sequence[int] | None = None, batch_size: int = 32
) -> np.ndarray:
    """:func:`statement_activations` of statements already encoded: [blocks, statements, hidden]."""
    layout = find_layout(model)
    chosen = _block_indices(layout, blocks)
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    tokens = encoded.tokens
    # Longest first, so each batch pads little; results go back to the callers' order.
    order = sorted(range(len(tokens)), key=lambda index: -len(tokens[index]))
    result: np.ndarray | None = None
    with torch.inference_mode(), _block_outputs(layout, chosen) as outputs:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            picked = _run_batch(model, [list(tokens[index]) for index in batch], encoded.pad_id, outputs)
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
    check_split(split)
    chosen = _block_indices(find_layout(model), blocks)
    activations = activations_by_topic(model, tokenizer, sets, chosen, batch_size)
    labels = {topic: statement_set.labels for topic, statement_set in sets.items()}
    return {
        block: probe_scores({topic: per_block[slot] for topic, per_block in activations.items()}, labels, split, l2)
        for slot, block in enumerate(chosen)
    }


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


def check_split(split: str) -> str:
    """One of :data:`PROBE_SPLITS`, else a one-line error."""
    if split not in PROBE_SPLITS:
        raise InputError(f"unknown probe split {split!r}: use {' or '.join(PROBE_SPLITS)}")
    return split


def probe_scores(
    features: Mapping[str, np.ndarray], labels: Mapping[str, Any], split: str = "topics", l2: float = 1.0
) -> dict[str, float]:
    """Probe accuracy per topic and their mean, from one block's activations of each topic."""
    if check_split(split) == "topics":
        return _with_mean(leave_one_topic_out(features, labels, l2))
    return _with_mean(within_topic(features, labels, l2=l2))


def _with_mean(accuracies: dict[str, float]) -> dict[str, float]:
    return {**accuracies, MEAN: float(np.mean(list(accuracies.values())))}


def pivot_of(activations: Mapping[str, np.ndarray], labels: Mapping[str, Any]) -> tuple[np.ndarray, int]:
    """TPLO's separability profile over blocks and its peak, from [blocks, statements, hidden]
    activations of each topic."""
    raw = {topic: np.array([separability(block, labels[topic]) for block in acts]) for topic, acts in activations.items()}
    profile = mean_separability(raw)
    return profile, pivot_block(profile)


def truth_probe(
    model: nn.Module,
    tokenizer: Any,
    sets: Mapping[str, StatementSet],
    reference: nn.Module | None = None,
    l2: float = 1.0,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Probe accuracy of ``model`` (and of its dense ``reference``) at the pivot block, both splits.

    The pivot is the block where the dense model (``reference``, else ``model`` itself)
    separates true from false best, so a pruned model is read at the depth where the dense
    one holds truth. Each model is scored under both :data:`PROBE_SPLITS`: ``topics`` (leave
    one topic out, the headline) and ``statements`` (held-out statements of the same topic).
    """
    if len(sets) < 2:
        raise InputError(f"the truth probe leaves one topic out and needs at least two topics, got {len(sets)}")
    dense = reference if reference is not None else model
    encoded = encode_sets(dense, tokenizer, sets)
    labels = {topic: item.labels for topic, item in encoded.items()}
    every_block = {topic: encoded_activations(dense, item, None, batch_size) for topic, item in encoded.items()}
    profile, pivot = pivot_of(every_block, labels)
    at_pivot = {topic: acts[pivot] for topic, acts in every_block.items()}
    report: dict[str, Any] = {
        "pivot_block": pivot, "pivot_from": "model" if reference is None else "reference",
        "separability": [round(float(value), 6) for value in profile],
        "statements": {topic: len(item) for topic, item in encoded.items()}, "l2": l2,
    }  # fmt: skip
    if reference is not None:
        report["reference"] = _both_splits(at_pivot, labels, l2)
        at_pivot = {topic: encoded_activations(model, item, [pivot], batch_size)[0] for topic, item in encoded.items()}
    report["model"] = _both_splits(at_pivot, labels, l2)
    return report


def _both_splits(features: Mapping[str, np.ndarray], labels: Mapping[str, Any], l2: float) -> dict[str, dict[str, float]]:
    return {split: probe_scores(features, labels, split, l2) for split in PROBE_SPLITS}


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
