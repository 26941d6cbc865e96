"""The commands that measure the evaluator and the cluster rather than pruned models:
``fitness``, ``fitness-noise``, ``bench-eval`` and ``scaling``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from paretoprune.errors import InputError

from benchmarks.bench_eval import EvaluatorCost, measure_evaluator
from benchmarks.fitness import FitnessOptions, FitnessScore, score_candidates
from benchmarks.fitness_noise import NoiseScore, rescore_run
from benchmarks.model_record import SMOLLM2_ALIAS
from benchmarks.pages.evaluator import COST, CORRELATION, NOISE, render_evaluator
from benchmarks.pages.render import EVALUATOR, SCALING
from benchmarks.pages.scaling import TABLE as SCALING_TABLE
from benchmarks.pages.scaling import render_scaling
from benchmarks.scaling import ScalingOptions, ScalingRun, ScalingSummary, measure_scaling
from benchmarks.studies import REPO_ROOT, RESULTS
from benchmarks.table import replace_rows, write_table

__all__ = ["DATA_DIR", "add_evaluator_commands", "data_options"]

logger = logging.getLogger(__name__)

DATA_DIR = REPO_ROOT.parent / "shared" / "data"  # the shared data folder, next to the checkout


def data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="the shared data folder")
    parser.add_argument("--model", default=SMOLLM2_ALIAS, help="model alias, folder or .gguf file")


def add_evaluator_commands(commands: Any) -> None:
    """Add the four commands to ``commands`` (an argparse sub-parser set)."""
    defaults = FitnessOptions()
    fitness = commands.add_parser("fitness", help="which fitness predicts perplexity (Spearman rho)")
    data_options(fitness)
    fitness.add_argument("--candidates", type=int, default=defaults.candidates, help="random layerwise candidates")
    fitness.add_argument("--sparsity", type=float, default=defaults.sparsity, help="their target sparsity")
    fitness.add_argument("--budgets", default="4x256,16x256", help="fitness budgets, WINDOWSxTOKENS,...")
    fitness.add_argument("--eval-windows", type=int, default=defaults.eval_windows, help="WikiText-2 windows")
    fitness.add_argument("--eval-seqlen", type=int, default=defaults.eval_seqlen, help="tokens per window")
    fitness.add_argument("--out", type=Path, default=RESULTS / EVALUATOR, help="results folder")
    fitness.set_defaults(run=_fitness)

    noise = commands.add_parser("fitness-noise", help="score a search's best candidates again on other C4 samples")
    noise.add_argument("--run", type=Path, required=True, action="append", help="a finished search's run folder")
    noise.add_argument("--top", type=int, default=8, help="how many of its best candidates")
    noise.add_argument("--fresh", type=int, default=3, help="fresh samples of the search's size")
    noise.add_argument("--large", default="32x512", help="the large sample, WINDOWSxTOKENS")
    noise.add_argument("--out", type=Path, default=RESULTS / EVALUATOR, help="results folder")
    noise.set_defaults(run=_fitness_noise)

    cost = commands.add_parser("bench-eval", help="a candidate evaluation against a dense forward, and memory")
    data_options(cost)
    cost.add_argument("--nsamples", type=int, default=8, help="fitness windows")
    cost.add_argument("--seqlen", type=int, default=256, help="tokens per window")
    cost.add_argument("--candidates", type=int, default=5, help="timed evaluations of each kind")
    cost.add_argument("--out", type=Path, default=RESULTS / EVALUATOR, help="results folder")
    cost.set_defaults(run=_bench_eval)

    scaling = commands.add_parser("scaling", help="candidates per minute: 1 worker x 2 threads, 2 workers x 1")
    options = ScalingOptions()
    scaling.add_argument("--model", default=options.model, help="model alias, folder or .gguf file")
    scaling.add_argument("--calib", default=options.calib, help="fitness text")
    for name in ("nsamples", "seqlen", "pop", "generations", "seed", "repeats"):
        scaling.add_argument(f"--{name}", type=int, default=getattr(options, name))
    scaling.add_argument("--sparsity", type=float, default=options.sparsity)
    scaling.add_argument("--runs", type=Path, default=REPO_ROOT / "runs" / "bench-scaling", help="run folders")
    scaling.add_argument("--out", type=Path, default=RESULTS / SCALING, help="results folder")
    scaling.set_defaults(run=_scaling)


def _windows(text: str, option: str) -> tuple[int, int]:
    try:
        windows, tokens = (int(value) for value in text.lower().split("x"))
    except ValueError:
        raise InputError(f"{option} {text!r} is not WINDOWSxTOKENS, e.g. 32x512") from None
    return windows, tokens


def _fitness(args: argparse.Namespace) -> None:
    budgets = tuple(_windows(budget, "--budgets") for budget in args.budgets.split(","))
    options = FitnessOptions(args.candidates, args.sparsity, budgets=budgets, eval_windows=args.eval_windows,
                             eval_seqlen=args.eval_seqlen)  # fmt: skip
    write_table(args.out / CORRELATION, score_candidates(args.model, args.data_dir, options), FitnessScore)
    render_evaluator(args.out)


def _fitness_noise(args: argparse.Namespace) -> None:
    large = _windows(args.large, "--large")
    for run_dir in args.run:
        scores = rescore_run(run_dir, args.top, args.fresh, large)
        replace_rows(args.out / NOISE, NoiseScore, lambda score: score.run != run_dir.name, scores,
                     lambda score: score.run)  # fmt: skip
    render_evaluator(args.out)


def _bench_eval(args: argparse.Namespace) -> None:
    cost = measure_evaluator(args.model, args.data_dir, args.nsamples, args.seqlen, args.candidates)
    write_table(args.out / COST, [cost], EvaluatorCost)
    render_evaluator(args.out)


def _scaling(args: argparse.Namespace) -> None:
    options = ScalingOptions(args.model, args.calib, args.nsamples, args.seqlen, args.sparsity, args.pop,
                             args.generations, args.seed, args.repeats)  # fmt: skip
    runs, summaries = measure_scaling(options, args.runs)
    write_table(args.runs / "runs.csv", runs, ScalingRun)
    write_table(args.out / SCALING_TABLE, summaries, ScalingSummary)
    render_scaling(args.out)
