"""A measured row of the perplexity studies: a pruned model, its sparsity and perplexities."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.plan import Pruning
from benchmarks.table import column

__all__ = ["EVALUATION_SETS", "Measurement", "SearchFacts"]

# The evaluation sets a measurement may score, by the prefix of their column.
EVALUATION_SETS = ("wikitext2", "ptb", "c4")


@dataclass(frozen=True)
class SearchFacts:
    """The search behind a searched recipe: the same in every row measured from that recipe."""

    candidates: int  # evaluations in the run's archive, failed ones included
    failed: int
    search_minutes: float = column(".1f")  # wall clock of all its sessions
    fitness_minutes: float = column(".1f")  # the evaluations' own seconds, summed
    recipe: str  # the recipe file, relative to the results folder
    eval_id: int  # the front member picked
    kl: float = column(".6f")  # its fitness
    rule: str  # its scoring rule, as the recipe describes it
    layer_min: float = column(".4f")  # its lowest layer sparsity
    layer_max: float = column(".4f")  # and its highest


@dataclass(frozen=True)
class Measurement:
    pruning: Pruning  # how the model was pruned (the planned row it answers)
    achieved_sparsity: float = column(".6f")  # zeros among the prunable weights, read back
    wikitext2_ppl: float = column(".4f")
    ptb_ppl: float | None = column(".4f")  # None: the study does not score this set
    c4_ppl: float | None = column(".4f")
    prune_seconds: float = column(".1f")  # what pruning this row cost on its own
    eval_seconds: float = column(".1f")  # the perplexity passes
    search: SearchFacts | None = None  # searched rows only

    def perplexity(self, name: str) -> float | None:
        """The perplexity on one of ``EVALUATION_SETS``."""
        return getattr(self, f"{name}_ppl")
