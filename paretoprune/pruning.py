"""The pruning driver: apply a Candidate to a live model, in place.

Per-layer sparsities come from the candidate; the weights to drop are chosen either by the
candidate's scoring rule (magnitude, Wanda, RIA or any point of the meta-metric family) or by
SparseGPT, which also updates the surviving weights to reconstruct each layer's output. With
``update=True`` a scoring rule's masks get that same update (the ``update`` solver); other solvers
(``candidate.solvers``, e.g. Frank-Wolfe mask refinement) and row allocations (``candidate.rows``,
e.g. TRIM) come from the registries.

A block solver (``regional``, Wanda++'s regional optimisation) runs once a block's linears are
pruned, on the block's calibration inputs and dense outputs, and re-prunes with the candidate's
scoring rule. A rule with a gradient term (``wanda++``) has the walk gather regional gradients.

One-shot pruning calibrates every block on the dense model's activations; sequential pruning
(``sequential=True``) calibrates each block on the outputs of the already pruned blocks, as the
Wanda and SparseGPT papers do. Both walk the model one block at a time (see evaluators.stats).
"""

from __future__ import annotations

import logging
import time
from functools import partial
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.evaluators.stats import BlockStep, ChannelStats, walk_blocks
from paretoprune.metrics.allocation import owl_block_sparsities, outlier_ratio
from paretoprune.metrics import masks
from paretoprune.metrics.masks import check_structure_fits, parse_structure
from paretoprune.metrics.scores import SCORING_RULES, MetricSpec, compute_scores
from paretoprune.metrics.row_allocation import ROW_ALLOCATIONS, allocated_row_counts, keep_mask_with_row_counts
from paretoprune.metrics.regional import RegionalSettings
from paretoprune.metrics.solvers import SOLVERS, block_chain, check_chain, layer_chain, run_chain
from paretoprune.metrics.sparsegpt import sparsegpt_prune
from paretoprune.global_scores import ScoreMap, check_score_map
from paretoprune.models import ModelLayout, PrunableLinear
from paretoprune.registry import Registry

__all__ = [
    "LAYER_ALLOCATIONS",
    "AllocationInputs",
    "LayerAllocation",
    "PruneReport",
    "check_candidate",
    "keep_mask",
    "layer_sparsities",
    "measure_sparsity",
    "owl_sparsities",
    "prune_model",
    "uniform_sparsities",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneReport:
    layers: dict[str, float]  # achieved fraction of zeros, by module name
    sparsity: float  # achieved, weighted over the prunable parameters
    seconds: float


# --------------------------------------------------------------------------------------------
# Per-layer sparsities


def uniform_sparsities(layout: ModelLayout, sparsity: float) -> dict[str, float]:
    _check_sparsity(sparsity, "sparsity")
    return {name: float(sparsity) for name in layout.names}


def owl_sparsities(
    layout: ModelLayout,
    stats: Mapping[str, ChannelStats],
    sparsity: float,
    *,
    lam: float = 0.08,
    outlier_m: float = 5.0,
) -> dict[str, float]:
    """OWL: blocks with more activation outliers keep more weights; exact weighted mean."""
    _check_sparsity(sparsity, "sparsity")
    wanda = SCORING_RULES["wanda"]
    ratios, weights = [], []
    for block in layout.blocks:
        linears = layout.linears_of_block(block.index)
        scores = torch.cat(
            [_scores(linear, stats.get(linear.name), wanda).flatten() for linear in linears]
        )
        ratios.append(outlier_ratio(scores, outlier_m))
        weights.append(sum(linear.numel for linear in linears))
    per_block = owl_block_sparsities(np.array(ratios), np.array(weights), sparsity, lam=lam)
    return {linear.name: float(per_block[linear.block_index]) for linear in layout.linears}


@dataclass(frozen=True)
class AllocationInputs:
    """What a layer allocation may read besides the target: the model's layout, its activation
    statistics, and for rules that probe the model (TPLO) the model, tokenizer and statements."""

    layout: ModelLayout
    stats: Mapping[str, ChannelStats] | None = None
    model: nn.Module | None = None
    tokenizer: Any = None
    truth_dir: Path | None = None  # folder of true/false statement sets (TPLO)
    tokens: torch.Tensor | None = None  # calibration windows (LRP's global ranking)


AllocateFn = Callable[[AllocationInputs, float], dict[str, float]]


@dataclass(frozen=True)
class LayerAllocation:
    """A rule that spreads a target sparsity over the layers (their weighted mean is exact)."""

    allocate: AllocateFn
    needs_stats: bool  # activation statistics of the calibration data
    needs_truth: bool = False  # true/false statement sets (--truth-dir)
    needs_tokens: bool = False  # the calibration windows themselves, without their statistics

    @property
    def reads_calibration(self) -> bool:
        """Whether the allocation reads the calibration windows at all (as statistics or whole)."""
        return self.needs_stats or self.needs_tokens


def _uniform(inputs: AllocationInputs, sparsity: float) -> dict[str, float]:
    return uniform_sparsities(inputs.layout, sparsity)


def _owl(inputs: AllocationInputs, sparsity: float) -> dict[str, float]:
    if inputs.stats is None:
        raise ValueError("OWL allocation needs activation statistics")
    return owl_sparsities(inputs.layout, inputs.stats, sparsity)


def _tplo(inputs: AllocationInputs, sparsity: float) -> dict[str, float]:
    from paretoprune.evaluators.truth import tplo_sparsities  # it builds on OWL, defined here
    from paretoprune.truth import load_statements, truth_dir

    if inputs.stats is None or inputs.model is None:
        raise ValueError("TPLO allocation needs the model and its activation statistics")
    sets = load_statements(truth_dir(inputs.truth_dir))
    return tplo_sparsities(inputs.model, inputs.layout, inputs.stats, inputs.tokenizer, sets, sparsity)


LAYER_ALLOCATIONS: Registry[LayerAllocation] = Registry("layer allocation", option="--allocation")
LAYER_ALLOCATIONS.register("uniform", LayerAllocation(_uniform, needs_stats=False),
                           summary="every layer at the target sparsity")
LAYER_ALLOCATIONS.register("owl", LayerAllocation(_owl, needs_stats=True),
                           summary="OWL: blocks with more activation outliers keep more weights")
LAYER_ALLOCATIONS.register(
    "tplo", LayerAllocation(_tplo, needs_stats=True, needs_truth=True),
    summary="TPLO: OWL below the block that best separates true from false statements, less sparsity "
    "where they separate best above it (--truth-dir)",
)  # fmt: skip


def _lrp(inputs: AllocationInputs, sparsity: float) -> dict[str, float]:
    from paretoprune.lrp import lrp_sparsities  # its code loads only when this allocation is asked for

    if inputs.model is None or inputs.tokens is None:
        raise InputError("--allocation lrp needs the model and its calibration windows")
    return lrp_sparsities(inputs.model, inputs.layout, inputs.tokens, sparsity)


LAYER_ALLOCATIONS.register(
    "lrp", LayerAllocation(_lrp, needs_stats=False, needs_tokens=True),  # relevance from its own passes
    summary="LRP: the paper's global ranking, each layer's share of the least relevant weights of the whole "
    "model (mean |LRP relevance| on the calibration windows; llama, mistral, qwen2)",
)  # fmt: skip


def layer_sparsities(
    layout: ModelLayout,
    sparsity: float,
    allocation: str,
    stats: Mapping[str, ChannelStats] | None = None,
    **extra: Any,
) -> dict[str, float]:
    """Each layer's sparsity under the registered ``allocation`` rule; ``extra`` fills the other
    fields of :class:`AllocationInputs` (model, tokenizer, truth_dir) for rules that need them."""
    rule = LAYER_ALLOCATIONS.lookup(allocation)
    return rule.allocate(AllocationInputs(layout, stats, **extra), sparsity)


# --------------------------------------------------------------------------------------------
# Masks


def keep_mask(
    matrix: torch.Tensor,
    act_norm: torch.Tensor | None,
    metric: MetricSpec,
    sparsity: float,
    structure: str = "unstructured",
    group: str = "row",
    layer_name: str = "this layer",
    grad: torch.Tensor | None = None,
) -> torch.Tensor:
    """Which weights of one [out, in] matrix survive (True = keep) under a scoring rule;
    ``grad`` is the regional gradient a rule with a gradient term reads."""
    if metric.uses_activations and act_norm is None:
        raise ValueError(f"metric {metric.name} needs activation statistics for {layer_name}")
    scores = compute_scores(matrix.float(), act_norm if metric.uses_activations else None, metric,
                            grad if metric.uses_gradients else None)  # fmt: skip
    return masks.keep_mask(scores, sparsity, parse_structure(structure), group, layer_name)


def _scores(linear: PrunableLinear, stats: ChannelStats | None, metric: MetricSpec,
            matrix: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """The rule's scores of the linear's weight (or of ``matrix``, the weight as it is now)."""
    act_norm = stats.act_norm if (stats is not None and metric.uses_activations) else None
    if metric.uses_activations and act_norm is None:
        raise ValueError(f"metric {metric.name} needs activation statistics for {linear.name}")
    weight = linear.weight_matrix() if matrix is None else matrix
    return compute_scores(weight.float(), act_norm, metric, _gradients(linear, stats, metric))


def _gradients(linear: PrunableLinear, stats: ChannelStats | None, metric: MetricSpec) -> torch.Tensor | None:
    """The regional gradient of a linear for a rule with a gradient term, else None."""
    if not metric.uses_gradients:
        return None
    if stats is None or not stats.has_gradients:
        raise InputError(f"metric {metric.name} has a gradient term: {linear.name} needs regional gradients "
                         "(gathered while pruning with calibration data)")  # fmt: skip
    return stats.regional_grad


def check_candidate(layout: ModelLayout, candidate: Candidate) -> None:
    """Refuse, with one clear line, a candidate that cannot apply to this model."""
    unknown = sorted(set(candidate.sparsities) - set(layout.names))
    if unknown:
        raise InputError(
            f"{len(unknown)} layer name(s) not in this model, e.g. {unknown[0]}: "
            "the sparsities were made for another model"
        )
    for name, value in candidate.sparsities.items():
        _check_sparsity(value, f"sparsity of {name}")
    if candidate.group not in masks.GROUPS:
        raise InputError(f"comparison group {candidate.group!r} is unknown: use row or layer")
    structure = parse_structure(candidate.structure)
    for linear in layout.linears:
        check_structure_fits(linear.in_features, structure, linear.name)
    check_chain(tuple(candidate.solvers))
    _check_rows(candidate, structure)


def _check_rows(candidate: Candidate, structure: tuple[int, int] | None) -> None:
    rows = ROW_ALLOCATIONS.lookup(candidate.rows)
    if structure is not None and "N:M" not in rows.structures:
        raise InputError(f"--rows {candidate.rows} shares a layer's sparsity among its rows, which N:M fixes "
                         f"already: use --rows uniform with --structure {candidate.structure}")  # fmt: skip
    if candidate.rows != "uniform" and candidate.group != "row":
        raise InputError(f"--rows {candidate.rows} works on per-row comparison (group row), not {candidate.group}")


def _check_sparsity(value: float, what: str) -> None:
    if not 0.0 <= float(value) < 1.0:
        raise InputError(f"{what} is {value}: it must be in [0, 1), e.g. 0.5 for half the weights")


# --------------------------------------------------------------------------------------------
# Driver


def prune_model(
    model: nn.Module,
    layout: ModelLayout,
    candidate: Candidate,
    tokens: torch.Tensor | None = None,
    *,
    method: str = "metric",
    update: bool = False,
    sequential: bool = False,
    batch_size: int = 8,
    progress: bool = True,
    scores: ScoreMap | None = None,
    regional: RegionalSettings = RegionalSettings(),
) -> PruneReport:
    """Prune ``model`` in place as ``candidate`` says and report the sparsity reached.

    ``method="metric"`` drops the lowest-scoring weights of the candidate's metric (shared among
    each layer's rows by its row allocation), then runs the candidate's solvers in order;
    ``update`` appends SparseGPT's update to them. ``method="sparsegpt"`` uses SparseGPT at the
    candidate's sparsities and structure. ``tokens`` (calibration windows) are needed unless the
    metric ignores activations and no solver or row allocation reads calibration data.
    ``scores`` (a global rule's score map, see :mod:`paretoprune.global_scores`) replaces the
    metric's scores layer by layer. ``regional`` sets the ``regional`` block solver's steps.
    """
    if method not in ("metric", "sparsegpt"):
        raise InputError(f"unknown pruning method {method!r}: use metric or sparsegpt")
    chain = check_chain(tuple(candidate.solvers) + (("update",) if update and "update" not in candidate.solvers else ()))
    if chain and method == "sparsegpt":
        raise InputError("--update and --solver go with a scoring rule: SparseGPT already updates the weights it keeps")
    check_candidate(layout, candidate)
    if scores is not None:
        check_score_map(scores, layout)
    rows = ROW_ALLOCATIONS.lookup(candidate.rows)
    started = time.perf_counter()
    needs = _Needs(
        hessian=method == "sparsegpt" or any(SOLVERS[name].needs_hessian for name in chain),
        last_tokens=rows.needs_inputs,
        gradients=scores is None and candidate.metric.uses_gradients,
        block_io=bool(block_chain(chain)),
    )
    needs_data = needs.any or (scores is None and candidate.metric.uses_activations)
    if needs_data and tokens is None:
        raise InputError("this pruner needs calibration data: pass --calib SRC")
    prune = partial(_prune_linear, candidate=candidate, method=method, chain=layer_chain(chain), scores=scores)
    if needs_data:
        steps = walk_blocks(model, layout, tokens, batch_size=batch_size, hessian=needs.hessian,
                            propagate="pruned" if sequential else "dense", last_tokens=needs.last_tokens,
                            gradients=needs.gradients, block_io=needs.block_io)  # fmt: skip
        for step in tqdm(steps, total=len(layout.blocks), desc="pruning", disable=not progress):
            kept = {linear.name: prune(linear, step.stats[linear.name]) for linear in step.linears}
            if needs.block_io:
                _solve_block(step, {name: keep for name, keep in kept.items() if keep is not None},
                             candidate, scores, regional)  # fmt: skip
    else:
        for linear in tqdm(layout.linears, desc="pruning", disable=not progress):
            prune(linear, None)
    return measure_sparsity(layout, seconds=time.perf_counter() - started)


@dataclass(frozen=True)
class _Needs:
    """What the calibration walk must gather besides the input norms."""

    hessian: bool  # X X^T per layer: SparseGPT and the solvers
    last_tokens: bool  # each sequence's last input: row allocations such as TRIM
    gradients: bool = False  # regional gradients: scoring rules with a gradient term (Wanda++)
    block_io: bool = False  # each block's inputs and dense outputs: block solvers (regional)

    @property
    def any(self) -> bool:
        return self.hessian or self.last_tokens or self.gradients or self.block_io


def _solve_block(
    step: BlockStep,
    kept: dict[str, torch.Tensor],
    candidate: Candidate,
    scores: ScoreMap | None,
    settings: RegionalSettings,
) -> None:
    """The block solver (Wanda++'s RO) on a pruned block, re-pruning with the rule that chose
    its masks: the candidate's scoring rule on the moved weights, or a global rule's fixed scores."""
    from paretoprune.evaluators.regional import regional_optimise  # it runs the block, a layer above the math

    def rescore(linear: PrunableLinear, matrix: torch.Tensor) -> torch.Tensor:
        if scores is not None:
            return scores[linear.name].to(matrix.device, torch.float32)
        return _scores(linear, step.stats[linear.name], candidate.metric, matrix)

    structure = parse_structure(candidate.structure)
    regional_optimise(step, kept, rescore, structure, candidate.group, settings)


def _prune_linear(
    linear: PrunableLinear,
    stats: ChannelStats | None,
    *,
    candidate: Candidate,
    method: str,
    chain: tuple[str, ...],
    scores: ScoreMap | None = None,
) -> torch.Tensor | None:
    """Prune one linear in place; its keep mask, or None when it stays dense or SparseGPT chose
    the mask. ``chain`` holds the layer solvers only."""
    sparsity = candidate.sparsities.get(linear.name, 0.0)
    nm = parse_structure(candidate.structure)
    if sparsity == 0.0 and nm is None:
        return None
    weight = linear.weight_matrix()
    if method == "sparsegpt":
        assert stats is not None
        pruned = sparsegpt_prune(weight.float(), stats.hessian(), sparsity, structure=nm)
        weight.copy_(pruned.to(weight.dtype))
        return None
    given = None if scores is None else scores[linear.name]
    mask = _layer_mask(linear, weight, stats, candidate, sparsity, given)
    if chain:
        assert stats is not None
        solved, mask = run_chain(chain, weight.float(), mask, stats.hessian())
        weight.copy_(solved.to(weight.dtype))
        return mask
    weight.mul_(mask.to(weight.dtype))
    return mask


def _layer_mask(
    linear: PrunableLinear,
    weight: torch.Tensor,
    stats: ChannelStats | None,
    candidate: Candidate,
    sparsity: float,
    given: torch.Tensor | None = None,
) -> torch.Tensor:
    """The keep mask of one layer: the rule's scores (or the ``given`` ones of a global rule),
    shared among rows by the row allocation."""
    act_norm = stats.act_norm if stats is not None else None
    if candidate.rows == "uniform" and given is None:
        grad = _gradients(linear, stats, candidate.metric)
        return keep_mask(weight, act_norm, candidate.metric, sparsity, candidate.structure, candidate.group,
                         linear.name, grad)  # fmt: skip
    if given is not None:
        scores = given.to(weight.device, torch.float32)
    else:
        scores = _scores(linear, stats, candidate.metric, weight)
    if candidate.rows == "uniform":
        return masks.keep_mask(scores, sparsity, parse_structure(candidate.structure), candidate.group, linear.name)
    assert stats is not None
    counts = allocated_row_counts(candidate.rows, weight, scores, stats.last_token_inputs(), sparsity)
    return keep_mask_with_row_counts(scores, counts)


def measure_sparsity(layout: ModelLayout, seconds: float = 0.0) -> PruneReport:
    """Read the fraction of zero weights back from the model itself."""
    layers: dict[str, float] = {}
    zeros = 0
    for linear in layout.linears:
        count = int((linear.weight_matrix() == 0).sum())
        layers[linear.name] = count / linear.numel
        zeros += count
    return PruneReport(layers=layers, sparsity=zeros / layout.total_numel, seconds=seconds)

