"""A search's run folder: run it or resume it, what it cost, and the recipes it leaves.

The searches themselves are ``paretoprune.search.driver``'s; this adds what a table of many
searches needs on top: refusing to resume a folder made with other settings, the wall time over
interrupted sessions, and the chosen front member written as a portable recipe.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from paretoprune.errors import InputError
from paretoprune.recipe import Recipe, load_recipe, save_recipe
from paretoprune.search.archive import Archive
from paretoprune.search.driver import front_of, load_config, resume, run_search
from paretoprune.search.export import pick as pick_member

from bench_io import portable_recipe, run_label, write_text_atomic
from bench_plan import CALIBRATION_FILE, Pick, SearchSpec

__all__ = [
    "Exported",
    "RunLog",
    "SearchCost",
    "check_run",
    "copy_front_plot",
    "ensure_search",
    "export_pick",
    "recipe_fields",
    "search_cost",
]

logger = logging.getLogger("bench_search")

RUN_LOG = "bench-search.json"  # beside the search's own files in each run folder


@dataclass
class RunLog:
    """What the run folder does not say itself: wall time over sessions, and whether it ended."""

    wall_seconds: float = 0.0
    sessions: int = 0
    finished_generations: int | None = None  # the total a session reached without interruption

    @classmethod
    def read(cls, run_dir: Path) -> RunLog:
        path = run_dir / RUN_LOG
        return cls(**json.loads(path.read_text())) if path.exists() else cls()

    def write(self, run_dir: Path) -> None:
        write_text_atomic(run_dir / RUN_LOG, json.dumps(asdict(self), indent=2) + "\n")


# Settings a resumed run must share with the one asked for; the others are free (workers) or
# checked apart (generations may grow, calib is compared by file name).
MATCHED_SETTINGS = ("model", "mode", "structure", "sparsity", "sparsity_range", "objectives",
                    "algorithm", "granularity", "delta", "pop", "nsamples", "seqlen", "stats_nsamples",
                    "stats_seqlen", "seed")  # fmt: skip


def check_run(run_dir: Path, settings: Mapping[str, Any]) -> None:
    """Refuse to resume a run folder made with other settings: its front would not be this one."""
    stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    for key in MATCHED_SETTINGS:
        if _comparable(stored.get(key)) != _comparable(settings.get(key)):
            raise InputError(
                f"{run_dir} holds a search with {key}={stored.get(key)!r}, this run asks for "
                f"{settings.get(key)!r}; choose another --runs or delete that folder"
            )
    if Path(str(stored.get("calib"))).name != Path(str(settings["calib"])).name:
        raise InputError(f"{run_dir} was calibrated on {stored.get('calib')}; choose another --runs")
    if int(stored["generations"]) > int(settings["generations"]):
        raise InputError(
            f"{run_dir} already ran {stored['generations']} generations, more than "
            f"--generations {settings['generations']}; raise it or choose another --runs"
        )


def _comparable(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def ensure_search(spec: SearchSpec, settings: Mapping[str, Any], run_dir: Path) -> None:
    """Run the search, or continue it, until it has finished all its generations.

    A run that a session finished before (same total) is not touched: resuming it would load
    the model and start Ray only to find nothing left to do. The wall time of each session is
    added to the run log, even when the session is interrupted.
    """
    generations = int(settings["generations"])
    log = RunLog.read(run_dir)
    exists = (run_dir / "config.yaml").exists()
    if exists:
        check_run(run_dir, settings)
        if log.finished_generations == generations and any((run_dir / "recipes").glob("*.yaml")):
            logger.info("%s: search already finished (generations: %d)", spec.name, generations)
            return
    logger.info("%s: %s the search", spec.name, "resuming" if exists else "starting")
    started = time.perf_counter()
    try:
        result = resume(run_dir, generations=generations) if exists else run_search(load_config(settings))
    finally:
        log.wall_seconds += time.perf_counter() - started
        log.sessions += 1
        log.write(run_dir)
    if result.interrupted:
        raise KeyboardInterrupt
    log.finished_generations = generations
    log.write(run_dir)


@dataclass(frozen=True)
class SearchCost:
    candidates: int  # evaluations in the archive, failed ones included
    failed: int
    wall_minutes: float  # all sessions: model load, statistics, Ray start-up, generations
    fitness_minutes: float  # the sum of the evaluations' own seconds

    def row_fields(self) -> dict[str, str]:
        return {
            "candidates": str(self.candidates),
            "failed": str(self.failed),
            "search_minutes": f"{self.wall_minutes:.1f}",
            "fitness_minutes": f"{self.fitness_minutes:.1f}",
        }


def search_cost(run_dir: Path, frame: pd.DataFrame) -> SearchCost:
    failed = int((frame["status"] != "ok").sum())
    wall = RunLog.read(run_dir).wall_seconds
    return SearchCost(len(frame), failed, wall / 60, float(frame["seconds"].sum()) / 60)


# --------------------------------------------------------------------------------------------
# Recipes out of a finished search


@dataclass(frozen=True)
class Exported:
    pick: Pick
    recipe: Recipe
    path: Path
    eval_id: int
    kl: float


def export_pick(spec: SearchSpec, pick: Pick, run_dir: Path, out: Path) -> Exported:
    """The front member ``pick.how`` chooses, written to ``out/recipes/<name>.yaml``.

    The member is found exactly as ``paretoprune export`` finds it: the front of the whole
    archive, ``search.export.pick``, then the recipe the search wrote for that row.
    """
    front = front_of(Archive.load(run_dir).frame(), spec.objectives)
    index = pick_member(front, list(spec.objectives), pick.how)
    written = sorted((run_dir / "recipes").glob(f"{index:03d}-*.yaml"))
    if not written:
        raise RuntimeError(f"{run_dir} has no recipe for front member {index}; the search did not finish")
    recipe = portable_recipe(load_recipe(written[0]), CALIBRATION_FILE, run_label(run_dir))
    path = save_recipe(recipe, out / "recipes" / f"{pick.name}.yaml")
    member = front.loc[index]
    return Exported(pick, recipe, path, int(member["eval_id"]), float(member["kl"]))


def recipe_fields(exported: Exported, out: Path) -> dict[str, str]:
    layers = exported.recipe.pruning.layers.values()
    return {
        "recipe": str(exported.path.relative_to(out)),
        "eval_id": str(exported.eval_id),
        "kl": f"{exported.kl:.6f}",
        "rule": exported.recipe.to_candidate().metric.describe(),
        "layer_min": f"{min(layers):.4f}",
        "layer_max": f"{max(layers):.4f}",
    }


# --------------------------------------------------------------------------------------------
# What a finished search leaves in the results folder besides rows: its front plot


def copy_front_plot(spec: SearchSpec, run_dir: Path, out: Path) -> None:
    source = run_dir / "pareto.png"
    if not source.exists():
        return
    target = out / "fronts" / f"{spec.name}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, staging)
    os.replace(staging, target)
