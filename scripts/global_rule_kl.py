#!/usr/bin/env python3
"""The search's fitness of one allocation under Wanda and under global scoring rules, side by side.

Uniform ``--sparsity`` on SmolLM2-135M (or ``--model``) is scored by one CandidateEvaluator on
C4 calibration windows (the fitness of a layerwise search: next-token KL to the dense model),
under Wanda and under each global rule of ``--rules``, whose score maps are computed on the same
windows, as a search with ``--base-metric RULE`` computes them (through the score cache, so a
second run reads them). It prints each rule's KL, and what its map cost.

    python scripts/global_rule_kl.py --data-dir ../shared/data --nsamples 8 --seqlen 256
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from paretoprune.candidate import Candidate
from paretoprune.data import calibration_windows
from paretoprune.evaluators.fitness import CandidateEvaluator
from paretoprune.evaluators.stats import collect_stats
from paretoprune.global_scores import cached_score_map
from paretoprune.metrics.scores import KNOWN_METRICS
from paretoprune.models import find_layout, load_model

C4_TRAIN = Path("c4") / "c4-en-train-shard00000-first1000.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--nsamples", type=int, default=8)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--sparsity", type=float, default=0.6)
    parser.add_argument("--rules", default="lrp,unipruning-static", help="global rules, comma separated")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    loaded = load_model(args.model, dtype=torch.float32)
    layout = find_layout(loaded.model)
    tokens = calibration_windows(loaded.tokenizer, str(args.data_dir / C4_TRAIN), args.nsamples, args.seqlen, 0)
    stats = collect_stats(loaded.model, layout, tokens)
    maps = {}
    for rule in args.rules.split(","):
        started = time.perf_counter()
        maps[rule] = cached_score_map(rule, loaded.model, layout, tokens, model_id=args.model, progress=False)
        print(f"{rule:<18} map in {time.perf_counter() - started:7.1f} s", flush=True)
    wanda = KNOWN_METRICS["wanda"]
    evaluator = CandidateEvaluator(loaded.model, layout, stats, tokens, objectives=("kl",), rank_metric=wanda,
                                   score_maps=maps)  # fmt: skip
    uniform = Candidate(metric=wanda, sparsities={name: args.sparsity for name in layout.names})
    for rule in ["wanda", *maps]:
        candidate = uniform if rule == "wanda" else replace(uniform, global_rule=rule)
        started = time.perf_counter()
        kl = evaluator.evaluate(candidate)["kl"]
        print(f"{rule:<18} kl {kl:.4f}  ({time.perf_counter() - started:.1f} s; uniform {args.sparsity:.0%}, "
              f"{args.nsamples} x {args.seqlen} tokens)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
