"""The evaluator's pages: its cost, which fitness predicts perplexity, and how noisy it is."""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from pathlib import Path

from benchmarks.bench_eval import EvaluatorCost
from benchmarks.files import write_text
from benchmarks.fitness import FitnessScore, correlations
from benchmarks.fitness_noise import NoiseScore, summarize
from benchmarks.pages.markdown import fill, table
from benchmarks.table import read_table

__all__ = ["evaluator_page", "noise_page", "render_evaluator"]

logger = logging.getLogger(__name__)

COST, CORRELATION, NOISE = "bench_eval.csv", "fitness_correlation.csv", "fitness_noise.csv"


def render_evaluator(folder: Path) -> None:
    """Write ``README.md`` and ``fitness_noise.md`` from the three tables in ``folder``."""
    costs = read_table(folder / COST, EvaluatorCost)
    scores = read_table(folder / CORRELATION, FitnessScore)
    noise = read_table(folder / NOISE, NoiseScore)
    if not (costs and scores and noise):
        logger.warning("%s: the page needs %s, %s and %s (bench-eval, fitness, fitness-noise); not rendered",
                       folder, COST, CORRELATION, NOISE)  # fmt: skip
        return
    write_text(folder / "README.md", evaluator_page(costs[-1], scores, noise))
    write_text(folder / "fitness_noise.md", noise_page(noise))


def evaluator_page(cost: EvaluatorCost, scores: Sequence[FitnessScore], noise: Sequence[NoiseScore]) -> str:
    perplexities = sorted({score.candidate: score.wikitext2_ppl for score in scores}.values())
    rows = [[f"{item.objective} @ {item.windows}x{item.tokens}", f"{item.rho:.3f}"] for item in correlations(scores)]
    run = noise[0].run  # the page speaks of the first run checked
    summary = summarize([score for score in noise if score.run == run])
    fresh = [value for name, value in summary.mean_kl.items() if name.startswith("fresh")]
    large = next(value for name, value in summary.mean_kl.items() if name.startswith("large"))
    return fill(
        "evaluator.md",
        tokens=f"{cost.tokens:,}", forward_s=f"{cost.forward_s:.2f}", layerwise_s=f"{cost.layerwise_s:.2f}",
        metric_s=f"{cost.metric_s:.2f}", layerwise_ratio=f"{cost.layerwise_ratio:.2f}",
        metric_ratio=f"{cost.metric_ratio:.2f}", model_mib=f"{cost.model_mib:.0f}",
        overhead_mib=f"{cost.overhead_mib:.0f}", overhead_ratio=f"{cost.overhead_mib / cost.model_mib:.2f}",
        ppl_low=f"{perplexities[0]:,.0f}", ppl_high=f"{perplexities[-1]:,.0f}", ppl_median=f"{statistics.median(perplexities):,.0f}",
        correlations=table(["objective @ windows x tokens", "Spearman rho with WikiText-2 perplexity"], rows, "lr",
                           compact=True),
        noise_run=run, noise_top=summary.candidates, noise_spread=f"{100 * summary.spread:.2f}",
        mean_search=f"{summary.mean_kl['search']:.2f}", mean_fresh_low=f"{min(fresh):.2f}",
        mean_fresh_high=f"{max(fresh):.2f}", mean_large=f"{large:.2f}", fresh_pairs=summary.fresh_pairs,
        fresh_rho=f"{summary.fresh_rho:.2f}", search_rho=f"{summary.search_rho:.2f}", pick_rank=summary.pick_rank,
    )  # fmt: skip


def noise_page(noise: Sequence[NoiseScore]) -> str:
    """Each run's candidates, their kl on every sample, and the summary."""
    sections = []
    for run in dict.fromkeys(score.run for score in noise):
        mine = [score for score in noise if score.run == run]
        samples = list(dict.fromkeys((s.sample, s.nsamples, s.seqlen, s.seed) for s in mine))
        kl = {(s.eval_id, s.sample): s.kl for s in mine}
        lines = []
        for eval_id, search_kl in dict.fromkeys((s.eval_id, s.search_kl) for s in mine):
            lines.append([str(eval_id), f"{search_kl:.4f}", *(f"{kl[eval_id, name]:.4f}" for name, *_ in samples)])
        header = ["eval_id", "search_kl", *(f"kl@{name}" for name, *_ in samples)]
        summary = summarize(mine)
        sections.append(fill(
            "fitness_noise_run.md", run=run, table=table(header, lines, "l" * len(header), compact=True),
            samples=", ".join(f"{name} = {n}x{length} (seed {seed})" for name, n, length, seed in samples),
            candidates=summary.candidates, spread=f"{summary.spread:.2%}", fresh_rho=f"{summary.fresh_rho:.2f}",
            search_rho=f"{summary.search_rho:.2f}", fresh_large_rho=f"{summary.fresh_large_rho:.2f}",
            pick_rank=summary.pick_rank,
        ).rstrip("\n"))  # fmt: skip
    return fill("fitness_noise.md", runs="\n\n".join(sections))
