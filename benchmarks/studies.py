"""The studies that measure the plan's rows: what each scores, with which budget, and where.

``python -m benchmarks STUDY`` runs one of them. Each measures the plan rows of its name
(``plan.PLAN``) into ``results/<folder>/<table>`` and renders the page beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from paretoprune.errors import InputError

from benchmarks.searches import Budget

__all__ = ["REPO_ROOT", "RESULTS", "STUDIES", "Study", "study_named"]

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "results"


@dataclass(frozen=True)
class Study:
    name: str  # the command word, and the ``study`` of its plan rows
    folder: str  # its results folder, under results/
    table: str  # the CSV of its measured rows, in that folder
    sets: tuple[str, ...] = ()  # the evaluation sets whose perplexity it scores
    zero_shot: bool = False  # it scores zero-shot tasks instead
    budget: Budget | None = None  # each of its searches' (None: it runs no search)
    # Its searches take their pruning statistics from the calibration windows the recipes are
    # applied with (else from their own fitness windows).
    search_stats: bool = True
    # Its searches also leave front plots, kl and perplexity curves and block allocations.
    search_figures: bool = False
    runs: str = ""  # its searches' run folders, under runs/

    @property
    def results(self) -> Path:
        return RESULTS / self.folder


STUDIES = {
    "baselines": Study("baselines", "baselines", "baselines.csv", sets=("wikitext2",)),
    "searched": Study("searched", "smollm2-135m", "searched.csv", sets=("wikitext2", "ptb", "c4"), budget=Budget(),
                      search_figures=True, runs="bench-search"),  # fmt: skip
    "zeroshot": Study("zeroshot", "zeroshot", "zeroshot.csv", zero_shot=True, budget=Budget(pop=12, generations=5),
                      search_stats=False, runs="bench-zeroshot"),  # fmt: skip
}


def study_named(name: str) -> Study:
    if name not in STUDIES:
        raise InputError(f"no study is named {name!r}; the studies are {', '.join(STUDIES)}")
    return STUDIES[name]
