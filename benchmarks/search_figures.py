"""What a finished search adds to the searched study besides rows: its front plot, its kl and
perplexity curves, and where its recipe puts the sparsity (the searched page draws them)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks.allocations import block_sparsities, record_allocation
from benchmarks.kl_curves import record_kl_points
from benchmarks.ppl_curves import CurveScorer, record_ppl_points
from benchmarks.search_runs import Exported, copy_front_plot
from benchmarks.searches import SearchSpec
from benchmarks.workbench import Workbench

__all__ = ["SearchFigures"]


class SearchFigures:
    def __init__(self, out: Path, workbench: Workbench) -> None:
        self.out, self.workbench = out, workbench
        self._scorer: CurveScorer | None = None

    def scorer(self) -> CurveScorer:
        """The perplexity-curve scorer, built on first use (a model and its statistics)."""
        if self._scorer is None:
            bench = self.workbench
            self._scorer = CurveScorer(bench.model, bench.calibration, bench.evaluation["wikitext2"], bench.batch_size)
        return self._scorer

    def after_search(self, spec: SearchSpec, run_dir: Path, frame: pd.DataFrame) -> None:
        """The front plot and the curves; cached perplexity points cost nothing."""
        copy_front_plot(spec, run_dir, self.out)
        record_kl_points(self.out / "curves.csv", spec, frame)
        for level in spec.ppl_levels:
            record_ppl_points(self.out / "ppl_curves.csv", spec.name, level, frame, self.scorer(),
                              ranged=spec.sparsity_range is not None)  # fmt: skip

    def after_export(self, spec: SearchSpec, exported: Exported) -> None:
        """At one fixed unstructured level, the allocation is what the search found."""
        if spec.has_ppl_curve:
            sparsities = block_sparsities(exported.recipe, self.scorer().layout)
            record_allocation(self.out / "allocations.csv", spec.name, spec.target, sparsities)
