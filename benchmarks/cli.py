"""``python -m benchmarks STUDY-OR-COMMAND [options]``: the command line of the harness.

Plan studies (``baselines``, ``searched``, ``zeroshot``) measure the plan rows their table
lacks; ``fitness``, ``fitness-noise``, ``bench-eval`` and ``scaling`` measure the evaluator and
the cluster; ``pages`` renders every page from the tables, ``plan`` lists the plan.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from paretoprune.errors import InputError
from paretoprune.evaluators.zeroshot_tasks import task_names

from benchmarks.evaluator_cli import add_evaluator_commands, data_options
from benchmarks.measurement import Measurement
from benchmarks.model_record import SMOLLM2_ALIAS
from benchmarks.pages.render import render_all
from benchmarks.plan import planned
from benchmarks.protocol import Windows
from benchmarks.runner import Filters, RunOptions, run_study
from benchmarks.searches import Budget
from benchmarks.studies import REPO_ROOT, RESULTS, STUDIES, study_named
from benchmarks.table import read_table
from benchmarks.zeroshot import ZeroShotScore

__all__ = ["main"]

logger = logging.getLogger("benchmarks")

DESCRIPTION = "The benchmark harness: measure the plan's rows, render the results pages."
RUNS = REPO_ROOT / "runs"
# A smoke run: tiny windows and budgets, into scratch folders.
QUICK_WINDOWS = Windows(calib_nsamples=4, calib_seqlen=64, eval_windows=2, eval_seqlen=64)
QUICK_BUDGET = Budget(pop=4, generations=1, nsamples=2, seqlen=64)
ZEROSHOT_LIMIT = 100  # examples per task
# The options a page's reproduce command names when they differ from their defaults.
TUNABLE = ("calib_nsamples", "calib_seqlen", "seed", "eval_windows", "eval_seqlen", "pop", "generations", "nsamples",
           "seqlen")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = _parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        args.run(args)
    except InputError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    except KeyboardInterrupt:
        logger.warning("interrupted: run the same command again to continue")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    """``kill`` stops a run the way Ctrl-C does: a search saves, Ray shuts down."""
    raise KeyboardInterrupt


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=DESCRIPTION)
    commands = parser.add_subparsers(required=True, metavar="STUDY-OR-COMMAND")
    for name, study in STUDIES.items():
        _plan_study_options(commands.add_parser(name, help=f"measure the {name} rows of the plan"), study.name)
    add_evaluator_commands(commands)
    pages = commands.add_parser("pages", help="render every page and figure from the tables (nothing is measured)")
    pages.add_argument("--results", type=Path, default=RESULTS, help="the results folder")
    pages.set_defaults(run=_pages)
    plan = commands.add_parser("plan", help="list a study's planned rows and which are measured")
    plan.add_argument("study", choices=list(STUDIES))
    plan.add_argument("--out", type=Path, default=None, help="its results folder (default: under results/)")
    plan.set_defaults(run=_plan)
    return parser


def _plan_study_options(parser: argparse.ArgumentParser, name: str) -> None:
    study, windows = STUDIES[name], Windows()
    data_options(parser)
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: under results/)")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    parser.add_argument("--only", default="", help="comma-separated row names: dense, wanda, owl-wanda, a search")
    parser.add_argument("--shapes", default="", help="comma-separated sparsities or structures, e.g. 0.7,2:4")
    parser.add_argument("--pruners", default="", help="comma-separated pruners, e.g. wanda,sparsegpt,update")
    parser.add_argument("--calibrations", default="", help="comma-separated subset of one-shot,sequential")
    parser.add_argument("--calib-nsamples", type=int, default=windows.calib_nsamples, help="calibration windows")
    parser.add_argument("--calib-seqlen", type=int, default=windows.calib_seqlen, help="tokens per calibration window")
    parser.add_argument("--eval-windows", type=int, default=windows.eval_windows, help="windows scored per set")
    parser.add_argument("--eval-seqlen", type=int, default=windows.eval_seqlen, help="tokens per evaluation window")
    parser.add_argument("--seed", type=int, default=windows.seed, help="calibration and search seed")
    parser.add_argument("--quick", action="store_true", help="tiny windows and budgets, scratch folders")
    if study.budget is not None:
        budget = study.budget
        parser.add_argument("--runs", type=Path, default=None, help="the searches' run folders")
        parser.add_argument("--pop", type=int, default=budget.pop, help="candidates per generation")
        parser.add_argument("--generations", type=int, default=budget.generations, help="generations per search")
        parser.add_argument("--nsamples", type=int, default=budget.nsamples, help="fitness windows")
        parser.add_argument("--seqlen", type=int, default=budget.seqlen, help="tokens per fitness window")
        parser.add_argument("--workers", type=int, default=budget.workers, help="Ray evaluator actors")
    if study.search_figures:
        parser.add_argument("--baselines", type=Path, default=None, help="baselines results to compare with")
    if study.zero_shot:
        parser.add_argument("--limit", type=int, default=ZEROSHOT_LIMIT, help="examples per task (seeded subset)")
    parser.set_defaults(run=_run_plan_study, study=name)


def _run_plan_study(args: argparse.Namespace) -> None:
    study = study_named(args.study)
    _check_positive(args)
    windows = QUICK_WINDOWS if args.quick else Windows(args.calib_nsamples, args.calib_seqlen, args.seed,
                                                       args.eval_windows, args.eval_seqlen)  # fmt: skip
    budget = None
    if study.budget is not None:
        budget = QUICK_BUDGET if args.quick else Budget(args.pop, args.generations, args.nsamples, args.seqlen,
                                                        args.workers)  # fmt: skip
    scratch = Path(tempfile.gettempdir()) / f"paretoprune-bench-{study.name}-quick"
    options = RunOptions(
        out=args.out or (scratch if args.quick else study.results),
        runs=getattr(args, "runs", None) or (scratch / "runs" if args.quick else RUNS / study.runs),
        data_dir=args.data_dir,
        model=args.model,
        windows=windows,
        budget=budget,
        batch_size=args.batch_size,
        filters=Filters(_words(args.only), _words(args.shapes), _words(args.pruners), _words(args.calibrations)),
        baselines=getattr(args, "baselines", None),
        tasks=tuple(task_names()) if study.zero_shot else (),
        task_limit=getattr(args, "limit", None),
        command=_reproduce_command(args, study.name),
    )
    run_study(study, options)


def _words(text: str) -> tuple[str, ...]:
    return tuple(word.strip() for word in text.split(",") if word.strip())


def _check_positive(args: argparse.Namespace) -> None:
    at_least = {"batch_size": 1, "calib_nsamples": 1, "eval_windows": 1, "pop": 1, "generations": 1, "nsamples": 1,
                "workers": 1, "limit": 1, "calib_seqlen": 2, "eval_seqlen": 2, "seqlen": 2}  # fmt: skip
    for name, least in at_least.items():
        if getattr(args, name, least) < least:
            raise InputError(f"--{name.replace('_', '-')} must be at least {least}")


def _reproduce_command(args: argparse.Namespace, study: str) -> str:
    """The command line that makes (or finishes) a study's table, without machine paths."""
    words = ["python -m benchmarks", study]
    if args.quick:
        return " ".join([*words, "--quick"])
    defaults = {**vars(Windows()), **vars(STUDIES[study].budget or Budget())}
    words += [f"--{option.replace('_', '-')} {getattr(args, option)}" for option in TUNABLE
              if hasattr(args, option) and getattr(args, option) != defaults[option]]  # fmt: skip
    if STUDIES[study].zero_shot:
        words.append(f"--limit {args.limit}")
    if args.model != SMOLLM2_ALIAS:
        words.append(f"--model {args.model}")
    return " ".join(words)


def _pages(args: argparse.Namespace) -> None:
    render_all(args.results)


def _plan(args: argparse.Namespace) -> None:
    """Each planned row of the study, and whether its table holds it."""
    study = study_named(args.study)
    folder = args.out or study.results
    rows = read_table(folder / study.table, ZeroShotScore if study.zero_shot else Measurement)
    done = {row.pruning for row in rows}
    lines = [f"{'measured' if pruning in done else 'missing ':8}  {pruning.describe()}" for pruning in planned(study.name)]
    sys.stdout.write("\n".join(lines) + f"\n{len(done)} of {len(lines)} rows measured in {folder / study.table}\n")
