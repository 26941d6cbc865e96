"""Pareto dominance: what a search trades off, in which direction, and the front of a table.

:class:`Objectives` is the one place that knows each objective's direction: the driver tells
the algorithm minimised values through it, the archive and the run folder compute fronts
through it, and picking a front member scales values through it.

The front is the non-dominated set of all successful evaluations, not of the last population:
NSGA-III keeps one survivor per reference direction and forgets good points.

When finalists were scored again at a higher fidelity (:mod:`paretoprune.search.fidelity`),
each candidate counts once, through its most faithful row, and rows are compared like with like:
a candidate stays on the front unless another candidate's row at the same fidelity dominates
it. Every candidate has a base row, so one that was never scored again still meets every other
at base; a finalist meets the other finalists at its own fidelity.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from paretoprune.errors import InputError
from paretoprune.evaluators.fitness import objective_direction
from paretoprune.search.fidelity import BASE, fidelity_order

__all__ = ["Objectives", "candidate_id", "candidate_ids", "non_dominated_mask"]


@dataclass(frozen=True)
class Objectives:
    """The objectives of a search, in order; the first is the one progress reports.

    Iterating gives the names, so ``frame[list(objectives)]`` selects their columns.
    """

    names: tuple[str, ...]

    @classmethod
    def of(cls, objectives: Objectives | Iterable[str]) -> Objectives:
        """``objectives`` as an Objectives (an Objectives is returned as it is)."""
        if isinstance(objectives, Objectives):
            return objectives
        names = tuple(objectives)
        if not names:
            raise InputError("a search needs at least one objective, e.g. --objectives kl")
        return cls(names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    @property
    def first(self) -> str:
        return self.names[0]

    @property
    def directions(self) -> tuple[str, ...]:
        """``"minimize"`` or ``"maximize"`` for each objective."""
        return tuple(objective_direction(name) for name in self.names)

    @property
    def signs(self) -> np.ndarray:
        """+1 for an objective to minimise, -1 for one to maximise: values times signs are minimised."""
        return np.array([-1.0 if direction == "maximize" else 1.0 for direction in self.directions])

    def minimised(self, values: np.ndarray) -> np.ndarray:
        """Rows of objective values (columns in order) turned into values to minimise."""
        return np.asarray(values, dtype=float) * self.signs

    def minimised_results(self, results: Sequence[Mapping[str, float] | None]) -> np.ndarray:
        """One row per result, to minimise; a failed result (None) is the worst in every column.

        Worst means +inf after the signs are applied: a failed candidate must not look like the
        sparsest one to an algorithm that maximises sparsity.
        """
        rows = np.full((len(results), len(self)), math.inf)
        for row, result in zip(rows, results):
            if result is not None:
                row[:] = self.minimised(np.array([result[name] for name in self.names]))
        return rows

    def is_better(self, value: float, than: float) -> bool:
        """Whether ``value`` of the first objective beats ``than``."""
        return bool(value * self.signs[0] < than * self.signs[0])

    def front(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The non-dominated successful rows of ``frame``, each objective in its own direction.

        Rows with a missing or infinite value never count. Equal objective vectors are kept once
        (the lowest eval_id); rows are sorted by the objectives in order, then by eval_id.
        """
        missing = [name for name in self.names if name not in frame]
        if missing:
            raise InputError(f"the evaluations have no column for the objectives {missing}")
        ok = frame[frame["status"] == "ok"]
        ok = ok[np.isfinite(ok[list(self.names)].to_numpy(dtype=float)).all(axis=1)]
        if "fidelity" not in ok or set(ok["fidelity"]) <= {BASE}:
            return self._sorted(ok[self._non_dominated(ok)])
        best = ok[_most_faithful(ok)]
        kept = [best[(best["fidelity"] == label).to_numpy() & self._non_dominated_among(best, ok, label)]
                for label in best["fidelity"].unique()]
        return self._sorted(pd.concat(kept))

    def _non_dominated(self, rows: pd.DataFrame) -> np.ndarray:
        if not len(rows):
            return np.zeros(0, bool)
        return non_dominated_mask(self.minimised(rows[list(self.names)].to_numpy(dtype=float)), keep_duplicates=False)

    def _non_dominated_among(self, best: pd.DataFrame, ok: pd.DataFrame, label: str) -> np.ndarray:
        """For each row of ``best``: whether it is non-dominated among all rows at fidelity ``label``."""
        peers = ok[ok["fidelity"] == label]
        survivors = set(peers["eval_id"][self._non_dominated(peers)])
        return best["eval_id"].isin(survivors).to_numpy()

    def _sorted(self, rows: pd.DataFrame) -> pd.DataFrame:
        return rows.sort_values([*self.names, "eval_id"], kind="stable").reset_index(drop=True)


def candidate_ids(frame: pd.DataFrame) -> pd.Series:
    """Which candidate each row scores: its own eval_id for a search row, else its source's."""
    if "source_id" not in frame:
        return frame["eval_id"].astype("int64")
    return frame["source_id"].fillna(frame["eval_id"]).astype("int64")


def candidate_id(row: pd.Series) -> int:
    """Which candidate one row scores (see :func:`candidate_ids`)."""
    source = row.get("source_id")
    return int(row["eval_id"]) if source is None or pd.isna(source) else int(source)


def _most_faithful(rows: pd.DataFrame) -> np.ndarray:
    """True for each candidate's most faithful row (the latest one among equals)."""
    labels = sorted(rows["fidelity"].unique(), key=fidelity_order)
    order = rows["fidelity"].map({label: rank for rank, label in enumerate(labels)})
    ranked = pd.DataFrame({"candidate": candidate_ids(rows).to_numpy(), "order": order.to_numpy(),
                           "eval_id": rows["eval_id"].to_numpy()}, index=rows.index)  # fmt: skip
    chosen = ranked.sort_values(["order", "eval_id"]).groupby("candidate").tail(1).index
    return rows.index.isin(chosen)


def non_dominated_mask(F: np.ndarray, keep_duplicates: bool = True) -> np.ndarray:
    """True for each row of ``F`` (minimised) that no other row dominates.

    Row j dominates row i when it is no worse in every column and better in one. Rows with a
    NaN are never on the front. Equal rows do not dominate each other; with
    ``keep_duplicates=False`` only the first of each group of equal rows is kept.

    Rows are visited in lexicographic order, where a dominating row always comes before the
    rows it dominates; since dominance is transitive, checking each row against the front
    found so far is enough: O(n * front * m) instead of O(n^2 * m).
    """
    values = np.asarray(F, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"objectives must be a 2-D array, got shape {values.shape}")
    mask = np.zeros(len(values), dtype=bool)
    valid = np.flatnonzero(~np.isnan(values).any(axis=1))
    order = valid[np.lexsort(values[valid].T[::-1])]  # stable: equal rows keep index order
    front = np.empty_like(values)
    size = 0
    for index in order:
        row = values[index]
        members = front[:size]
        no_worse = np.all(members <= row, axis=1)
        if np.any(no_worse & np.any(members < row, axis=1)):
            continue
        if not keep_duplicates and np.any(no_worse & np.all(members == row, axis=1)):
            continue
        front[size] = row
        size += 1
        mask[index] = True
    return mask
