"""Which fitness predicts perplexity? Spearman correlations on SmolLM2-135M (issue: evaluator).

Random layerwise candidates (Wanda scores, per-block sparsities around a 60% target) are
scored by every objective at two fitness-token budgets, and by WikiText-2 perplexity of the
pruned model. Calibration and fitness use the C4 train sample only; WikiText-2 is only used
to measure. Results: results/evaluator/fitness_correlation.csv and a table in the README.

    python scripts/bench_fitness.py --candidates 30
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from paretoprune.data import calibration_windows, evaluation_windows
from paretoprune.evaluators.fitness import CandidateEvaluator
from paretoprune.evaluators.perplexity import perplexity
from paretoprune.evaluators.stats import collect_stats
from paretoprune.metrics.scores import KNOWN_METRICS
from paretoprune.models import find_layout, load_model
from paretoprune.search.space import SearchSpace, SpaceConfig

REPO = Path(__file__).resolve().parents[1]
OBJECTIVES = ("kl", "logits_mse", "hidden_mse")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=30)
    parser.add_argument("--sparsity", type=float, default=0.6)
    parser.add_argument("--budgets", default="4x256,16x256", help="fitness windows x tokens")
    parser.add_argument("--eval-windows", type=int, default=16)
    parser.add_argument("--eval-seqlen", type=int, default=512)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "evaluator")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    args.out.mkdir(parents=True, exist_ok=True)

    loaded = load_model("smollm2-135m")
    model, layout = loaded.model, find_layout(loaded.model)
    c4 = str(args.data_dir / "c4" / "c4-en-train-shard00000-first1000.jsonl")
    wiki = str(args.data_dir / "wikitext2" / "wiki.test.raw")
    budgets = [tuple(int(v) for v in b.split("x")) for b in args.budgets.split(",")]
    largest = max(budgets)
    tokens = calibration_windows(loaded.tokenizer, c4, largest[0], largest[1], args.seed)
    stats = collect_stats(model, layout, tokens)
    windows = evaluation_windows(loaded.tokenizer, wiki, args.eval_seqlen, args.eval_windows)

    space = SearchSpace(layout, SpaceConfig(mode="layerwise", sparsity=args.sparsity, delta=0.2))
    rng = np.random.default_rng(args.seed)
    lower, upper = space.bounds
    candidates = [space.decode(rng.uniform(lower, upper)) for _ in range(args.candidates)]

    rows = [dict(candidate=i) for i in range(len(candidates))]
    for n, length in budgets:
        evaluator = CandidateEvaluator(
            model, layout, stats, tokens[:n, :length], objectives=OBJECTIVES,
            rank_metric=KNOWN_METRICS["wanda"],
        )
        for row, candidate in zip(rows, tqdm(candidates, desc=f"fitness {n}x{length}")):
            for name, value in evaluator.evaluate(candidate).items():
                row[f"{name}@{n}x{length}"] = value
        if (n, length) == budgets[-1]:
            for row, candidate in zip(rows, tqdm(candidates, desc="wikitext2 perplexity")):
                with evaluator.applied(candidate):
                    row["wikitext2_ppl"] = perplexity(model, windows, batch_size=4, progress=False).perplexity
        evaluator.close()

    frame = pd.DataFrame(rows)
    _write_csv(frame, args.out / "fitness_correlation.csv")
    ranks = frame.drop(columns="candidate").rank()
    table = ranks.corr()["wikitext2_ppl"].drop("wikitext2_ppl").sort_values(ascending=False)
    lines = [f"| {name} | {value:.3f} |" for name, value in table.items()]
    text = "\n".join(["| objective @ windows x tokens | Spearman rho with WikiText-2 perplexity |", "|---|---|", *lines])
    (args.out / "fitness_correlation.md").write_text(text + "\n")
    print(text)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(handle)
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
