"""A Candidate: one complete way to prune a model.

It is what the search proposes, what the evaluator scores, what the pruner applies and what a
recipe stores: a scoring rule (a point of the meta-metric family, or a global rule that scores
the whole model at once), a structure (unstructured or N:M), the comparison group, and the
fraction of weights to prune in each prunable linear.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from paretoprune.metrics.scores import MetricSpec

__all__ = ["Candidate"]


@dataclass(frozen=True)
class Candidate:
    metric: MetricSpec
    # Fraction of weights pruned, by the linear's module name (as in model.named_modules()).
    sparsities: Mapping[str, float] = field(default_factory=dict)
    # "unstructured", or "N:M" (N weights kept in every M consecutive inputs of a row).
    structure: str = "unstructured"
    # Comparison group of the scores: "row" (one output row, as Wanda) or "layer" (whole matrix).
    group: str = "row"
    # How each layer's sparsity is shared among its rows: a registered row allocation.
    rows: str = "uniform"
    # Layer solvers run after the mask, in order (e.g. ("fw", "update")); empty: none.
    solvers: tuple[str, ...] = ()
    # A registered global scoring rule (paretoprune.global_scores: lrp, unipruning, ...): the
    # masks rank that rule's score map of the dense model instead of the metric's scores, and
    # the metric is then only a label. None: the metric's scores.
    global_rule: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric.to_dict(),
            "sparsities": {name: float(value) for name, value in self.sparsities.items()},
            "structure": self.structure,
            "group": self.group,
            # Written only when set, so that archives and recipes of plain candidates stay as they were.
            **({"rows": self.rows} if self.rows != "uniform" else {}),
            **({"solvers": list(self.solvers)} if self.solvers else {}),
            **({"global_rule": self.global_rule} if self.global_rule is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Candidate":
        return cls(
            metric=MetricSpec.from_dict(data["metric"]),
            sparsities=dict(data["sparsities"]),
            structure=data.get("structure", "unstructured"),
            group=data.get("group", "row"),
            rows=data.get("rows", "uniform"),
            solvers=tuple(data.get("solvers", ())),
            global_rule=data.get("global_rule"),
        )
