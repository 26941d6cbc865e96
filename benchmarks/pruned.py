"""A freshly loaded model, pruned as a plan row says: by a known pruner or by a recipe."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from paretoprune.candidate import Candidate
from paretoprune.evaluators.stats import collect_stats
from paretoprune.global_scores import GLOBAL_SCORES, cached_score_map
from paretoprune.metrics.masks import parse_structure
from paretoprune.metrics.scores import SCORING_RULES
from paretoprune.models import LoadedModel, ModelLayout, find_layout, load_model
from paretoprune.pruning import LAYER_ALLOCATIONS, AllocationInputs, PruneReport, measure_sparsity, prune_model
from paretoprune.recipe import Recipe
from paretoprune.workflows import MASK_SOLVERS, apply_recipe

from benchmarks.plan import Pruning
from benchmarks.workbench import Workbench

__all__ = ["BaselineExtras", "Pruned", "baseline_candidate", "prune_baseline", "prune_fresh"]


@dataclass(frozen=True)
class BaselineExtras:
    """What some pruners read besides the model and its calibration windows."""

    tokenizer: Any = None  # TPLO's statements are tokenized
    truth_dir: Path | None = None  # TPLO's true/false statement sets
    model_id: str = ""  # a global rule's score cache key (UniPruning, LRP)
    seed: int = 0  # the calibration seed, also part of that key


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
        solver = None if pruning.solvers == "none" else ",".join(pruning.chain)
        report = apply_recipe(loaded.model, recipe, workbench.calibration, pruner=pruning.pruner,
                              update=pruning.update, solver=solver, sequential=pruning.calibration == "sequential",
                              progress=False)  # fmt: skip
    else:
        extras = BaselineExtras(loaded.tokenizer, workbench.truth_dir, workbench.model, workbench.seed)
        report = prune_baseline(loaded.model, pruning, workbench.calibration, workbench.batch_size, extras)
    return Pruned(loaded, report.sparsity, time.perf_counter() - started)


def prune_baseline(model: nn.Module, pruning: Pruning, tokens: torch.Tensor, batch_size: int,
                   extras: BaselineExtras = BaselineExtras()) -> PruneReport:  # fmt: skip
    """Prune ``model`` in place with a known pruner, as ``paretoprune prune`` would: its layer
    and row allocations, a global rule's scores from the dense model, then its solver chain."""
    layout = find_layout(model)
    candidate = baseline_candidate(model, layout, pruning, tokens, batch_size, extras)
    return prune_model(model, layout, candidate, tokens, method="sparsegpt" if pruning.pruner in MASK_SOLVERS else "metric",
                       sequential=pruning.calibration == "sequential", batch_size=batch_size, progress=False,
                       scores=_global_scores(model, layout, pruning, tokens, extras))  # fmt: skip


def baseline_candidate(model: nn.Module, layout: ModelLayout, pruning: Pruning, tokens: torch.Tensor,
                       batch_size: int, extras: BaselineExtras = BaselineExtras()) -> Candidate:  # fmt: skip
    """The rule, per-layer sparsities, rows and solvers of a baseline (SparseGPT and the global
    rules bring their own scores: magnitude stands in). An allocation that reads statistics
    reads the dense model's."""
    rule = SCORING_RULES.get(pruning.pruner, SCORING_RULES["magnitude"])
    extra = {"rows": pruning.rows, "solvers": pruning.chain}
    if parse_structure(pruning.structure) is not None:
        sparsities = {name: pruning.target_sparsity for name in layout.names}
        return Candidate(metric=rule, sparsities=sparsities, structure=pruning.structure, **extra)
    allocation = LAYER_ALLOCATIONS.lookup(pruning.source)
    stats = collect_stats(model, layout, tokens, batch_size=batch_size) if allocation.needs_stats else None
    inputs = AllocationInputs(layout, stats, model=model, tokenizer=extras.tokenizer, truth_dir=extras.truth_dir,
                              tokens=tokens)  # fmt: skip
    return Candidate(metric=rule, sparsities=allocation.allocate(inputs, pruning.target_sparsity), **extra)


def _global_scores(model: nn.Module, layout: ModelLayout, pruning: Pruning, tokens: torch.Tensor,
                   extras: BaselineExtras) -> dict[str, torch.Tensor] | None:  # fmt: skip
    """A global rule's score map of the dense model, cached as ``prune --method`` caches it."""
    if pruning.pruner not in GLOBAL_SCORES:
        return None
    return cached_score_map(pruning.pruner, model, layout, tokens, model_id=extras.model_id, seed=extras.seed,
                            progress=False)  # fmt: skip
