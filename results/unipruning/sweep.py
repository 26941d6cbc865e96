"""UniPruning at several sparsities from one calibration, in one process (one model load).

``paretoprune prune --method unipruning`` runs the registered settings (64 steps of 256 tokens).
This script runs the same library calls with a chosen number of steps and tokens per step, for
machines where the default calibration does not fit the budget, and prunes the dense model at
each target from the one score map (cached where the command line caches it)::

    python results/unipruning/sweep.py --method unipruning --steps 16 --seqlen 256 \\
        --calib $PARETOPRUNE_DATA/c4/c4-en-train-shard00000-first1000.jsonl \\
        --eval $PARETOPRUNE_DATA/wikitext2/wiki.test.raw --out results/unipruning/runs

Each target writes ``<method>-s<steps>-<target>.json`` (the fields of ``prune --json`` plus the
calibration's seconds); targets already written are skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import torch

from paretoprune.candidate import Candidate
from paretoprune.data import calibration_windows, evaluation_windows
from paretoprune.evaluators.perplexity import perplexity
from paretoprune.global_scores import GlobalScoreInputs
from paretoprune.io import atomic_write_text
from paretoprune.metrics.masks import parse_structure
from paretoprune.metrics.scores import SCORING_RULES
from paretoprune.models import cache_dir, find_layout, load_model
from paretoprune.pruning import layer_sparsities, prune_model
from paretoprune.unipruning import UniPruningSettings, unipruning_scores

logger = logging.getLogger("unipruning-sweep")

TARGETS = ("0.6", "2:4", "0.5", "0.7")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("unipruning", "unipruning-static"), default="unipruning")
    parser.add_argument("--steps", type=int, default=UniPruningSettings.steps)
    parser.add_argument("--seqlen", type=int, default=UniPruningSettings.seqlen, help="tokens per calibration step")
    parser.add_argument("--calib", required=True)
    parser.add_argument("--eval", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--targets", default=",".join(TARGETS), help="sparsities or N:M, comma separated")
    parser.add_argument("--group", choices=("row", "layer"), default="row", help="comparison group (unstructured)")
    return parser.parse_args()


def _candidate(layout, target: str, group: str) -> Candidate:  # type: ignore[no-untyped-def]
    metric = SCORING_RULES["magnitude"]  # a label only: the score map decides the masks
    if ":" in target:
        n, m = parse_structure(target) or (0, 1)
        return Candidate(metric=metric, sparsities={name: 1 - n / m for name in layout.names}, structure=target)
    return Candidate(metric=metric, sparsities=layer_sparsities(layout, float(target), "uniform"), group=group)


def main() -> None:
    args = _arguments()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = UniPruningSettings(train=args.method == "unipruning", steps=args.steps, seqlen=args.seqlen)
    loaded = load_model("smollm2-135m")
    layout = find_layout(loaded.model)
    tokens = calibration_windows(loaded.tokenizer, args.calib, 32, 512, 0)
    inputs = GlobalScoreInputs(loaded.model, layout, tokens, model_id="smollm2-135m", cache_dir=cache_dir() / "scores",
                               seed=0, progress=True)  # fmt: skip
    started = time.perf_counter()
    scores = unipruning_scores(inputs, settings)
    calibration_seconds = time.perf_counter() - started
    windows = evaluation_windows(loaded.tokenizer, args.eval, 512, 32)
    dense = {linear.name: linear.weight_matrix().clone() for linear in layout.linears}
    suffix = "" if args.group == "row" else "-layer"
    for target in args.targets.split(","):
        path = args.out / f"{args.method}-s{args.steps}-{target.replace(':', '-')}{suffix}.json"
        if path.exists():
            continue
        started = time.perf_counter()
        report = prune_model(loaded.model, layout, _candidate(layout, target, args.group), None, progress=False,
                             scores=scores)  # fmt: skip
        scored = perplexity(loaded.model, windows, batch_size=8, progress=False)
        settings_record = vars(args) | {"out": None, "calib": Path(args.calib).name, "eval": Path(args.eval).name}
        summary = {"method": args.method, "target": target, "group": args.group, "settings": settings_record,
                   "sparsity": round(report.sparsity, 6), "perplexity": scored.perplexity, "tokens": scored.tokens,
                   "calibration_seconds": round(calibration_seconds, 1),
                   "prune_eval_seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
        atomic_write_text(path, json.dumps(summary, indent=1) + "\n")
        logger.info("%s %s: perplexity %.2f", args.method, target, scored.perplexity)
        with torch.no_grad():  # back to the dense weights for the next target
            for linear in layout.linears:
                linear.weight_matrix().copy_(dense[linear.name])


if __name__ == "__main__":
    main()
