"""How far a multi-objective search has come: its front's size and hypervolume, per generation.

The lowest value of the first objective says little about a range search (it is the least
sparse point); the hypervolume grows whenever any part of the front improves. The reference
point is fixed by the first generation that had successful rows (the baselines), so that the
numbers of later generations, and of a resumed run, compare.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from paretoprune.search.fidelity import BASE
from paretoprune.search.hypervolume import hypervolume_2d, reference_point
from paretoprune.search.pareto import Objectives, non_dominated_mask

__all__ = ["FrontProgress"]


class FrontProgress:
    """The non-dominated rows (minimised) seen so far and the hypervolume's reference point."""

    def __init__(self, n_obj: int) -> None:
        self.n_obj = int(n_obj)
        self.front = np.empty((0, self.n_obj))
        self.reference: np.ndarray | None = None

    @classmethod
    def of(cls, frame: pd.DataFrame, objectives: Objectives) -> FrontProgress:
        """The progress of the successful rows an archive already holds, generation by generation."""
        progress = cls(len(objectives))
        if "fidelity" in frame:  # rows a finalist stage scored again measure something else
            frame = frame[frame["fidelity"] == BASE]
        ok = frame[frame["status"] == "ok"]
        for _, rows in ok.groupby("generation", sort=True):
            progress.add(objectives.minimised(rows[list(objectives)].to_numpy(dtype=float)))
        return progress

    def add(self, values: np.ndarray) -> None:
        """One generation's rows, minimised (failed rows are skipped)."""
        values = np.asarray(values, dtype=float).reshape(-1, self.n_obj)
        values = values[np.all(np.isfinite(values), axis=1)]
        if len(values) == 0:
            return
        if self.reference is None and self.n_obj == 2:
            self.reference = reference_point(values)
        merged = np.vstack([self.front, values])
        self.front = merged[non_dominated_mask(merged, keep_duplicates=False)]

    @property
    def hypervolume(self) -> float | None:
        """The area the front dominates up to the reference (two objectives only)."""
        if self.reference is None:
            return None
        return hypervolume_2d(self.front, self.reference)

    def text(self) -> str:
        """``front 23, hypervolume 0.4127`` (empty for one objective)."""
        if self.n_obj < 2:
            return ""
        volume = self.hypervolume
        return f"front {len(self.front)}" + ("" if volume is None else f", hypervolume {volume:.4g}")
