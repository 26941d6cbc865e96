"""The run folder: what a search leaves on disk, and the one way to read it back.

::

    run/
      config.yaml           the resolved settings (what a resume reads)
      evaluations.parquet   every evaluation, one row each (compacted at the end of a run and on Ctrl-C)
      evaluations.parts/    evaluations appended since the last compaction: the crash-safe journal
      checkpoint.json       the algorithm's state after the last finished generation,
      checkpoint-*.npz      and the arrays it names
      pareto.csv            the front, one row per member, for people to read
      pareto.png            every evaluation in grey, the front in red
      recipes/              one YAML recipe per front member (a finalist's names its solvers)
      baselines.csv         the baselines: the first population's (uniform Wanda, OWL, ...) and their
                            rows, and the uniform curves pareto.png draws beside the front
      stage1-metric/ ...    a staged search: one such folder per stage, the front in the last one

Every file name above is defined here and nowhere else. :class:`Run` opens a folder from its
path alone::

    run = Run.open("runs/joint")
    run.config.pop, run.objectives.directions
    front = run.front()               # non-dominated evaluations, read from the archive now
    recipe = run.recipe_path(int(front.loc[0, "eval_id"]))

``run.final_stage`` is the folder where the front lives: the run itself, or its last stage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import yaml

from paretoprune.errors import InputError
from paretoprune.io import atomic_write_text
from paretoprune.search.config import SearchConfig, load_config, read_settings
from paretoprune.search.pareto import Objectives

if TYPE_CHECKING:  # archive.py takes its file names from this module, so it is imported where used
    from paretoprune.search.archive import Archive

__all__ = [
    "CHECKPOINT_FILE",
    "BASELINES_FILE",
    "CONFIG_FILE",
    "EVALUATIONS_FILE",
    "FRONT_PLOT",
    "FRONT_TABLE",
    "LEGACY_CHECKPOINT_FILE",
    "MEMORY_FILE",
    "PARTS_FOLDER",
    "RECIPES_FOLDER",
    "RECIPE_COLUMN",
    "Run",
    "read_run_config",
    "front_columns",
    "recipe_file_name",
    "stage_folder",
]

CONFIG_FILE = "config.yaml"
EVALUATIONS_FILE = "evaluations.parquet"
PARTS_FOLDER = "evaluations.parts"
CHECKPOINT_FILE = "checkpoint.json"  # its arrays sit beside it as checkpoint-<id>.npz
# Older releases pickled the checkpoint into this file; it is recognised only to refuse it.
LEGACY_CHECKPOINT_FILE = "checkpoint.pkl"
FRONT_TABLE = "pareto.csv"
FRONT_PLOT = "pareto.png"
RECIPES_FOLDER = "recipes"
BASELINES_FILE = "baselines.csv"
MEMORY_FILE = "memory.json"  # each evaluator's estimated needs, then the peaks its actors reported

# The front table's column for the recipe file of each member (empty while there is none).
RECIPE_COLUMN = "recipe"


def stage_folder(index: int, mode: str) -> str:
    """The sub-folder of stage ``index`` (counted from 0) of a staged search, e.g. stage1-metric."""
    return f"stage{index + 1}-{mode}"


def recipe_file_name(position: int, objectives: Mapping[str, float]) -> str:
    """A front member's recipe file: its place in the front, then its objective values.

    e.g. ``000-kl0.7327-sparsity0.5.yaml``: sorted by name, the files follow the front.
    """
    tag = "-".join(f"{name}{float(value):.4g}" for name, value in objectives.items())
    return f"{position:03d}-{tag}.yaml"


def read_run_config(run_dir: str | Path) -> dict[str, object]:
    """The settings a run folder's config file holds, as written; bad files give one line."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise InputError(f"{run_dir} holds no search ({CONFIG_FILE} missing): check the folder")
    return read_settings(path)


class Run:
    """One run folder of a search, opened from its path alone.

    Reading is lazy: ``Run.open`` reads the settings only, and the archive is read the first
    time it is asked for (a snapshot: reopen the run to see a running search's newer rows).
    """

    def __init__(self, folder: Path, config: SearchConfig) -> None:
        self.folder = folder
        self.config = config

    # -- opening and creating ------------------------------------------------------------------

    @classmethod
    def open(cls, folder: str | Path) -> Run:
        """The run in ``folder``; one line if it holds no readable search settings."""
        return cls(Path(folder), load_config(read_run_config(folder)))

    @staticmethod
    def holds_search(folder: str | Path) -> bool:
        """Whether ``folder`` holds a search's settings (a run, or a stage that has started)."""
        return (Path(folder) / CONFIG_FILE).exists()

    @classmethod
    def create(cls, config: SearchConfig) -> Run:
        """A new run folder at ``config.out`` holding ``config``; refused if one is there already."""
        folder = Path(config.out)
        if Run.holds_search(folder):
            raise InputError(f"{folder} already holds a search: resume it with --resume {folder} or pick a new --out")
        run = cls(folder, config)
        run.save_config(config)
        return run

    def save_config(self, config: SearchConfig) -> None:
        """Store ``config`` as this run's settings (a resume may raise the generations)."""
        atomic_write_text(self.folder / CONFIG_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False))
        self.config = config

    # -- what the search was ----------------------------------------------------------------------

    @property
    def objectives(self) -> Objectives:
        """What the search trades off, with each objective's direction."""
        return Objectives.of(self.config.objective_names)

    @property
    def stages(self) -> list[Run]:
        """The stages of a staged search that have started, in order; empty for a plain search."""
        folders = [self.folder / stage_folder(i, mode) for i, mode in enumerate(self.config.stages or ())]
        return [Run.open(folder) for folder in folders if Run.holds_search(folder)]

    @cached_property
    def final_stage(self) -> Run:
        """Where the front lives: this run, or the last stage of a staged one."""
        if not self.config.stages:
            return self
        last = len(self.config.stages) - 1
        folder = self.folder / stage_folder(last, self.config.stages[last])
        if not Run.holds_search(folder):
            raise InputError(f"{self.folder} is a staged search whose last stage has not started yet: "
                             f"its front will be in {folder}; resume it with --resume {self.folder}")  # fmt: skip
        return Run.open(folder)

    # -- where things are ---------------------------------------------------------------------------

    @property
    def recipes_folder(self) -> Path:
        return self.folder / RECIPES_FOLDER

    @property
    def front_table_path(self) -> Path:
        return self.folder / FRONT_TABLE

    @property
    def front_plot_path(self) -> Path:
        return self.folder / FRONT_PLOT

    @property
    def baselines_path(self) -> Path:
        return self.folder / BASELINES_FILE

    # -- what the search found ------------------------------------------------------------------------

    @cached_property
    def archive(self) -> Archive:
        """Every evaluation of the final stage, read-only (safe beside a running search)."""
        from paretoprune.search.archive import Archive

        return Archive.load(self.final_stage.folder)

    def evaluations(self) -> pd.DataFrame:
        """Every evaluation of the final stage, one row each, in eval_id order."""
        return self.archive.frame()

    def front(self) -> pd.DataFrame:
        """The non-dominated successful evaluations of the final stage, sorted by the objectives.

        Computed from the archive, so it works on finished, interrupted and running searches.
        """
        return self.objectives.front(self.evaluations())

    def recipes(self) -> list[Path]:
        """The recipe files of the front written when the search finished, in front order."""
        final = self.final_stage
        return [final.recipes_folder / name for name in final._recipe_names().values()]

    def recipe_path(self, eval_id: int) -> Path:
        """The recipe file of the front member with this eval_id; one line if there is none."""
        final = self.final_stage
        name = final._recipe_names().get(int(eval_id))
        if name is None:
            raise InputError(f"{final.folder} has no recipe for evaluation {eval_id} (the search has not "
                             f"finished): resume it with --resume {self.folder}")  # fmt: skip
        return final.recipes_folder / name

    def has_recipe(self, eval_id: int) -> bool:
        """Whether the front written when the search finished has a recipe for this evaluation."""
        return int(eval_id) in self.final_stage._recipe_names()

    def _recipe_names(self) -> dict[int, str]:
        """eval_id -> recipe file name, from the front table (empty before the search ends).

        A table written by an older release has no recipe column: its recipe files start with
        the member's row in the table.
        """
        if not self.front_table_path.exists():
            return {}
        table = pd.read_csv(self.front_table_path)
        if RECIPE_COLUMN in table:
            named = table.dropna(subset=[RECIPE_COLUMN])
            return {int(eval_id): str(name) for eval_id, name in zip(named["eval_id"], named[RECIPE_COLUMN])}
        found = {}
        for position, eval_id in enumerate(table["eval_id"]):
            files = sorted(self.recipes_folder.glob(f"{position:03d}-*.yaml"))
            if files:
                found[int(eval_id)] = files[0].name
        return found

    def baselines(self) -> pd.DataFrame:
        """The final stage's baselines, one row each (see ``search.baselines``); empty before the
        search has finished once, and for runs of older releases."""
        path = self.final_stage.baselines_path
        if not path.exists():
            return pd.DataFrame({"name": pd.Series(dtype=str), "eval_id": pd.Series(dtype="Int64")})
        return pd.read_csv(path, dtype={"name": str, "eval_id": "Int64"})

    def baseline_ids(self) -> dict[str, int]:
        """Name -> eval_id of each baseline the first population scored (its generation-0 row)."""
        table = self.baselines().dropna(subset=["eval_id"])
        return {str(name): int(eval_id) for name, eval_id in zip(table["name"], table["eval_id"])}

    # -- writing what the search found ----------------------------------------------------------------

    def save_front_table(self, table: pd.DataFrame) -> Path:
        """Write the front table (one row per member, short cells: see ``search.export.front_table``)."""
        return atomic_write_text(self.front_table_path, table.to_csv(index=False))

    def save_baselines(self, table: pd.DataFrame) -> Path:
        """Write the baselines' table (``search.baselines``): name, eval_id, curve, level, objectives."""
        return atomic_write_text(self.baselines_path, table.to_csv(index=False))

    def __repr__(self) -> str:
        return f"Run({str(self.folder)!r})"


def front_columns(objectives: Sequence[str]) -> list[str]:
    """The front table's columns, in order: identity, objectives, what the member is, its recipe."""
    achieved = [] if "sparsity" in objectives else ["achieved_sparsity"]
    return ["eval_id", "generation", *objectives, "fidelity", *achieved, "rule", RECIPE_COLUMN]
