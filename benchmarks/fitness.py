"""Which fitness predicts perplexity? Spearman correlations on random candidates.

Random layerwise candidates (Wanda scores, per-block sparsities drawn around a target and
repaired to it) are scored by every objective at a few fitness-token budgets, and by the
WikiText-2 perplexity of the pruned model. Calibration and fitness use the C4 train sample
only; WikiText-2 only measures. ``python -m benchmarks fitness`` writes the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from paretoprune.data import calibration_windows, evaluation_windows
from paretoprune.evaluators.fitness import CandidateEvaluator
from paretoprune.evaluators.perplexity import perplexity
from paretoprune.evaluators.stats import collect_stats
from paretoprune.metrics.scores import SCORING_RULES
from paretoprune.models import find_layout, load_model
from paretoprune.search.space import SearchSpace, SpaceConfig

from benchmarks.protocol import CALIBRATION_FILE, EVALUATION_FILES, data_file

__all__ = ["OBJECTIVES", "Correlation", "FitnessOptions", "FitnessScore", "correlations", "score_candidates"]

OBJECTIVES = ("kl", "logits_mse", "hidden_mse")


@dataclass(frozen=True)
class FitnessScore:
    candidate: int  # which random candidate
    objective: str
    windows: int  # fitness windows
    tokens: int  # tokens per fitness window
    value: float  # the objective on them
    wikitext2_ppl: float  # of the candidate's pruned model


@dataclass(frozen=True)
class FitnessOptions:
    candidates: int = 30  # random layerwise candidates
    sparsity: float = 0.6  # their target
    delta: float = 0.2  # how far a block's sparsity may stray from it
    budgets: tuple[tuple[int, int], ...] = ((4, 256), (16, 256))  # fitness (windows, tokens)
    eval_windows: int = 16  # WikiText-2 test windows
    eval_seqlen: int = 512  # tokens per window
    seed: int = 0  # draws the candidates and the calibration windows


@dataclass(frozen=True)
class Correlation:
    objective: str
    windows: int
    tokens: int
    rho: float  # Spearman's, with the candidates' WikiText-2 perplexity


def score_candidates(model_spec: str, data_dir: Path, options: FitnessOptions) -> list[FitnessScore]:
    """Score random candidates by every objective and budget, and by perplexity."""
    loaded = load_model(model_spec)
    model, layout = loaded.model, find_layout(loaded.model)
    c4 = str(data_file(data_dir, CALIBRATION_FILE))
    largest = max(options.budgets)
    tokens = calibration_windows(loaded.tokenizer, c4, largest[0], largest[1], options.seed)
    stats = collect_stats(model, layout, tokens)
    wiki = str(data_file(data_dir, EVALUATION_FILES["wikitext2"]))
    windows = evaluation_windows(loaded.tokenizer, wiki, options.eval_seqlen, options.eval_windows)
    space = SearchSpace(layout, SpaceConfig(mode="layerwise", sparsity=options.sparsity, delta=options.delta))
    rng = np.random.default_rng(options.seed)
    lower, upper = space.bounds
    candidates = [space.decode(rng.uniform(lower, upper)) for _ in range(options.candidates)]
    scores: list[tuple[int, str, int, int, float]] = []
    ppl: dict[int, float] = {}
    for nsamples, seqlen in options.budgets:
        evaluator = CandidateEvaluator(model, layout, stats, tokens[:nsamples, :seqlen], objectives=OBJECTIVES,
                                       rank_metric=SCORING_RULES["wanda"])  # fmt: skip
        try:
            for index, candidate in enumerate(tqdm(candidates, desc=f"fitness {nsamples}x{seqlen}")):
                for objective, value in evaluator.evaluate(candidate).items():
                    scores.append((index, objective, nsamples, seqlen, float(value)))
            if not ppl:  # the masks do not depend on the budget: score perplexity once
                for index, candidate in enumerate(tqdm(candidates, desc="wikitext2 perplexity")):
                    with evaluator.applied(candidate):
                        ppl[index] = perplexity(model, windows, batch_size=4, progress=False).perplexity
        finally:
            evaluator.close()
    return [FitnessScore(index, objective, n, length, value, ppl[index])
            for index, objective, n, length, value in scores if objective in OBJECTIVES]  # fmt: skip


def correlations(scores: Sequence[FitnessScore]) -> list[Correlation]:
    """Spearman's rho of each objective and budget with perplexity, the highest first."""
    frame = pd.DataFrame(scores)
    found = []
    for (objective, windows, tokens), group in frame.groupby(["objective", "windows", "tokens"], sort=False):
        rho = group["value"].rank().corr(group["wikitext2_ppl"].rank())
        found.append(Correlation(str(objective), int(windows), int(tokens), float(rho)))
    return sorted(found, key=lambda item: item.rho, reverse=True)
