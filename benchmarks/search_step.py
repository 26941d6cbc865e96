"""How the rows of a search get their recipes: the search run or resumed, its picks exported.

When the run folder is gone but every pick was exported and measured before, the search is not
run again: the missing rows apply the recipes exported then.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from paretoprune.recipe import Recipe, load_recipe

from benchmarks.measurement import SearchFacts
from benchmarks.plan import Pruning
from benchmarks.search_figures import SearchFigures
from benchmarks.search_runs import ensure_search, export_pick, run_archive, search_facts
from benchmarks.searches import Budget, SearchSpec
from benchmarks.workbench import Workbench

__all__ = ["RecipeSource", "SearchStep"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecipeSource:
    recipe: Recipe
    facts: SearchFacts | None  # None where the study keeps no search facts


@dataclass
class SearchStep:
    out: Path  # the study's results folder: recipes/ goes there
    runs: Path  # the run folders
    workbench: Workbench
    budget: Budget
    seed: int
    stats: tuple[int, int] | None  # the pruning statistics' windows (None: the fitness windows)
    earlier_facts: Callable[[str, float], SearchFacts | None]  # from rows measured before
    needs_facts: bool  # the study's rows record the search facts
    figures: SearchFigures | None = None  # the searched study's curves and fronts

    def recipes(self, spec: SearchSpec, todo: Sequence[Pruning]) -> dict[float, RecipeSource]:
        """Each pick's recipe by level, for the rows in ``todo``; a search whose folder exists is
        resumed (and its figures updated) even with nothing to measure."""
        run_dir = self.runs / spec.name
        if not (run_dir / "config.yaml").exists():
            if not todo:
                return {}
            earlier = self._exported_before(spec)
            if earlier is not None:
                logger.info("%s: measuring from the recipes exported before", spec.name)
                return earlier
        settings = spec.settings(self.workbench.model, self.budget, self.seed, run_dir,
                                 self.workbench.calibration_file, self.stats)  # fmt: skip
        ensure_search(spec, settings, run_dir)
        frame = run_archive(run_dir)
        if self.figures is not None:
            self.figures.after_search(spec, run_dir, frame)
        if not todo:
            return {}
        sources = {}
        for pick in spec.picks():
            exported = export_pick(spec, pick, run_dir, self.out)
            if self.figures is not None:
                self.figures.after_export(spec, exported)
            sources[pick.level] = RecipeSource(exported.recipe, search_facts(run_dir, frame, exported, self.out))
        return sources

    def _exported_before(self, spec: SearchSpec) -> dict[float, RecipeSource] | None:
        """Every pick's recipe file and the facts its measured rows recorded; None unless all."""
        sources = {}
        for pick in spec.picks():
            path = self.out / "recipes" / f"{pick.name}.yaml"
            facts = self.earlier_facts(spec.name, pick.level)
            if not path.exists() or (self.needs_facts and facts is None):
                return None
            sources[pick.level] = RecipeSource(load_recipe(path), facts)
        return sources
