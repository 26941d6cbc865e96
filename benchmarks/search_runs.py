"""A search's run folder: run or resume it, what it cost, and the recipes it leaves.

The searches are ``paretoprune.search.driver``'s; this adds what a table of many searches
needs: refusing to resume a folder made with other settings, the wall time over interrupted
sessions, and the picked front member written as a portable recipe.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from paretoprune.errors import InputError
from paretoprune.recipe import Recipe, load_recipe, recipe_from_data, save_recipe
from paretoprune.search.driver import load_config, resume, run_search
from paretoprune.search.export import pick as pick_member
from paretoprune.search.run import Run, read_run_config

from benchmarks.files import copy_file, write_text
from benchmarks.measurement import SearchFacts
from benchmarks.protocol import CALIBRATION_FILE
from benchmarks.searches import Pick, SearchSpec
from benchmarks.studies import REPO_ROOT

__all__ = [
    "Exported",
    "RunLog",
    "check_run",
    "copy_front_plot",
    "ensure_search",
    "export_pick",
    "portable_recipe",
    "run_archive",
    "run_label",
    "search_facts",
]

logger = logging.getLogger(__name__)

RUN_LOG = "bench-search.json"  # beside the search's own files in each run folder
# Settings a resumed run must share with the one asked for; the others are free (workers) or
# checked apart (generations may grow, calib is compared by file name).
MATCHED_SETTINGS = ("model", "mode", "structure", "sparsity", "sparsity_range", "objectives", "algorithm",
                    "granularity", "delta", "pop", "nsamples", "seqlen", "stats_nsamples", "stats_seqlen", "seed")  # fmt: skip


@dataclass
class RunLog:
    """What the run folder does not say itself: wall time over sessions, and whether it ended."""

    wall_seconds: float = 0.0  # every session, interrupted ones included
    sessions: int = 0
    finished_generations: int | None = None  # the total a session reached without interruption

    @classmethod
    def read(cls, run_dir: Path) -> RunLog:
        path = run_dir / RUN_LOG
        return cls(**json.loads(path.read_text())) if path.exists() else cls()

    def write(self, run_dir: Path) -> None:
        write_text(run_dir / RUN_LOG, json.dumps(asdict(self), indent=2) + "\n")


def check_run(run_dir: Path, settings: Mapping[str, Any]) -> None:
    """Refuse to resume a run folder made with other settings: its front would not be this one."""
    stored = read_run_config(run_dir)
    for key in MATCHED_SETTINGS:
        if _comparable(stored.get(key)) != _comparable(settings.get(key)):
            raise InputError(f"{run_dir} holds a search with {key}={stored.get(key)!r}, this run asks for "
                             f"{settings.get(key)!r}; choose another --runs or delete that folder")  # fmt: skip
    if Path(str(stored.get("calib"))).name != Path(str(settings["calib"])).name:
        raise InputError(f"{run_dir} was calibrated on {stored.get('calib')}; choose another --runs")
    if int(stored["generations"]) > int(settings["generations"]):
        raise InputError(f"{run_dir} already ran {stored['generations']} generations, more than "
                         f"--generations {settings['generations']}; raise it or choose another --runs")  # fmt: skip


def _comparable(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def ensure_search(spec: SearchSpec, settings: Mapping[str, Any], run_dir: Path) -> None:
    """Run the search, or continue it, until it has finished all its generations.

    A run a session finished before (same total) is not touched: resuming it would load the
    model and start Ray only to find nothing to do. Each session's wall time is logged, even
    when it is interrupted (then KeyboardInterrupt goes on up).
    """
    generations = int(settings["generations"])
    log = RunLog.read(run_dir)
    exists = Run.holds_search(run_dir)
    if exists:
        check_run(run_dir, settings)
        if log.finished_generations == generations and Run.open(run_dir).recipes():
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


def run_archive(run_dir: Path) -> pd.DataFrame:
    """Every evaluation of a run (of its last stage, for a staged search)."""
    return Run.open(run_dir).evaluations()


# --------------------------------------------------------------------------------------------
# Recipes out of a finished search


@dataclass(frozen=True)
class Exported:
    pick: Pick
    recipe: Recipe
    path: Path  # where the portable recipe was written
    eval_id: int
    kl: float


def export_pick(spec: SearchSpec, pick: Pick, run_dir: Path, out: Path) -> Exported:
    """The front member ``pick.how`` chooses, written to ``out/recipes/<name>.yaml``.

    The member is found exactly as ``paretoprune export`` finds it: the front of the whole
    archive, ``search.export.pick``, then the recipe the search wrote for that member.
    """
    run = Run.open(run_dir)
    front = run.front()
    member = front.loc[pick_member(front, run.objectives, pick.how)]
    written = run.recipe_path(int(member["eval_id"]))
    recipe = portable_recipe(load_recipe(written), CALIBRATION_FILE, run_label(run_dir))
    path = save_recipe(recipe, out / "recipes" / f"{pick.name}.yaml")
    return Exported(pick, recipe, path, int(member["eval_id"]), float(member["kl"]))


def portable_recipe(recipe: Recipe, calibration_file: str, run: str) -> Recipe:
    """The recipe with its provenance paths made portable.

    The search records the paths it was given, which name one machine; the calibration file is
    written relative to the shared data folder instead, and the run relative to the repository.
    The sha256 beside them, which identifies the text, is kept.
    """
    data = recipe.to_data()
    data["provenance"]["calibration"]["source"] = calibration_file
    if data["provenance"].get("search"):
        data["provenance"]["search"]["run"] = run
    return recipe_from_data(data, source=f"recipe from {run}")


def run_label(run_dir: Path) -> str:
    """The run folder relative to the repository, or its last two parts when outside it."""
    resolved = run_dir.resolve()
    if resolved.is_relative_to(REPO_ROOT):
        return str(resolved.relative_to(REPO_ROOT))
    return str(Path(resolved.parent.name) / resolved.name)


def search_facts(run_dir: Path, frame: pd.DataFrame, exported: Exported, out: Path) -> SearchFacts:
    """What a measured row says about the search behind its recipe."""
    layers = exported.recipe.pruning.layers.values()
    return SearchFacts(
        candidates=len(frame),
        failed=int((frame["status"] != "ok").sum()),
        search_minutes=RunLog.read(run_dir).wall_seconds / 60,
        fitness_minutes=float(frame["seconds"].sum()) / 60,
        recipe=exported.path.relative_to(out).as_posix(),
        eval_id=exported.eval_id,
        kl=exported.kl,
        rule=exported.recipe.to_candidate().metric.describe(),
        layer_min=min(layers),
        layer_max=max(layers),
    )


def copy_front_plot(spec: SearchSpec, run_dir: Path, out: Path) -> None:
    """The search's own front plot, as ``out/fronts/<name>.png``."""
    source = Run.open(run_dir).final_stage.front_plot_path
    if source.exists():
        copy_file(source, out / "fronts" / f"{spec.name}.png")
