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
import logging
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from paretoprune.data import calibration_windows, evaluation_windows, load_text
from paretoprune.errors import InputError
from paretoprune.evaluators.perplexity import perplexity
from paretoprune.models import find_layout, load_model
from paretoprune.pruning import measure_sparsity
from paretoprune.recipe import Recipe, load_recipe
from paretoprune.search.archive import Archive
from paretoprune.workflows import apply_recipe

from bench_allocation import block_sparsities, plot_allocations, update_allocations
from bench_curve import CurveScorer, plot_ppl_curves, update_ppl_curve
from bench_io import (
    check_same_protocol,
    describe_model,
    file_sha256,
    in_plan_order,
    read_rows,
    row_key,
    write_rows,
    write_text_atomic,
)
from bench_kl_curve import update_curves
from bench_plan import (
    CALIBRATION_FILE,
    CALIBRATIONS,
    COLUMNS,
    DENSE,
    DENSE_KEY,
    EVALUATION_FILES,
    KEY_COLUMNS,
    MODEL,
    PRUNERS,
    Budget,
    Protocol,
    SearchSpec,
    plan,
    planned_keys,
    search_kind,
    select,
    with_calibration,
)
from bench_report import SEARCH_METHODS, baseline_entries, render_readme
from bench_runs import copy_front_plot, ensure_search, export_pick, recipe_fields, search_cost

__all__ = ["Bench", "Options", "Table", "main", "parse_options", "run"]

logger = logging.getLogger("bench_search")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
DEFAULT_BASELINES = REPO_ROOT / "results" / "baselines" / "baselines.csv"

# What a row says about the search behind its recipe, the same in every row of that recipe.
SEARCH_FACTS = ("candidates", "failed", "search_minutes", "fitness_minutes", "recipe", "eval_id", "kl", "rule",
                "layer_min", "layer_max")  # fmt: skip
RowKey = tuple[str, str, str, str]  # search, level, pruner, calibration
Sources = dict[str, tuple[Recipe, dict[str, str]]]  # by level: the recipe and its search facts


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


def measure_recipe(
    bench: Bench, recipe: Recipe, pruner: str, calibration: str, protocol: Protocol
) -> dict[str, str]:
    """Prune a freshly loaded model with the recipe and score it.

    ``pruner`` is one of ``PRUNERS`` (``update``: the recipe's rule, then SparseGPT's update of
    the survivors); ``calibration`` one of ``CALIBRATIONS``.
    """
    loaded = load_model(bench.model)
    started = time.perf_counter()
    report = apply_recipe(
        loaded.model, recipe, bench.calibration, pruner="recipe" if pruner == "update" else pruner,
        update=pruner == "update", sequential=calibration == "sequential", progress=False,
    )  # fmt: skip
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
        "pruner": "none", "calibration": "none",
        "achieved_sparsity": f"{measure_sparsity(find_layout(loaded.model)).sparsity:.6f}",
        **scores, "prune_seconds": "0.0", "eval_seconds": f"{eval_seconds:.1f}", **protocol.row_fields(),
    }  # fmt: skip


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
    pruners: tuple[str, ...]  # empty: every pruner
    calibrations: tuple[str, ...]  # empty: one-shot and sequential
    quick: bool
    command: str

    def wants(self, key: RowKey) -> bool:
        """Whether this run measures the row (``--pruners`` and ``--calibrations`` filter)."""
        _, _, pruner, calibration = key
        return (not self.pruners or pruner in self.pruners) and (
            not self.calibrations or calibration in self.calibrations
        )


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
    parser.add_argument("--pruners", default="", help=f"comma-separated subset of {','.join(PRUNERS)}")
    parser.add_argument("--calibrations", default="", help=f"comma-separated subset of {','.join(CALIBRATIONS)}")
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
        only=_words(args.only),
        pruners=_chosen(args.pruners, PRUNERS, "--pruners"),
        calibrations=_chosen(args.calibrations, CALIBRATIONS, "--calibrations"),
        quick=args.quick,
        command=_reproduce_command(args),
    )


def _words(text: str) -> tuple[str, ...]:
    return tuple(word.strip() for word in text.split(",") if word.strip())


def _chosen(text: str, known: Sequence[str], option: str) -> tuple[str, ...]:
    words = _words(text)
    unknown = sorted(set(words) - set(known))
    if unknown:
        raise InputError(f"{option} {','.join(unknown)} is not known; choose among {', '.join(known)}")
    return words


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
    protocol = Protocol(
        model=describe_model(options.model, loaded.model, layout),
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
    planned: list[tuple[str, str, str, str]]
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
    """Search (or resume), export the picks, and measure every row of this search not yet done.

    When the run folder is gone but every pick was measured before, the search is not run
    again: the missing rows apply the recipes exported then.
    """
    options = table.options
    todo = [key for key in spec.row_keys() if key not in table.done and options.wants(key)]
    run_dir = options.runs / spec.name
    if not todo and spec.has_ppl_curve:
        backfill_allocation(spec, bench, options.out)
    if not (run_dir / "config.yaml").exists():
        if not todo:
            return  # its rows came from elsewhere: no archive here to draw curves from
        earlier = measured_before(spec, table)
        if earlier is not None:
            measure_rows(spec, todo, earlier, table, bench)
            return
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
    sources = {f"{pick.level:g}": (found.recipe, {**cost.row_fields(), **recipe_fields(found, options.out)})
               for pick, found in exported.items()}  # fmt: skip
    measure_rows(spec, todo, sources, table, bench)


def measured_before(spec: SearchSpec, table: Table) -> Sources | None:
    """Each pick's exported recipe and the search facts of a row already measured with it;
    None unless every pick has both."""
    sources = {}
    for pick in spec.picks():
        level = f"{pick.level:g}"
        rows = [row for row in table.rows if row["search"] == spec.name and row["target_sparsity"] == level]
        path = table.options.out / "recipes" / f"{pick.name}.yaml"
        if not rows or not path.exists():
            return None
        sources[level] = (load_recipe(path), {name: rows[0][name] for name in SEARCH_FACTS})
    return sources


def measure_rows(spec: SearchSpec, todo: Sequence[RowKey], sources: Sources, table: Table, bench: Bench) -> None:
    """Apply each row's recipe as its key says, score it, and add the row to the table."""
    for name, level, pruner, calibration in todo:
        recipe, facts = sources[level]
        measured = measure_recipe(bench, recipe, pruner, calibration, table.protocol)
        row = {
            "search": name, "mode": spec.mode, "structure": spec.structure, "target_sparsity": level,
            "pruner": pruner, "calibration": calibration, **measured, **facts, **table.protocol.row_fields(),
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
    if DENSE_KEY in table.done:
        return
    row = measure_dense(bench, table.protocol)
    _log_row(row)
    table.add(row)


def _log_row(row: Mapping[str, str]) -> None:
    logger.info("%-32s %-9s %-10s at %-4s sparsity %.4f  ppl wikitext2 %.3f ptb %.3f c4 %.3f",
                row["search"], row["pruner"], row["calibration"], row["target_sparsity"],
                float(row["achieved_sparsity"]), float(row["wikitext2_ppl"]), float(row["ptb_ppl"]),
                float(row["c4_ppl"]))  # fmt: skip


def run(options: Options) -> Table:
    """Every selected search in plan order, the dense row after the first one (the headline)."""
    everything = plan()[:2] if options.quick else plan()
    searches = select(everything, options.only)
    bench, protocol = prepare(options)
    csv_path = options.out / "searched.csv"
    rows = [with_calibration(row) for row in read_rows(csv_path)]
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
    heads = ("search", "pruner", "calibration", "target", "sparsity", "wikitext2", "ptb", "c4")
    print(f"{heads[0]:34} {heads[1]:9} {heads[2]:10} {heads[3]:>6} {heads[4]:>8} {heads[5]:>10} {heads[6]:>10} "
          f"{heads[7]:>10}")
    for row in table.rows:
        print(f"{row['search']:34} {row['pruner']:9} {row['calibration']:10} {row['target_sparsity']:>6} "
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
