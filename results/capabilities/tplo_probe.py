"""Truth probes of Wanda at one sparsity under three layer allocations: uniform, OWL and TPLO.

TPLO's claim is that its allocation keeps what truthfulness probes read. This script puts it
to the test on one machine in one process: the dense model's activations and pivot block are
computed once, then the model is pruned by Wanda under each allocation (the protocol's C4
calibration) and its probes are read at the dense pivot, both splits, as ``eval --truth-probe``
reads them. WikiText-2 perplexity is scored alongside::

    python results/capabilities/tplo_probe.py --data $PARETOPRUNE_DATA --sparsity 0.5 \\
        --out results/capabilities/tplo_probe.json

The perplexity windows and calibration are those of ``results/baselines`` (32 x 512 each).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

from paretoprune.candidate import Candidate
from paretoprune.data import calibration_windows, evaluation_windows
from paretoprune.evaluators.perplexity import perplexity
from paretoprune.evaluators.stats import collect_stats
from paretoprune.evaluators.truth import PROBE_SPLITS, encode_sets, encoded_activations, pivot_of, probe_scores
from paretoprune.io import atomic_write_text
from paretoprune.metrics.scores import SCORING_RULES
from paretoprune.models import find_layout, load_model
from paretoprune.pruning import layer_sparsities, prune_model
from paretoprune.truth import load_statements

logger = logging.getLogger("tplo-probe")

ALLOCATIONS = ("uniform", "owl", "tplo")
CALIBRATION = "c4/c4-en-train-shard00000-first1000.jsonl"
EVALUATION = "wikitext2/wiki.test.raw"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the data folder (c4/, wikitext2/, truth/)")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--truth-limit", type=int, default=128, help="statements per topic, as results/ used")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args()


def _probes(model: Any, encoded: dict[str, Any], labels: dict[str, Any], pivot: int) -> dict[str, dict[str, float]]:
    features = {topic: encoded_activations(model, item, [pivot])[0] for topic, item in encoded.items()}
    return {split: probe_scores(features, labels, split) for split in PROBE_SPLITS}


def main() -> None:
    args = _arguments()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    dense = load_model("smollm2-135m")
    layout = find_layout(dense.model)
    tokens = calibration_windows(dense.tokenizer, str(args.data / CALIBRATION), 32, 512, 0)
    wiki = evaluation_windows(dense.tokenizer, str(args.data / EVALUATION), 512, 32)
    sets = load_statements(args.data / "truth", limit=args.truth_limit)
    encoded = encode_sets(dense.model, dense.tokenizer, sets)
    labels = {topic: item.labels for topic, item in encoded.items()}
    every_block = {topic: encoded_activations(dense.model, item) for topic, item in encoded.items()}
    _, pivot = pivot_of(every_block, labels)
    logger.info("pivot block %d", pivot)
    stats = collect_stats(dense.model, layout, tokens, batch_size=4)
    report: dict[str, Any] = {"sparsity": args.sparsity, "pivot_block": pivot, "truth_limit": args.truth_limit,
                              "dense": _probes(dense.model, encoded, labels, pivot), "pruned": {}}  # fmt: skip
    for allocation in ALLOCATIONS:
        started = time.perf_counter()
        sparsities = layer_sparsities(layout, args.sparsity, allocation, stats, model=dense.model,
                                      tokenizer=dense.tokenizer, truth_dir=args.data / "truth", tokens=tokens)  # fmt: skip
        model = copy.deepcopy(dense.model)
        pruned_layout = find_layout(model)
        prune_model(model, pruned_layout, Candidate(SCORING_RULES["wanda"], sparsities), tokens, batch_size=4,
                    progress=False)  # fmt: skip
        report["pruned"][allocation] = {
            "probes": _probes(model, encoded, labels, pivot),
            "wikitext2_ppl": perplexity(model, wiki, batch_size=4, progress=False).perplexity,
            "seconds": round(time.perf_counter() - started, 1),
        }
        logger.info("%s: %s", allocation, json.dumps(report["pruned"][allocation]))
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
