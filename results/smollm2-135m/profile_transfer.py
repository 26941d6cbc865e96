"""Does one layer genome fit several targets? The 50 % sensitivity recipe, carried to 60 and 70 %.

A range search's genome holds one layer gene per block and the target. This script encodes the
best 50 % allocation the sensitivity search found (``recipes/sensitivity-unstructured-0.50``)
as such a genome, moves only its target gene to 60 and 70 %, and decodes it under both profile
rules of ``search/space.py``: ``fixed`` (the same deviations at every target) and ``scaled``
(deviations grown with the target's odds). Each is scored beside uniform Wanda and beside the
dedicated sensitivity recipe of that level: the search's fitness (KL on C4 train windows) and
WikiText-2 perplexity::

    python results/smollm2-135m/profile_transfer.py --data $PARETOPRUNE_DATA \\
        --out results/smollm2-135m/profile_transfer.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from paretoprune.candidate import Candidate
from paretoprune.data import calibration_windows, evaluation_windows
from paretoprune.evaluators.fitness import CandidateEvaluator
from paretoprune.evaluators.perplexity import perplexity
from paretoprune.evaluators.stats import collect_stats
from paretoprune.io import atomic_write_text
from paretoprune.metrics.scores import SCORING_RULES
from paretoprune.models import find_layout, load_model
from paretoprune.recipe import load_recipe
from paretoprune.search.space import PROFILES, SearchSpace, SpaceConfig

logger = logging.getLogger("profile-transfer")

HERE = Path(__file__).resolve().parent
CALIBRATION = "c4/c4-en-train-shard00000-first1000.jsonl"
EVALUATION = "wikitext2/wiki.test.raw"
SOURCE_LEVEL = 0.5
LEVELS = (0.6, 0.7)
DELTA = 0.3  # the sensitivity searches' delta


def _recipe(level: float) -> Candidate:
    return load_recipe(HERE / "recipes" / f"sensitivity-unstructured-{level:.2f}.yaml").to_candidate()


def _transferred(layout: Any, source: Candidate, level: float, profile: str) -> Candidate:
    space = SearchSpace(layout, SpaceConfig(sparsity=None, sparsity_range=(0.4, 0.8), delta=DELTA, profile=profile))
    genome = space.encode(source, SOURCE_LEVEL)
    genome[-1] = level
    return space.decode(genome)


def _score(evaluator: CandidateEvaluator, model: Any, candidate: Candidate, wiki: Any) -> dict[str, float]:
    kl = evaluator.evaluate(candidate)["kl"]
    with evaluator.applied(candidate):
        ppl = perplexity(model, wiki, batch_size=4, progress=False).perplexity
    values = np.array(list(candidate.sparsities.values()))
    return {"kl": round(kl, 6), "wikitext2_ppl": round(ppl, 3), "layer_min": round(float(values.min()), 4),
            "layer_max": round(float(values.max()), 4)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--eval-windows", type=int, default=16)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    loaded = load_model("smollm2-135m")
    layout = find_layout(loaded.model)
    calib = str(args.data / CALIBRATION)
    stats = collect_stats(loaded.model, layout, calibration_windows(loaded.tokenizer, calib, 32, 512, 0), batch_size=4)
    fitness = calibration_windows(loaded.tokenizer, calib, 8, 256, 0)
    wiki = evaluation_windows(loaded.tokenizer, str(args.data / EVALUATION), 512, args.eval_windows)
    evaluator = CandidateEvaluator(loaded.model, layout, stats, fitness, objectives=("kl",))
    source = _recipe(SOURCE_LEVEL)
    report: dict[str, Any] = {"source": f"sensitivity-unstructured-{SOURCE_LEVEL:.2f}", "delta": DELTA, "levels": {}}
    for level in LEVELS:
        rows = {
            "uniform wanda": Candidate(SCORING_RULES["wanda"], {name: level for name in layout.names}),
            "dedicated sensitivity recipe": _recipe(level),
            **{f"50 % genome, {profile} profile": _transferred(layout, source, level, profile) for profile in PROFILES},
        }
        report["levels"][f"{level:g}"] = {name: _score(evaluator, loaded.model, c, wiki) for name, c in rows.items()}
        logger.info("%g: %s", level, json.dumps(report["levels"][f"{level:g}"]))
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
