"""Scaling: candidates per minute with 1 worker of 2 threads vs 2 workers of 1 thread.

Both setups run the same search (same seed, so the same candidates) on SmolLM2-135M, one after
the other and repeated in turns, so that a busy machine slows both alike. Each run is a real
``run_search`` on a local Ray cluster; the figures come from its archive (the seconds each
evaluation took inside its actor) and from the wall clock around the whole run. A dense forward
pass over the same fitness tokens is timed too, so that per-candidate costs can be scaled to
other models by FLOPs (results/scaling/README.md does that for a 7B model on 8 GPUs).

    nice -n 10 python scripts/bench_scaling.py                 # ~17 min on a busy 2-core machine
    nice -n 10 python scripts/bench_scaling.py --repeats 1 --generations 1   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch

from paretoprune.evaluators.placement import count_parameters
from paretoprune.search.archive import Archive
from paretoprune.search.driver import SearchConfig, run_search

__all__ = ["Measurement", "Setup", "main"]

logger = logging.getLogger("bench_scaling")

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Setup:
    label: str
    workers: int
    threads: int


SETUPS = (Setup("1 worker x 2 threads", 1, 2), Setup("2 workers x 1 thread", 2, 1))


@dataclass(frozen=True)
class Measurement:
    setup: str
    repeat: int
    evaluations: int
    wall_s: float  # the whole run_search: model load, statistics, actor start-up, generations
    busy_s: float  # the busiest worker's summed evaluation seconds: the evaluation makespan
    candidate_s: float  # median seconds of one evaluation inside its actor
    workers_seen: int

    @property
    def per_minute_wall(self) -> float:
        return 60.0 * self.evaluations / self.wall_s

    @property
    def per_minute_busy(self) -> float:
        return 60.0 * self.evaluations / self.busy_s


def search_config(args: argparse.Namespace, setup: Setup, out: Path) -> SearchConfig:
    return SearchConfig(
        model=args.model, out=str(out), calib=args.calib, nsamples=args.nsamples, seqlen=args.seqlen,
        mode="layerwise", sparsity=args.sparsity, pop=args.pop, generations=args.generations,
        workers=setup.workers, threads_per_worker=setup.threads, gpus_per_worker=0, seed=args.seed,
    )  # fmt: skip


def run_once(config: SearchConfig, setup: Setup, repeat: int) -> tuple[Measurement, pd.DataFrame]:
    """One search, timed; its archive sorted by evaluation id."""
    shutil.rmtree(config.out, ignore_errors=True)
    started = time.perf_counter()
    run_search(config, progress=False)
    wall = time.perf_counter() - started
    frame = Archive.load(config.out).frame().sort_values("eval_id").reset_index(drop=True)
    ok = frame[frame["status"] == "ok"]
    measurement = Measurement(
        setup=setup.label, repeat=repeat, evaluations=len(ok), wall_s=wall,
        busy_s=float(ok.groupby("worker")["seconds"].sum().max()),
        candidate_s=float(ok["seconds"].median()), workers_seen=int(ok["worker"].nunique()),
    )  # fmt: skip
    return measurement, frame


def dense_forward_seconds(args: argparse.Namespace, threads: int, repeats: int = 3) -> float:
    """Median seconds of one dense forward over the fitness tokens, with ``threads`` threads."""
    from paretoprune.data import calibration_windows
    from paretoprune.models import load_model

    loaded = load_model(args.model)
    tokens = calibration_windows(loaded.tokenizer, args.calib, args.nsamples, args.seqlen, args.seed)
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


def same_candidates(frames: Sequence[pd.DataFrame]) -> bool:
    """Whether every run evaluated the same candidates under the same ids."""
    first = list(frames[0]["candidate"])
    return all(list(frame["candidate"]) == first for frame in frames[1:])


def summary_table(measurements: Sequence[Measurement]) -> str:
    """Medians over repeats, one row per setup, as a Markdown table."""
    lines = [
        "| setup | runs | evaluations | candidate s (median) | wall s | cand/min (wall) | cand/min (eval makespan) |",
        "|---|---|---|---|---|---|---|",
    ]
    for setup in SETUPS:
        mine = [m for m in measurements if m.setup == setup.label]
        if not mine:
            continue
        lines.append(
            f"| {setup.label} | {len(mine)} | {mine[0].evaluations} "
            f"| {statistics.median(m.candidate_s for m in mine):.2f} "
            f"| {statistics.median(m.wall_s for m in mine):.1f} "
            f"| {statistics.median(m.per_minute_wall for m in mine):.1f} "
            f"| {statistics.median(m.per_minute_busy for m in mine):.1f} |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--calib", default="builtin")
    parser.add_argument("--nsamples", type=int, default=4)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--pop", type=int, default=8)
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each setup, taken in turns")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-scaling")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("ray", "transformers", "paretoprune"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)

    forward = {threads: dense_forward_seconds(args, threads) for threads in (1, 2)}
    logger.info("dense forward: %s", {k: round(v, 3) for k, v in forward.items()})
    measurements, frames = [], []
    for repeat in range(args.repeats):
        for setup in SETUPS:
            out = args.out / f"{setup.workers}x{setup.threads}-r{repeat}"
            measurement, frame = run_once(search_config(args, setup, out), setup, repeat)
            logger.info("%s", measurement)
            measurements.append(measurement)
            frames.append(frame)

    tokens = args.nsamples * args.seqlen
    params = count_parameters(args.model) or 0
    report = {
        "settings": {k: str(v) for k, v in vars(args).items()},
        "threads_available": torch.get_num_threads(),
        "parameters": params,
        "tokens_per_candidate": tokens,
        "forward_flops": 2 * params * tokens,
        "dense_forward_s": forward,
        "same_candidates": same_candidates(frames),
        "runs": [asdict(m) | {"per_minute_wall": m.per_minute_wall, "per_minute_busy": m.per_minute_busy}
                 for m in measurements],
    }  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(report, indent=2))
    print(summary_table(measurements))
    print(f"dense forward over {tokens} tokens: {forward[1]:.2f} s with 1 thread, {forward[2]:.2f} s with 2")
    print(f"forward FLOPs ~ 2 x {params / 1e6:.1f}M params x {tokens} tokens = {2 * params * tokens / 1e9:.0f} GFLOP")
    print(f"same candidates in every run: {report['same_candidates']}; details: {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
