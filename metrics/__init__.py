"""paretoprune.metrics: the pure tensor math of pruning (no I/O, no model).

- :mod:`.scores`: magnitude, Wanda, RIA and the meta-metric family (:class:`MetricSpec`).
- :mod:`.masks`: keep-masks per row, per layer and N:M, and the rank caches behind them.
- :mod:`.allocation`: per-layer sparsities (uniform, OWL, search genomes) at an exact mean.
- :mod:`.sparsegpt`: the SparseGPT solver (prune and reconstruct one linear).
- :mod:`.diagnostics`: ACBench's model-intrinsic diagnostics (ERank, top-k Kendall tau, energy).
"""

from __future__ import annotations

from paretoprune.metrics.allocation import (
    block_totals,
    expand_block_genes,
    genes_from_sparsities,
    outlier_ratio,
    owl_block_sparsities,
    repair_to_mean,
    sparsities_from_genes,
    uniform_sparsities,
    weighted_mean,
)
from paretoprune.metrics.diagnostics import (
    effective_rank,
    energy,
    kendall_tau,
    topk_kendall_tau,
    wasserstein_1d,
)
from paretoprune.metrics.masks import (
    check_sparsity,
    check_structure_fits,
    format_structure,
    keep_mask,
    keep_mask_from_nm_ranks,
    keep_mask_from_ranks,
    keep_mask_from_scores,
    keep_mask_without_lowest,
    layer_ranks,
    nm_keep_mask,
    nm_ranks,
    parse_structure,
    pruned_count,
    row_ranks,
)
from paretoprune.metrics.scores import KNOWN_METRICS, MetricSpec, compute_scores, metric_by_name
from paretoprune.metrics.sparsegpt import sparsegpt_prune

__all__ = [
    "KNOWN_METRICS",
    "MetricSpec",
    "block_totals",
    "check_sparsity",
    "check_structure_fits",
    "compute_scores",
    "effective_rank",
    "energy",
    "expand_block_genes",
    "format_structure",
    "genes_from_sparsities",
    "keep_mask",
    "keep_mask_from_nm_ranks",
    "keep_mask_from_ranks",
    "keep_mask_from_scores",
    "keep_mask_without_lowest",
    "kendall_tau",
    "layer_ranks",
    "metric_by_name",
    "nm_keep_mask",
    "nm_ranks",
    "outlier_ratio",
    "owl_block_sparsities",
    "parse_structure",
    "pruned_count",
    "repair_to_mean",
    "row_ranks",
    "sparsegpt_prune",
    "sparsities_from_genes",
    "topk_kendall_tau",
    "uniform_sparsities",
    "wasserstein_1d",
    "weighted_mean",
]
