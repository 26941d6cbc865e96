"""Validation before export: the picked recipe against the best baseline, on held-out windows.

The search ranks candidates on a few fitness windows, where its best candidates differ by less
than the sampling noise: a pick that beats uniform Wanda there can lose to it on other text.
The finalist stage scores the finalists and the first population's baselines again on
validation windows that share no token with the fitness windows (:mod:`.finalists`). Here a
picked front member meets the best baseline at its own fidelity, on the first objective:

- a baseline counts when it was scored at a comparable sparsity: within
  :data:`~paretoprune.search.export.SPARSITY_PICK_SLACK` of the pick's (the ``sparsity``
  objective, else a range search's target gene); a fixed-sparsity search's baselines share its
  target and all count. A range search starts from baselines at three levels, so a pick far
  from them meets none and gets no verdict;
- the recipe beats the baseline only when it is strictly better: on a tie, the baseline is the
  simpler recipe.

``--pick best:OBJ`` then chooses among the searched candidates (not the baselines) at the most
faithful fidelity they were scored at, and falls back to the baseline when the recipe does not
beat it, unless the pick is forced. Other picks keep their member and only say how it compares.
A run without validation rows of its baselines (no finalists, or an older release) gets no
verdict and picks exactly as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from paretoprune.search.export import SPARSITY_PICK_SLACK, pick
from paretoprune.search.fidelity import BASE, fidelity_order
from paretoprune.search.pareto import Objectives, candidate_id, candidate_ids

__all__ = ["Choice", "Verdict", "choose", "judge"]

# What a verdict found: the pick beats the best baseline, loses to it (ties included), is that
# baseline, was never scored on the validation windows, or met no baseline at its sparsity.
OUTCOMES = ("beats", "loses", "is_baseline", "unscored", "no_baseline")


@dataclass(frozen=True)
class Verdict:
    """The picked member against the best comparable baseline, at one validation fidelity."""

    fidelity: str
    objective: str
    outcome: str  # one of OUTCOMES
    eval_id: int  # the picked row
    score: float | None = None  # its value of the objective at this fidelity
    baseline: str | None = None  # the best comparable baseline's name
    baseline_eval_id: int | None = None  # its row at this fidelity
    baseline_score: float | None = None
    sparsity: float | None = None  # the pick's, when baselines were matched by sparsity

    @property
    def beaten(self) -> bool:
        """Whether the recipe does not beat the baseline on the validation windows."""
        return self.outcome == "loses"

    def line(self, fell_back: bool = False, forced: bool = False, advice: str | None = None) -> str:
        """One line for people: the two scores and what they mean for the export. ``advice``:
        the command that would fall back (the end of a search, where nothing is exported)."""
        head = f"validation ({self.fidelity}): "
        if self.outcome == "unscored":
            return head + f"the pick (evaluation {self.eval_id}) was not scored on the validation windows"
        recipe = f"recipe {self.objective} {self.score:.4g}"
        if self.outcome == "no_baseline":
            where = f" within {SPARSITY_PICK_SLACK} of its sparsity {self.sparsity:.4g}" if self.sparsity else ""
            return head + f"{recipe}; no baseline was scored{where}"
        versus = f"{recipe} vs best baseline {self.baseline} {self.baseline_score:.4g}: "
        if self.outcome == "is_baseline":
            return head + f"the pick is the best baseline, {self.baseline} ({self.objective} {self.score:.4g})"
        if self.outcome == "beats":
            return head + versus + "the recipe beats the baseline"
        if fell_back:
            return head + versus + ("the recipe does not beat the baseline; exporting the baseline "
                                    "(use --force-pick to keep the searched one)")  # fmt: skip
        if advice:
            return head + versus + (f"the recipe does not beat the baseline; {advice} exports the baseline "
                                    "(--force-pick keeps the searched one)")  # fmt: skip
        return head + versus + "the recipe does not beat the baseline" + ("; keeping it (--force-pick)" * forced)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"beaten": self.beaten}


@dataclass(frozen=True)
class Choice:
    """What ``export`` writes: an archive row, and how it fared on validation."""

    row: pd.Series
    verdict: Verdict | None = None
    fell_back: bool = False  # the row is the baseline that beat the picked recipe

    def line(self, forced: bool = False) -> str | None:
        return None if self.verdict is None else self.verdict.line(self.fell_back, forced)


def judge(frame: pd.DataFrame, objectives: Objectives, row: pd.Series, baselines: Mapping[str, int],
          ranged: bool = False) -> Verdict | None:  # fmt: skip
    """``row`` (an archive row) against the best baseline scored at its fidelity; None when no
    baseline was scored on validation windows. ``ranged``: the search's target is its last gene."""
    validated = _validated(frame, baselines)
    if validated.empty:
        return None
    fidelity, first, eval_id = str(row["fidelity"]), objectives.first, int(row["eval_id"])
    if fidelity == BASE:
        best_label = max(validated["fidelity"].unique(), key=fidelity_order)
        return Verdict(best_label, first, "unscored", eval_id)
    peers = validated[validated["fidelity"] == fidelity]
    sparsity = _sparsity(row, ranged)
    if sparsity is not None and len(peers):
        peers = peers[(peers.apply(lambda peer: _sparsity(peer, ranged), axis=1) - sparsity).abs()
                      <= SPARSITY_PICK_SLACK]  # fmt: skip
    score = float(row[first])
    if peers.empty:
        return Verdict(fidelity, first, "no_baseline", eval_id, score, sparsity=sparsity)
    best = peers.loc[(peers[first] * objectives.signs[0]).sort_index().idxmin()]
    names = {candidate: name for name, candidate in baselines.items()}
    own = candidate_id(row) == candidate_id(best)
    outcome = "is_baseline" if own else ("beats" if objectives.is_better(score, float(best[first])) else "loses")
    return Verdict(fidelity, first, outcome, eval_id, score, names[candidate_id(best)], int(best["eval_id"]),
                   float(best[first]), sparsity)  # fmt: skip


def choose(frame: pd.DataFrame, front: pd.DataFrame, objectives: Objectives, how: str,
           baselines: Mapping[str, int], ranged: bool = False, force: bool = False) -> Choice:  # fmt: skip
    """The row ``--pick how`` exports, judged on validation (see the module's docstring)."""
    if _validated(frame, baselines).empty:
        return Choice(front.loc[pick(front, objectives, how)])
    best = how.partition(":")[0] == "best"
    members = _searched(frame, objectives, baselines) if best else front
    if best and members.empty:
        members = front  # only baselines succeeded: there is no searched recipe to prefer
    row = members.loc[pick(members, objectives, how)]
    verdict = judge(frame, objectives, row, baselines, ranged)
    if best and verdict is not None and verdict.beaten and not force:
        return Choice(frame.set_index("eval_id", drop=False).loc[verdict.baseline_eval_id], verdict, fell_back=True)
    return Choice(row, verdict)


def _searched(frame: pd.DataFrame, objectives: Objectives, baselines: Mapping[str, int]) -> pd.DataFrame:
    """The front of the searched candidates alone, at the most faithful fidelity it holds."""
    ids = candidate_ids(frame)
    front = objectives.front(frame[~ids.isin(list(baselines.values()))])
    if front.empty:
        return front
    top = max(front["fidelity"].unique(), key=fidelity_order)
    return front[front["fidelity"] == top].reset_index(drop=True)


def _validated(frame: pd.DataFrame, baselines: Mapping[str, int]) -> pd.DataFrame:
    """The baselines' successful rows scored on validation windows (not at base)."""
    if not baselines or "fidelity" not in frame or frame.empty:
        return frame.iloc[:0]
    ids = candidate_ids(frame)
    return frame[(frame["status"] == "ok") & (frame["fidelity"] != BASE) & ids.isin(list(baselines.values()))]


def _sparsity(row: pd.Series, ranged: bool) -> float | None:
    """What a row is matched with baselines by: its sparsity objective, else a range search's
    target (the genome's last gene), else nothing (one fixed target for every row)."""
    if "sparsity" in row.index and not pd.isna(row["sparsity"]):
        return float(row["sparsity"])
    return float(row["genome"][-1]) if ranged else None
