"""One row of the Wanda++ figures with RO's settings made explicit (``prune`` uses the defaults).

The protocol of ``paretoprune prune``: SmolLM2-135M in fp32, 32 x 512 C4-train calibration windows
(seed 0), one-shot, WikiText-2 test perplexity on the first 32 x 512 windows. Prints one JSON line.

    PARETOPRUNE_DATA=<shared data folder> python results/wanda_plus_plus/run.py \\
        --method wanda++ --structure 2:4 --solver regional --lr 3e-5 --samples 8
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

from paretoprune.candidate import Candidate
from paretoprune.data import calibration_windows, evaluation_windows
from paretoprune.evaluators.perplexity import perplexity
from paretoprune.metrics.regional import RegionalSettings
from paretoprune.metrics.scores import metric_by_name
from paretoprune.metrics.solvers import parse_chain
from paretoprune.models import find_layout, load_model
from paretoprune.pruning import prune_model, uniform_sparsities


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="wanda++")
    parser.add_argument("--structure", default="unstructured")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--solver", default="")
    parser.add_argument("--nsamples", type=int, default=32, help="calibration windows")
    parser.add_argument("--grad-coef", type=float, default=None, help="the rule's gradient coefficient instead of its own")
    defaults = RegionalSettings()
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--samples", type=int, default=defaults.samples)
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    return parser.parse_args()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = _arguments()
    data = Path(os.environ["PARETOPRUNE_DATA"])
    loaded = load_model("smollm2-135m")
    layout = find_layout(loaded.model)
    started = time.perf_counter()
    tokens = calibration_windows(loaded.tokenizer, str(data / "c4" / "c4-en-train-shard00000-first1000.jsonl"), args.nsamples, 512, 0)
    metric = metric_by_name(args.method)
    if args.grad_coef is not None:
        metric = replace(metric, name=f"{args.method}@g{args.grad_coef:g}", grad_coef=args.grad_coef)
    candidate = Candidate(metric=metric, sparsities=uniform_sparsities(layout, args.sparsity),
                          structure=args.structure, solvers=parse_chain(args.solver))  # fmt: skip
    settings = RegionalSettings(rounds=args.rounds, lr=args.lr, samples=args.samples)
    report = prune_model(loaded.model, layout, candidate, tokens, progress=False, regional=settings)
    pruned = time.perf_counter()
    windows = evaluation_windows(loaded.tokenizer, str(data / "wikitext2" / "wiki.test.raw"), 512, 32)
    scored = perplexity(loaded.model, windows, batch_size=8)
    print(json.dumps({**vars(args), "sparsity_reached": report.sparsity, "wikitext2_ppl": scored.perplexity,
                      "prune_seconds": round(pruned - started, 1),
                      "eval_seconds": round(time.perf_counter() - pruned, 1)}))  # fmt: skip


if __name__ == "__main__":
    main()
