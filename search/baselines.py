"""The baselines of a search: the known methods it starts from, found again in its archive.

A search's first population holds the known methods its space can express
(:meth:`~paretoprune.search.space.SearchSpace.baselines`: uniform Wanda and OWL at the target,
or uniform Wanda at three levels of a range). They are the yardstick of the search: the finalist
stage scores them beside the finalists on the validation windows, and the exported recipe is
judged against them there (:mod:`paretoprune.search.validation`).

The algorithm repairs its start genomes, and its first generation may add random ones, so a
baseline's row is found by its genome among the generation-0 rows of the search's fitness.

The baselines are also what the search bought against: ``pareto.png`` draws uniform Wanda (the
layerwise rule, in a layerwise search) and OWL with it as curves beside the front, at the
search's target or at :data:`CURVE_LEVELS` levels across its range. A curve point the first
population holds is read from its row; the others are scored once, with the search's fitness,
when the search finishes.

The run folder keeps all of it in one table (``Run.save_baselines``), one row per baseline:
``name``, ``eval_id`` (its generation-0 row; empty for a point scored for the curves alone),
``curve`` and ``level`` (empty for a baseline on no curve), and its objectives. ``export`` reads
it without loading the model, and a resumed or rescored run scores no point twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.metrics.scores import KNOWN_METRICS
from paretoprune.search.export import pick
from paretoprune.search.fidelity import BASE
from paretoprune.search.pareto import Objectives, candidate_id
from paretoprune.search.space import SearchSpace

__all__ = ["CURVE_LEVELS", "GENOME_TOLERANCE", "against_uniform", "baseline_table", "curve_points",
           "first_population_baselines"]

# Levels of a range search's curves: its ends and the three levels its first population starts
# from, with one between each pair (5 across 0.4:0.7 are 0.4, 0.475, 0.55, 0.625 and 0.7).
CURVE_LEVELS = 5
# The objectives of some candidates, as the search's fitness scores them (None: failed).
Scorer = Callable[[Sequence[Candidate]], Sequence[Mapping[str, float] | None]]

# How far a generation-0 genome may lie from a baseline's and still be it: a repair re-encodes
# the decoded candidate, which moves genes by rounding only.
GENOME_TOLERANCE = 1e-6


def first_population_baselines(frame: pd.DataFrame, genomes: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Name -> eval_id of the generation-0 search row whose genome is each baseline's.

    A baseline the archive does not hold (an algorithm that did not start from it) is left out.
    """
    rows = frame[(frame["generation"] == 0) & (frame["fidelity"] == BASE)] if len(frame) else frame
    found: dict[str, int] = {}
    for name, genome in genomes.items():
        wanted = np.asarray(genome, dtype=float)
        for eval_id, stored in zip(rows["eval_id"], rows["genome"]):
            stored = np.asarray(stored, dtype=float)
            if stored.shape == wanted.shape and np.allclose(stored, wanted, rtol=0.0, atol=GENOME_TOLERANCE):
                found[name] = int(eval_id)
                break
    return found


def curve_points(space: SearchSpace, owl: Callable[[float], Mapping[str, float]] | None
                 ) -> list[tuple[str, str, float, Candidate]]:  # fmt: skip
    """(name, curve, level, candidate) of every point of the uniform curves, named as
    :meth:`SearchSpace.baselines` names the same candidates. ``owl(level)``: OWL's sparsities
    (None: no OWL curve, as for N:M structures)."""
    metric = KNOWN_METRICS["wanda"] if space.searches_metric else space.base_metric
    # A layerwise search on a global rule's scores (--base-metric lrp) is read against that rule.
    rule = None if space.searches_metric else space.global_rule
    label = rule or metric.name
    low, high = space.config.sparsity_range or (None, None)
    levels = [space.target(np.zeros(space.n_var))] if low is None else list(np.linspace(low, high, CURVE_LEVELS))
    points = []
    for level in map(float, levels):
        suffix = "" if low is None else f"@{level:.2f}"
        shape = {"structure": space.config.structure, "group": space.config.group, "global_rule": rule}
        uniform = Candidate(metric=metric, sparsities={name: level for name in space.layout.names}, **shape)
        points.append((f"{label}{suffix}", f"uniform {label}", level, uniform))
        if owl is not None:
            owl_candidate = Candidate(metric=metric, sparsities=dict(owl(level)), **shape)
            points.append((f"owl-{label}{suffix}", f"owl + {label}", level, owl_candidate))
    return points


def baseline_table(frame: pd.DataFrame, space: SearchSpace, objectives: Objectives,
                   owl: Callable[[float], Mapping[str, float]] | None = None, previous: pd.DataFrame | None = None,
                   score: Scorer | None = None) -> pd.DataFrame:  # fmt: skip
    """The run folder's table of baselines (see the module's docstring).

    Curve points neither the first population nor ``previous`` (the table a run wrote before)
    holds are scored by ``score``; without it (an interrupted search) they are left out.
    """
    names = list(objectives)
    rows: dict[str, dict[str, Any]] = {}
    search_rows = frame.set_index("eval_id")
    for name, eval_id in first_population_baselines(frame, space.baselines()).items():
        row = search_rows.loc[eval_id]
        rows[name] = {"name": name, "eval_id": eval_id, **_values(row if row["status"] == "ok" else None, names)}
    kept = {} if previous is None else {str(row["name"]): row for _, row in previous.iterrows()}
    missing = []
    for name, curve, level, candidate in curve_points(space, owl):
        if name not in rows and name in kept and not any(pd.isna(kept[name].get(n)) for n in names):
            rows[name] = {"name": name, **_values(kept[name], names)}
        if name in rows:
            rows[name] |= {"curve": curve, "level": level}
        else:
            missing.append((name, curve, level, candidate))
    if missing and score is not None:
        for (name, curve, level, _), values in zip(missing, score([point[3] for point in missing])):
            rows[name] = {"name": name, "curve": curve, "level": level, **_values(values, names)}
    table = pd.DataFrame(list(rows.values()), columns=["name", "eval_id", "curve", "level", *names])
    table["eval_id"] = table["eval_id"].astype("Int64")
    return table


def against_uniform(frame: pd.DataFrame, front: pd.DataFrame, objectives: Objectives,
                    table: pd.DataFrame) -> list[dict[str, Any]]:  # fmt: skip
    """The searched front against uniform Wanda on the search's fitness, at two levels of its
    curve: the middle and the top of a range (where the search matters most), or the target.

    At each level the front member nearest in sparsity (within the pick's slack; the best on the
    first objective when sparsity is no objective) meets the curve's point there. A finalist is
    compared through its search row: the curve is scored by the fitness alone.
    """
    uniform = table[table["curve"].fillna("").str.startswith("uniform")].dropna(subset=[objectives.first])
    if uniform.empty or front.empty:
        return []
    uniform = uniform.sort_values("level")
    first, found = objectives.first, []
    for _, point in uniform.iloc[sorted({len(uniform) // 2, len(uniform) - 1})].iterrows():
        how = f"sparsity:{point['level']}" if "sparsity" in objectives else f"best:{first}"
        try:
            member = front.loc[pick(front, objectives, how)]
        except InputError:  # no front member near this level
            continue
        searched = frame.set_index("eval_id").loc[candidate_id(member)]
        found.append({"level": float(point["level"]), "curve": str(point["curve"]), "uniform": float(point[first]),
                      "eval_id": candidate_id(member), first: float(searched[first]),
                      **({"sparsity": float(searched["sparsity"])} if "sparsity" in objectives else {})})  # fmt: skip
    return found


def _values(row: Mapping[str, Any] | None, names: Sequence[str]) -> dict[str, float]:
    """The objectives of a row or a result; NaN where it has none (a failed evaluation)."""
    return {name: math.nan if row is None or pd.isna(row.get(name)) else float(row[name]) for name in names}
