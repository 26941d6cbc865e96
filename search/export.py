"""What a finished search leaves behind: the front's plot, its recipes, and picking one member."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.evaluators.fitness import objective_direction
from paretoprune.recipe import Recipe, save_recipe

__all__ = ["SPARSITY_PICK_SLACK", "export_front", "pick", "plot_front", "recipe_of_row"]

# How far beyond the front's achieved sparsities a ``sparsity:S`` pick may reach. Within it the
# nearest member is a fair answer (targets and achieved sparsities differ by rounding); beyond
# it the run holds nothing like what was asked for, and a recipe would silently mislead.
SPARSITY_PICK_SLACK = 0.02


def plot_front(frame: pd.DataFrame, front: pd.DataFrame, objectives: Sequence[str], path: Path) -> Path:
    """All evaluations in grey, the front highlighted; one panel per pair of objectives."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = frame[frame["status"] == "ok"]
    pairs = [(a, b) for i, a in enumerate(objectives) for b in objectives[i + 1 :]] or [
        (objectives[0], objectives[0])
    ]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4), squeeze=False)
    for axis, (x, y) in zip(axes[0], pairs):
        axis.scatter(ok[y], ok[x], s=10, c="0.7", label=f"evaluations ({len(ok)})")
        axis.scatter(front[y], front[x], s=24, c="tab:red", label=f"front ({len(front)})")
        axis.set_xlabel(y)
        axis.set_ylabel(x)
        axis.grid(alpha=0.3)
        axis.legend(loc="best", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path


def recipe_of_row(row: Mapping[str, Any], model_info: Mapping[str, Any], provenance: Mapping[str, Any],
                  objectives: Sequence[str]) -> Recipe:  # fmt: skip
    candidate = Candidate.from_dict(json.loads(row["candidate"]))
    shapes = {name: tuple(shape) for name, shape in model_info["shapes"].items()}
    return Recipe.from_candidate(
        candidate,
        model_name=model_info["name"],
        fingerprint=model_info["fingerprint"],
        family=model_info["family"],
        layer_numels=None,
        layer_shapes=shapes,
        objectives={name: float(row[name]) for name in objectives},
        provenance={
            "calibration": provenance["calibration"],
            "search": {"run": provenance["run"], "evaluation": int(row["eval_id"])},
            "fitness": provenance.get("fitness", {}),
        },
    )


def export_front(run_dir: Path, front: pd.DataFrame, model_info: Mapping[str, Any],
                 provenance: Mapping[str, Any], objectives: Sequence[str]) -> list[Path]:  # fmt: skip
    """Every front member as a YAML recipe in ``run_dir/recipes``."""
    folder = run_dir / "recipes"
    folder.mkdir(exist_ok=True)
    written = []
    for index, row in front.iterrows():
        recipe = recipe_of_row(row, model_info, provenance, objectives)
        tag = "-".join(f"{name}{float(row[name]):.4g}" for name in objectives)
        written.append(save_recipe(recipe, folder / f"{index:03d}-{tag}.yaml"))
    return written


def pick(front: pd.DataFrame, objectives: Sequence[str], how: str) -> int:
    """Row index of the front member chosen by knee, best:OBJ, sparsity:S or index:K."""
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
                             f"use best:{objectives[0]}")  # fmt: skip
        column = front[value]
        return int(column.idxmax() if objective_direction(value) == "maximize" else column.idxmin())
    if kind == "sparsity":
        return _nearest_sparsity(front, _float(value, how), how)
    if kind == "knee":
        return _knee(front, objectives)
    raise InputError(f"--pick {how} is not understood: use knee, best:OBJ, sparsity:S or index:K")


def _nearest_sparsity(front: pd.DataFrame, wanted: float, how: str) -> int:
    """The member whose achieved sparsity is nearest ``wanted``, which must lie near the front."""
    if "sparsity" not in front:
        raise InputError(f"--pick {how} needs a run with the sparsity objective: use knee, best:OBJ or index:K")
    achieved = front["sparsity"]
    low, high = float(achieved.min()), float(achieved.max())
    if not low - SPARSITY_PICK_SLACK <= wanted <= high + SPARSITY_PICK_SLACK:
        raise InputError(
            f"--pick {how} is outside the front's sparsities {low:.4g} to {high:.4g}: "
            f"pick a sparsity within {SPARSITY_PICK_SLACK} of that range"
        )
    return int((achieved - wanted).abs().idxmin())


def _knee(front: pd.DataFrame, objectives: Sequence[str]) -> int:
    """The member closest to the ideal point once each objective is scaled to [0, 1]."""
    signs = np.array([-1.0 if objective_direction(o) == "maximize" else 1.0 for o in objectives])
    values = front[list(objectives)].to_numpy(dtype=float) * signs
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
