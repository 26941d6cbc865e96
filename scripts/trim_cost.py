#!/usr/bin/env python3
"""What one fitness evaluation costs with TRIM's rows against uniform rows, side by side.

One candidate, uniform Wanda at ``--sparsity`` on SmolLM2-135M (or ``--model``), is scored by
one CandidateEvaluator on C4 calibration windows (the statistics keep last-token inputs, as a
search with ``--search-rows`` gathers them), first with uniform rows and then with TRIM's, in
alternation, after one warm-up evaluation. It prints each timing and the median ratio.

    python scripts/trim_cost.py --data-dir ../shared/data --nsamples 8 --seqlen 256
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from paretoprune.candidate import Candidate
from paretoprune.data import calibration_windows
from paretoprune.evaluators.fitness import CandidateEvaluator
from paretoprune.evaluators.stats import collect_stats
from paretoprune.metrics.scores import KNOWN_METRICS
from paretoprune.models import find_layout, load_model

C4_TRAIN = Path("c4") / "c4-en-train-shard00000-first1000.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--nsamples", type=int, default=8)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    loaded = load_model(args.model, dtype=torch.float32)
    layout = find_layout(loaded.model)
    tokens = calibration_windows(loaded.tokenizer, str(args.data_dir / C4_TRAIN), args.nsamples, args.seqlen, 0)
    stats = collect_stats(loaded.model, layout, tokens, last_tokens=True)
    wanda = KNOWN_METRICS["wanda"]
    # The rank cache of the rule, as a layerwise search builds it.
    evaluator = CandidateEvaluator(loaded.model, layout, stats, tokens, objectives=("kl",), rank_metric=wanda)
    uniform = Candidate(metric=wanda, sparsities={name: args.sparsity for name in layout.names})
    candidates = {"uniform": uniform, "trim": replace(uniform, rows="trim")}
    evaluator.evaluate(uniform)  # warm-up: first-touch costs belong to neither
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(args.repeats):
        for name, candidate in candidates.items():
            started = time.perf_counter()
            kl = evaluator.evaluate(candidate)["kl"]
            seconds[name].append(time.perf_counter() - started)
            print(f"{name:<8} {seconds[name][-1]:7.2f} s  kl {kl:.4f}", flush=True)
    ratio = statistics.median(seconds["trim"]) / statistics.median(seconds["uniform"])
    print(f"trim / uniform: {ratio:.1f}x ({args.nsamples} x {args.seqlen} tokens, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
