"""A freshly loaded model, pruned as a plan row says: by a known pruner or by a recipe."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from paretoprune.candidate import Candidate
from paretoprune.evaluators.stats import collect_stats
from paretoprune.metrics.masks import parse_structure
from paretoprune.metrics.scores import SCORING_RULES
from paretoprune.models import LoadedModel, ModelLayout, find_layout, load_model
from paretoprune.pruning import LAYER_ALLOCATIONS, AllocationInputs, PruneReport, measure_sparsity, prune_model
from paretoprune.recipe import Recipe
from paretoprune.workflows import MASK_SOLVERS, apply_recipe

from benchmarks.plan import Pruning
from benchmarks.workbench import Workbench

__all__ = ["Pruned", "baseline_candidate", "prune_baseline", "prune_fresh"]


@dataclass
class Pruned:
    loaded: LoadedModel
    sparsity: float  # achieved: the zeros among the prunable weights, read back
    seconds: float  # what pruning cost, statistics and calibration passes included


def prune_fresh(pruning: Pruning, workbench: Workbench, recipe: Recipe | None = None) -> Pruned:
    """Load the model and prune it; a searched row applies ``recipe``."""
    loaded = load_model(workbench.model)
    started = time.perf_counter()
    if pruning.kind == "dense":
        return Pruned(loaded, measure_sparsity(find_layout(loaded.model)).sparsity, 0.0)
    if pruning.kind == "search":
        assert recipe is not None, "a searched row needs its recipe"
        report = apply_recipe(loaded.model, recipe, workbench.calibration, pruner=pruning.pruner,
                              update=pruning.update, sequential=pruning.calibration == "sequential",
                              progress=False)  # fmt: skip
    else:
        report = prune_baseline(loaded.model, pruning, workbench.calibration, workbench.batch_size)
    return Pruned(loaded, report.sparsity, time.perf_counter() - started)


def prune_baseline(model: nn.Module, pruning: Pruning, tokens: torch.Tensor, batch_size: int) -> PruneReport:
    """Prune ``model`` in place with a known pruner, as ``paretoprune prune`` would."""
    layout = find_layout(model)
    candidate = baseline_candidate(model, layout, pruning, tokens, batch_size)
    return prune_model(model, layout, candidate, tokens, update=pruning.update,
                       method="sparsegpt" if pruning.pruner in MASK_SOLVERS else "metric",
                       sequential=pruning.calibration == "sequential", batch_size=batch_size,
                       progress=False)  # fmt: skip


def baseline_candidate(model: nn.Module, layout: ModelLayout, pruning: Pruning, tokens: torch.Tensor,
                       batch_size: int) -> Candidate:  # fmt: skip
    """The rule and per-layer sparsities of a baseline (SparseGPT picks its own masks:
    magnitude stands in). An allocation that reads statistics reads the dense model's."""
    rule = SCORING_RULES["magnitude" if pruning.pruner in MASK_SOLVERS else pruning.pruner]
    if parse_structure(pruning.structure) is not None:
        sparsities = {name: pruning.target_sparsity for name in layout.names}
        return Candidate(metric=rule, sparsities=sparsities, structure=pruning.structure)
    allocation = LAYER_ALLOCATIONS.lookup(pruning.source)
    stats = collect_stats(model, layout, tokens, batch_size=batch_size) if allocation.needs_stats else None
    inputs = AllocationInputs(layout, stats, model=model)
    return Candidate(metric=rule, sparsities=allocation.allocate(inputs, pruning.target_sparsity))
