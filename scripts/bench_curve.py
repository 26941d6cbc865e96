"""Best WikiText-2 perplexity against candidates evaluated: the searches' convergence in the
unit a user cares about.

The searches minimise ``kl`` on C4 tokens. This asks what the best recipe so far is worth on
held-out text after *n* candidates: for each of a few counts *n*, the candidate with the lowest
``kl`` among the first *n* is pruned one-shot (its own rule, the table's calibration windows)
and scored on the WikiText-2 windows. WikiText-2 only measures here; ``kl`` alone picks.

Used by ``scripts/bench_search.py`` after each search at a fixed unstructured sparsity; the
rows are cached in ``ppl_curves.csv`` by (search, eval_id), so a point costs one evaluation
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
from paretoprune.evaluators.fitness import CandidateEvaluator
from paretoprune.evaluators.perplexity import perplexity
from paretoprune.evaluators.stats import collect_stats
from paretoprune.models import find_layout, load_model

from bench_io import lines_by_search, panel_row, read_rows, save_figure_atomic, write_rows

__all__ = ["CURVE_POINTS", "PPL_CURVE_COLUMNS", "CurveScorer", "best_so_far", "plot_ppl_curves", "update_ppl_curve"]

# Candidate counts at which the best-so-far recipe is scored (the last is the whole budget).
CURVE_POINTS = (16, 48, 96, 160, 240)
# How far a cached point's kl may be from the run's and still be the same candidate: the same
# candidate scored again differs in the last digits only (threads sum in another order).
SAME_KL = 1e-4
PPL_CURVE_COLUMNS = ("search", "level", "candidates", "eval_id", "best_kl", "wikitext2_ppl")


@dataclass(frozen=True)
class Point:
    candidates: int  # the first n evaluations of the archive, in evaluation order
    eval_id: int  # the lowest-kl successful one among them
    kl: float


def best_so_far(frame: pd.DataFrame, points: Sequence[int]) -> list[Point]:
    """The lowest-``kl`` successful candidate among the first *n*, for each *n* in ``points``
    below the archive's size and for the whole archive."""
    frame = frame.sort_values("eval_id").reset_index(drop=True)
    found = []
    for count in sorted({n for n in points if n < len(frame)} | {len(frame)}):
        head = frame.iloc[:count]
        head = head[head["status"] == "ok"]
        if len(head):
            best = head.loc[head["kl"].idxmin()]
            found.append(Point(count, int(best["eval_id"]), float(best["kl"])))
    return found


class CurveScorer:
    """One model with one-shot statistics from the calibration windows, scoring candidates on
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


def update_ppl_curve(
    path: Path, search: str, level: float, frame: pd.DataFrame, scorer: CurveScorer | None
) -> list[dict[str, str]]:
    """Score this search's missing points (scorer None: only report the cached ones) and
    rewrite ``path``; returns every row of the file."""
    rows = read_rows(path)
    cached = {(row["search"], row["eval_id"]): row for row in rows}
    kept = [row for row in rows if row["search"] != search]
    candidates = frame.set_index("eval_id")["candidate"]
    mine = []
    for point in best_so_far(frame, CURVE_POINTS):
        ppl = _cached_ppl(cached.get((search, str(point.eval_id))), point.kl)
        if ppl is None and scorer is not None:
            candidate = Candidate.from_dict(json.loads(candidates[point.eval_id]))  # the archive stores JSON
            ppl = f"{scorer.perplexity(candidate):.4f}"
        if ppl is not None:
            mine.append({"search": search, "level": f"{level:g}", "candidates": str(point.candidates),
                         "eval_id": str(point.eval_id), "best_kl": f"{point.kl:.6f}", "wikitext2_ppl": ppl})  # fmt: skip
    rows = sorted([*kept, *mine], key=lambda row: (row["level"], row["search"], int(row["candidates"])))
    write_rows(path, rows, PPL_CURVE_COLUMNS)
    return rows


def _cached_ppl(row: Mapping[str, str] | None, kl: float) -> str | None:
    """The cached perplexity, if the cached point is this candidate (its kl matches)."""
    if row is None:
        return None
    same_candidate = math.isclose(float(row["best_kl"]), kl, rel_tol=SAME_KL, abs_tol=SAME_KL)
    return row["wikitext2_ppl"] if same_candidate else None


def plot_ppl_curves(rows: Sequence[Mapping[str, str]], path: Path, labels: Mapping[str, str],
                    references: Mapping[str, Mapping[str, float]]) -> None:
    """One panel per level: best-so-far WikiText-2 perplexity (log scale) against candidates,
    a line per search, and horizontal lines for the uniform baselines (``references``)."""
    levels = sorted({row["level"] for row in rows}, key=float)
    if not levels:
        return
    fig, axes = panel_row(len(levels))
    for axis, level in zip(axes, levels):
        for search, points in lines_by_search(rows, level, "candidates", "wikitext2_ppl").items():
            xs, ys = zip(*points)
            axis.plot(xs, ys, marker="o", label=labels.get(search, search))
        for name, value in references.get(level, {}).items():
            axis.axhline(value, linestyle="--", linewidth=1, color="grey")
            axis.annotate(name, (axis.get_xlim()[0], value), fontsize=7, va="bottom")
        axis.set_yscale("log")
        axis.set_title(f"{float(level):.0%} unstructured")
        axis.set_xlabel("candidates evaluated")
        axis.set_ylabel("WikiText-2 perplexity of the best-kl recipe so far")
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=7)
    fig.tight_layout()
    save_figure_atomic(fig, path)
