"""Best WikiText-2 perplexity against candidates evaluated: convergence in the unit users read.

The searches minimise ``kl`` on C4 tokens. This asks what the best recipe so far is worth on
held-out text after n candidates: for a few counts n, the candidate with the lowest ``kl``
among the first n is pruned one-shot (its own rule, the study's calibration windows) and scored
on the WikiText-2 windows, which only measure; ``kl`` alone picks. For a range search, at each
level, the pick is what ``export --pick sparsity:LEVEL`` would give from the front of the first
n candidates: the member nearest to the level.

Points are cached in ``ppl_curves.csv`` by (search, eval_id), so a point costs one evaluation
the first time only. A cached point counts only while its ``best_kl`` is the run's: a search
run again from scratch may put another candidate under the same eval_id.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.evaluators.fitness import CandidateEvaluator
from paretoprune.evaluators.perplexity import perplexity
from paretoprune.evaluators.stats import collect_stats
from paretoprune.models import find_layout, load_model
from paretoprune.search.export import pick
from paretoprune.search.pareto import Objectives

from benchmarks.labels import search_label
from benchmarks.plots import Figure, Panel, lines_by_label, panel_title
from benchmarks.table import column, read_table, replace_rows

__all__ = ["CURVE_POINTS", "BestSoFar", "CurveScorer", "PplPoint", "best_so_far", "ppl_figure", "record_ppl_points"]

# Candidate counts at which the best-so-far recipe is scored (the last is the whole budget).
CURVE_POINTS = (16, 48, 96, 160, 240)
# How far a cached point's kl may be from the run's and still be the same candidate: the same
# candidate scored again differs in the last digits only (threads sum in another order).
SAME_KL = 1e-4


@dataclass(frozen=True)
class PplPoint:
    search: str
    level: float = column("g")
    candidates: int  # the first n evaluations
    eval_id: int  # the lowest-kl successful one among them
    best_kl: float = column(".6f")
    wikitext2_ppl: float = column(".4f")  # of that candidate's model, pruned one-shot


@dataclass(frozen=True)
class BestSoFar:
    candidates: int  # the first n evaluations of the archive, in evaluation order
    eval_id: int  # the lowest-kl successful one among them
    kl: float


# A range search's objectives, whose front a level's pick is taken from.
RANGE_OBJECTIVES = Objectives(["kl", "sparsity"])


def best_so_far(frame: pd.DataFrame, counts: Sequence[int], level: float | None = None) -> list[BestSoFar]:
    """The pick among the first n candidates, for each n in ``counts`` below the archive's size,
    and for the whole archive: the lowest-``kl`` success, or with a ``level`` (a range search),
    the front member nearest to it (none while the front does not reach near the level)."""
    frame = frame.sort_values("eval_id").reset_index(drop=True)
    found = []
    for count in sorted({n for n in counts if n < len(frame)} | {len(frame)}):
        head = frame.iloc[:count]
        head = head[head["status"] == "ok"]
        best = _picked(head, level) if len(head) else None
        if best is not None:
            found.append(BestSoFar(count, int(best["eval_id"]), float(best["kl"])))
    return found


def _picked(head: pd.DataFrame, level: float | None) -> pd.Series | None:
    if level is None:
        return head.loc[head["kl"].idxmin()]
    front = RANGE_OBJECTIVES.front(head)
    try:
        return front.iloc[pick(front, RANGE_OBJECTIVES, f"sparsity:{level:g}")]
    except InputError:  # no front member near enough to the level yet
        return None


class CurveScorer:
    """One model with one-shot statistics from the calibration windows; it scores candidates on
    WikiText-2 by masking (the weights are never changed), as the pruned model would score."""

    def __init__(self, model_spec: str, calibration: torch.Tensor, windows: torch.Tensor, batch_size: int) -> None:
        loaded = load_model(model_spec)
        self.model, self.layout = loaded.model, find_layout(loaded.model)
        stats = collect_stats(self.model, self.layout, calibration)
        self._evaluator = CandidateEvaluator(self.model, self.layout, stats, calibration[:1], objectives=("sparsity",))
        self.windows, self.batch_size = windows, batch_size

    def perplexity(self, candidate: Candidate) -> float:
        with self._evaluator.applied(candidate), torch.inference_mode():
            return perplexity(self.model, self.windows, batch_size=self.batch_size, progress=False).perplexity


def record_ppl_points(path: Path, search: str, level: float, frame: pd.DataFrame,
                      scorer: CurveScorer | None, ranged: bool = False) -> list[PplPoint]:  # fmt: skip
    """Score this search's missing points at ``level`` (``scorer`` None: keep the cached ones
    only) and rewrite ``path``; returns every point of the file. ``ranged``: the search's
    objectives are kl and sparsity, and each level takes its pick from the front."""
    cached = {(point.search, point.eval_id): point for point in read_table(path, PplPoint)}
    candidates = frame.set_index("eval_id")["candidate"]
    mine = []
    for best in best_so_far(frame, CURVE_POINTS, level if ranged else None):
        ppl = _cached_ppl(cached.get((search, best.eval_id)), best.kl)
        if ppl is None and scorer is not None:
            ppl = scorer.perplexity(Candidate.from_dict(json.loads(candidates[best.eval_id])))
        if ppl is not None:
            mine.append(PplPoint(search, level, best.candidates, best.eval_id, best.kl, ppl))
    return replace_rows(path, PplPoint, lambda point: (point.search, point.level) != (search, level), mine,
                        lambda point: (point.level, point.search, point.candidates))  # fmt: skip


def _cached_ppl(point: PplPoint | None, kl: float) -> float | None:
    """The cached perplexity, if the cached point is this candidate (its kl matches)."""
    if point is None or not math.isclose(point.best_kl, kl, rel_tol=SAME_KL, abs_tol=SAME_KL):
        return None
    return point.wikitext2_ppl


def ppl_figure(points: Sequence[PplPoint], references: Mapping[float, Mapping[str, float]]) -> Figure:
    """One panel per level, a line per search (log scale), the uniform baselines dashed."""
    panels = []
    for level in sorted({point.level for point in points}):
        here = [(search_label(p.search), p.candidates, p.wikitext2_ppl) for p in points if p.level == level]
        panels.append(Panel(panel_title("unstructured", level), lines_by_label(here),
                            tuple(references.get(level, {}).items())))  # fmt: skip
    return Figure("candidates evaluated", "WikiText-2 perplexity of the best-kl recipe so far", panels, log_y=True)
