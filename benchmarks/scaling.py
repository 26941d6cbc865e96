"""Scaling: candidates per minute with 1 worker of 2 threads against 2 workers of 1 thread.

Both setups run the same search (same seed, so the same candidates), one after the other and
repeated in turns, so that a busy machine slows both alike. Each run is a real ``run_search``
on a local Ray cluster; the figures come from its archive (the seconds each evaluation took in
its actor) and from the wall clock around it. A dense forward over the same fitness tokens is
timed too, so that per-candidate costs can be scaled to other models by FLOPs.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from paretoprune.data import calibration_windows
from paretoprune.models import load_model
from paretoprune.search.driver import SearchConfig, run_search

from benchmarks.search_runs import run_archive

__all__ = ["SETUPS", "ScalingOptions", "ScalingRun", "ScalingSetup", "ScalingSummary", "dense_forward_seconds",
           "measure_scaling", "run_once", "summarize"]  # fmt: skip

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScalingSetup:
    label: str
    workers: int
    threads: int  # torch threads per worker


SETUPS = (ScalingSetup("1 worker x 2 threads", 1, 2), ScalingSetup("2 workers x 1 thread", 2, 1))


@dataclass(frozen=True)
class ScalingRun:
    setup: str
    repeat: int
    evaluations: int  # successful ones
    wall_s: float  # the whole run_search: model load, statistics, actor start-up, generations
    busy_s: float  # the busiest worker's summed evaluation seconds: the evaluation makespan
    candidate_s: float  # median seconds of one evaluation inside its actor
    workers_seen: int
    same_candidates: bool  # it evaluated the first run's candidates under the same ids


@dataclass(frozen=True)
class ScalingSummary:
    setup: str
    workers: int
    threads: int
    runs: int  # of this setup, taken in turns with the other
    evaluations: int  # per run
    candidate_s: float  # medians over the runs: seconds of one evaluation in its actor
    wall_s: float  # ... of the whole run
    per_minute_wall: float  # candidates per minute of wall clock
    per_minute_busy: float  # ... of the busiest worker's evaluation time
    forward_s: float  # a dense forward over the fitness tokens, with this setup's threads


def run_once(config: SearchConfig, setup: ScalingSetup, repeat: int,
             first: pd.DataFrame | None) -> tuple[ScalingRun, pd.DataFrame]:  # fmt: skip
    """One search from scratch, timed; its archive sorted by evaluation id."""
    shutil.rmtree(config.out, ignore_errors=True)
    started = time.perf_counter()
    run_search(config, progress=False)
    wall = time.perf_counter() - started
    frame = run_archive(config.out).sort_values("eval_id").reset_index(drop=True)
    ok = frame[frame["status"] == "ok"]
    same = first is None or list(frame["candidate"]) == list(first["candidate"])
    return ScalingRun(
        setup=setup.label, repeat=repeat, evaluations=len(ok), wall_s=wall,
        busy_s=float(ok.groupby("worker")["seconds"].sum().max()), candidate_s=float(ok["seconds"].median()),
        workers_seen=int(ok["worker"].nunique()), same_candidates=same,
    ), frame  # fmt: skip


def dense_forward_seconds(model: str, calib: str, nsamples: int, seqlen: int, seed: int, threads: int,
                          repeats: int = 3) -> float:  # fmt: skip
    """Median seconds of one dense forward over the fitness tokens, with ``threads`` threads."""
    loaded = load_model(model)
    tokens = calibration_windows(loaded.tokenizer, calib, nsamples, seqlen, seed)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            loaded.model(input_ids=tokens, use_cache=False)  # warm-up
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                loaded.model(input_ids=tokens, use_cache=False)
                times.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(times)


def summarize(runs: Sequence[ScalingRun], forward: dict[int, float]) -> list[ScalingSummary]:
    """Medians over the repeats, one row per setup (``forward``: seconds by thread count)."""
    rows = []
    for setup in SETUPS:
        mine = [run for run in runs if run.setup == setup.label]
        if mine:
            rows.append(ScalingSummary(
                setup.label, setup.workers, setup.threads, len(mine), mine[0].evaluations,
                statistics.median(run.candidate_s for run in mine), statistics.median(run.wall_s for run in mine),
                statistics.median(60.0 * run.evaluations / run.wall_s for run in mine),
                statistics.median(60.0 * run.evaluations / run.busy_s for run in mine), forward[setup.threads],
            ))  # fmt: skip
    return rows


@dataclass(frozen=True)
class ScalingOptions:
    model: str = "smollm2-135m"
    calib: str = "builtin"  # fitness text
    nsamples: int = 4  # fitness windows
    seqlen: int = 128  # tokens per window
    sparsity: float = 0.5
    pop: int = 8
    generations: int = 2
    seed: int = 0
    repeats: int = 2  # runs of each setup, taken in turns


def measure_scaling(options: ScalingOptions, runs_dir: Path) -> tuple[list[ScalingRun], list[ScalingSummary]]:
    """Every setup ``repeats`` times, in turns; each run's figures and the medians per setup."""
    forward = {threads: dense_forward_seconds(options.model, options.calib, options.nsamples, options.seqlen,
                                              options.seed, threads) for threads in {s.threads for s in SETUPS}}  # fmt: skip
    runs, first = [], None
    for repeat in range(options.repeats):
        for setup in SETUPS:
            config = SearchConfig(
                model=options.model, out=str(runs_dir / f"{setup.workers}x{setup.threads}-r{repeat}"),
                calib=options.calib, nsamples=options.nsamples, seqlen=options.seqlen, mode="layerwise",
                sparsity=options.sparsity, pop=options.pop, generations=options.generations, workers=setup.workers,
                threads_per_worker=setup.threads, gpus_per_worker=0, seed=options.seed,
            )  # fmt: skip
            run, frame = run_once(config, setup, repeat, first)
            first = frame if first is None else first
            logger.info("%s, run %d: %d evaluations, %.0f s", setup.label, repeat, run.evaluations, run.wall_s)
            runs.append(run)
    return runs, summarize(runs, forward)
