"""What a finished search leaves behind: the front's table, plot and recipes; picking one member."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.evaluators.fitness import achieved_sparsities
from paretoprune.io import atomic_write
from paretoprune.metrics.scores import SCORING_RULES, MetricSpec
from paretoprune.models import ModelLayout
from paretoprune.recipe import ModelInfo, Provenance, Recipe, SearchInfo, load_recipe, save_recipe
from paretoprune.search.archive import candidate_of
from paretoprune.search.fidelity import BASE
from paretoprune.search.pareto import Objectives
from paretoprune.search.run import RECIPE_COLUMN, Run, front_columns, recipe_file_name

__all__ = ["SPARSITY_PICK_SLACK", "SPARSITY_PICK_TIE", "export_front", "front_table", "pick", "plot_front", "recipe_for", "recipe_of_row",
           "rule_name"]

# How far beyond the front's achieved sparsities a ``sparsity:S`` pick may reach. Within it the
# nearest member is a fair answer (targets and achieved sparsities differ by rounding); beyond
# it the run holds nothing like what was asked for, and a recipe would silently mislead.
SPARSITY_PICK_SLACK = 0.02
# Candidates asked for the same target reach it to within rounding (whole weights per row), so
# their achieved sparsities differ in the fourth decimal. A ``sparsity:S`` pick counts members
# this close to the nearest one as equally near, and takes the best of them on the first
# objective: a difference of 0.00004 in sparsity must not choose a recipe 5 % worse.
SPARSITY_PICK_TIE = 0.001


def plot_front(frame: pd.DataFrame, front: pd.DataFrame, objectives: Objectives, path: Path,
               curves: pd.DataFrame | None = None) -> Path:  # fmt: skip
    """All evaluations in grey, finalists scored again in blue, the front in red; one panel
    per pair of objectives. ``curves``: the baselines' table (``search.baselines``), whose uniform
    Wanda and OWL points are drawn as lines across their levels, to show what the search bought."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(objectives)
    ok = frame[frame["status"] == "ok"]
    rescored = ok[ok["fidelity"] != BASE] if "fidelity" in ok else ok.iloc[:0]
    ok = ok.drop(rescored.index)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]] or [(names[0], names[0])]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4), squeeze=False)
    for axis, (x, y) in zip(axes[0], pairs):
        axis.scatter(ok[y], ok[x], s=10, c="0.7", label=f"evaluations ({len(ok)})")
        if len(rescored):
            axis.scatter(rescored[y], rescored[x], s=16, c="tab:blue", marker="^",
                         label=f"finalists, scored again ({len(rescored)})")  # fmt: skip
        _draw_curves(axis, curves, x, y)
        axis.scatter(front[y], front[x], s=24, c="tab:red", label=f"front ({len(front)})", zorder=3)
        axis.set_xlabel(y)
        axis.set_ylabel(x)
        axis.grid(alpha=0.3)
        axis.legend(loc="best", fontsize=8)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda handle: fig.savefig(handle, dpi=110, format="png"))
    finally:
        plt.close(fig)


def _draw_curves(axis: Any, curves: pd.DataFrame | None, x: str, y: str) -> None:
    """Each baseline curve ("uniform wanda", "owl + wanda") as a line with markers, by level."""
    if curves is None or "curve" not in curves or not {x, y} <= set(curves.columns):
        return
    drawn = curves.dropna(subset=["curve", x, y]).sort_values("level")
    for (name, points), marker in zip(drawn.groupby("curve", sort=True), ("s", "D", "v", "P")):
        axis.plot(points[y], points[x], marker=marker, markersize=5, linewidth=1.2, label=str(name))


def recipe_of_row(row: pd.Series, model: ModelInfo, provenance: Provenance, objectives: Objectives,
                  run: str) -> Recipe:  # fmt: skip
    """The recipe of one archive row: its candidate, its scores, and where it came from.

    A finalist row's scores were measured at its fidelity, which the recipe's provenance names
    beside the search's fitness tokens.
    """
    fidelity = str(row.get("fidelity", BASE))
    finalist = {"finalist": {"kind": "finalist", "fidelity": fidelity}} if fidelity != BASE else {}
    fitness = provenance.fitness | finalist
    return Recipe.from_candidate(
        candidate_of(row),
        model_name=model.name,
        fingerprint=model.fingerprint,
        family=model.family,
        layer_numels=None,
        layer_shapes=model.shapes,
        objectives={name: float(row[name]) for name in objectives},
        provenance=provenance.model_copy(update={
            "search": SearchInfo(run=run, evaluation=int(row["eval_id"])),
            "created": datetime.now(timezone.utc),
            "fitness": fitness,
        }),
    )  # fmt: skip


def recipe_for(run: Run, row: pd.Series) -> Recipe:
    """The recipe of any archive row of a finished run: a front member's file, else one made
    from the row with the model and calibration its front's recipes name (a baseline or a
    searched candidate that validation put off the front)."""
    eval_id = int(row["eval_id"])
    if run.has_recipe(eval_id):
        return load_recipe(run.recipe_path(eval_id))
    written = run.recipes()
    if not written:
        run.recipe_path(eval_id)  # one line: the search has not finished
    template = load_recipe(written[0])
    # The template's own finalist fidelity is not this row's: recipe_of_row names the row's.
    fitness = {name: entry for name, entry in template.provenance.fitness.items() if name != "finalist"}
    provenance = template.provenance.model_copy(update={"fitness": fitness})
    return recipe_of_row(row, template.model, provenance, run.objectives, run=str(run.final_stage.folder))


def export_front(run: Run, front: pd.DataFrame, model: ModelInfo, provenance: Provenance,
                 objectives: Objectives) -> list[Path]:  # fmt: skip
    """Every front member as a YAML recipe in the run's recipes folder, in front order.

    Recipes of an earlier export that are no longer on the front (finalists scored since may
    have changed it) are removed once the new ones are written.
    """
    written = []
    for position, row in front.iterrows():
        recipe = recipe_of_row(row, model, provenance, objectives, run=str(run.folder))
        name = recipe_file_name(int(position), {name: row[name] for name in objectives})
        written.append(save_recipe(recipe, run.recipes_folder / name))
    for stale in set(run.recipes_folder.glob("*.yaml")) - set(written):
        stale.unlink(missing_ok=True)
    return written


def front_table(front: pd.DataFrame, objectives: Objectives, layout: ModelLayout,
                recipes: Sequence[Path]) -> pd.DataFrame:  # fmt: skip
    """The front as a person reads it: one short cell per column, the candidate left out.

    Columns: eval_id, generation, one per objective, ``fidelity`` (what scored the row: ``base``,
    or a finalist stage such as ``16384+update``), ``achieved_sparsity`` (unless sparsity is an
    objective already), ``rule`` (the scoring rule) and ``recipe`` (the file under recipes/, empty
    when the search was interrupted). The whole candidate stays in the archive and the recipe.
    """
    table = front.copy()
    if "fidelity" not in table:
        table["fidelity"] = BASE
    candidates = [candidate_of(row) for _, row in front.iterrows()]
    if "sparsity" not in objectives:
        table["achieved_sparsity"] = [_achieved_sparsity(layout, candidate) for candidate in candidates]
    table["rule"] = [rule_name(candidate.metric) for candidate in candidates]
    table[RECIPE_COLUMN] = [path.name for path in recipes] if recipes else None
    return table[front_columns(list(objectives))]


def rule_name(metric: MetricSpec) -> str:
    """A registered rule's name (wanda), or the formula of a searched one."""
    return metric.name if metric.name in SCORING_RULES else metric.describe()


def _achieved_sparsity(layout: ModelLayout, candidate: Candidate) -> float:
    """The fraction of all prunable weights the candidate removes, after rounding per group."""
    achieved = achieved_sparsities(layout, candidate)
    return sum(achieved[linear.name] * linear.numel for linear in layout.linears) / layout.total_numel


def pick(front: pd.DataFrame, objectives: Objectives | Sequence[str], how: str) -> int:
    """Row index of the front member chosen by knee, best:OBJ, sparsity:S or index:K."""
    objectives = Objectives.of(objectives)
    if front.empty:
        raise InputError("the front is empty: the search has no successful evaluation yet; "
                         "resume it with --resume, or read the failed evaluations' errors")  # fmt: skip
    kind, _, value = how.partition(":")
    if kind == "index":
        index = _int(value, how)
        if not 0 <= index < len(front):
            raise InputError(f"--pick {how}: the front has {len(front)} members; use index:0 to index:{len(front) - 1}")
        return index
    if kind == "best":
        if value not in objectives:
            raise InputError(f"--pick {how}: unknown objective, the run has {', '.join(objectives)}; "
                             f"use best:{objectives.first}")  # fmt: skip
        sign = objectives.signs[objectives.names.index(value)]
        return int((front[value] * sign).idxmin())
    if kind == "sparsity":
        return _nearest_sparsity(front, objectives, _float(value, how), how)
    if kind == "knee":
        return _knee(front, objectives)
    raise InputError(f"--pick {how} is not understood: use knee, best:OBJ, sparsity:S or index:K")


def _nearest_sparsity(front: pd.DataFrame, objectives: Objectives, wanted: float, how: str) -> int:
    """The member whose achieved sparsity is nearest ``wanted`` (which must lie near the front);
    among members within SPARSITY_PICK_TIE of the nearest, the best on the first objective."""
    if "sparsity" not in front:
        raise InputError(f"--pick {how} needs a run with the sparsity objective: use knee, best:OBJ or index:K")
    achieved = front["sparsity"]
    low, high = float(achieved.min()), float(achieved.max())
    if not low - SPARSITY_PICK_SLACK <= wanted <= high + SPARSITY_PICK_SLACK:
        raise InputError(
            f"--pick {how} is outside the front's sparsities {low:.4g} to {high:.4g}: "
            f"pick a sparsity within {SPARSITY_PICK_SLACK} of that range"
        )
    distance = (achieved - wanted).abs()
    near = front[distance <= distance.min() + SPARSITY_PICK_TIE]
    first = objectives.first
    if first == "sparsity" or first not in near:
        return int(distance.idxmin())
    return int((near[first] * objectives.signs[0]).idxmin())


def _knee(front: pd.DataFrame, objectives: Objectives) -> int:
    """The member closest to the ideal point once each objective is scaled to [0, 1]."""
    values = objectives.minimised(front[list(objectives)].to_numpy(dtype=float))
    span = values.max(axis=0) - values.min(axis=0)
    scaled = (values - values.min(axis=0)) / np.where(span > 0, span, 1.0)
    return int(np.argmin(np.linalg.norm(scaled, axis=1)))


def _int(text: str, how: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(f"--pick {how}: expected a whole number after the colon") from None


def _float(text: str, how: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"--pick {how}: expected a number after the colon, e.g. sparsity:0.6") from None
    if not math.isfinite(value):
        raise InputError(f"--pick {how}: the sparsity must be a finite number")
    return value
