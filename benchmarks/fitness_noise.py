"""Does a search's fitness still tell its best candidates apart? Fresh C4 samples say.

A finished search's best candidates (by its own fitness) are scored again on other samples of
the same C4 train text: the search's own sample (a check that the scores are reproduced), a few
fresh samples of the same size (other seeds) and one larger sample. If the candidates' order
changes from one fresh sample to the next, the fitness differences among them are the sample's
noise, and the search was choosing by noise. Nothing but C4 train text is used, so the finding
may guide the plan without touching evaluation data.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from paretoprune.data import calibration_windows
from paretoprune.errors import InputError
from paretoprune.evaluators.fitness import CandidateEvaluator
from paretoprune.evaluators.stats import collect_stats
from paretoprune.models import find_layout, load_model
from paretoprune.search.driver import SearchConfig, candidate_of
from paretoprune.search.run import Run

from benchmarks.search_runs import run_archive
from benchmarks.table import column

__all__ = ["NoiseScore", "NoiseSummary", "Sample", "best_candidates", "rescore_run", "samples_for", "summarize"]


@dataclass(frozen=True)
class Sample:
    """Seeded random windows of the search's calibration text."""

    name: str  # search | fresh1, fresh2, ... | large16x512
    role: str  # search (the search's own sample) | fresh (its size, another seed) | large
    nsamples: int
    seqlen: int
    seed: int


@dataclass(frozen=True)
class NoiseScore:
    run: str  # the search's run folder name
    eval_id: int  # one of its best candidates
    search_kl: float = column(".6f")  # the fitness the search recorded for it
    sample: str  # the sample scored on (see Sample)
    role: str
    nsamples: int
    seqlen: int
    seed: int
    kl: float = column(".6f")  # its kl on that sample


@dataclass(frozen=True)
class NoiseSummary:
    candidates: int
    spread: float  # (worst - best) / best of the search's fitness among them
    mean_kl: dict[str, float]  # by sample, the candidates' mean kl
    fresh_pairs: int  # pairs of fresh samples compared
    fresh_rho: float  # mean Spearman rho between fresh samples, over pairs (nan without a pair)
    search_rho: float  # Spearman rho of the search's fitness with the large sample
    fresh_large_rho: float  # ... of the fresh samples' mean with the large sample
    pick_rank: int  # where the search's pick (its best) ranks on the large sample, 1 = best


def samples_for(config: SearchConfig, fresh: int, large: tuple[int, int]) -> list[Sample]:
    """The search's own sample, ``fresh`` others of its size, and one ``large`` (windows, tokens)."""
    own = Sample("search", "search", config.nsamples, config.seqlen, config.seed)
    others = [Sample(f"fresh{i}", "fresh", config.nsamples, config.seqlen, config.seed + i) for i in range(1, fresh + 1)]
    bigger = Sample(f"large{large[0]}x{large[1]}", "large", large[0], large[1], config.seed + fresh + 1)
    return [own, *others, bigger]


def best_candidates(run_dir: Path, count: int) -> pd.DataFrame:
    """The run's ``count`` lowest-kl successful evaluations, best first (ties: lower eval_id)."""
    frame = run_archive(run_dir)
    if "kl" not in frame.columns:
        raise InputError(f"the run in {run_dir} has no kl objective; this check needs one")
    return frame[frame["status"] == "ok"].sort_values(["kl", "eval_id"], kind="stable").head(count)


def rescore_run(run_dir: Path, top: int, fresh: int, large: tuple[int, int]) -> list[NoiseScore]:
    """Score one run's best candidates on its own sample, fresh ones and a large one."""
    if not Run.holds_search(run_dir):
        raise InputError(f"no config.yaml in {run_dir}; pass a folder a search wrote with --out")
    config = Run.open(run_dir).config
    best = best_candidates(run_dir, top)
    loaded = load_model(config.model)
    layout = find_layout(loaded.model)
    stats_windows = (config.stats_nsamples or config.nsamples, config.stats_seqlen or config.seqlen)
    stats = collect_stats(loaded.model, layout,
                          calibration_windows(loaded.tokenizer, config.calib, *stats_windows, config.seed))  # fmt: skip
    scores = []
    for sample in samples_for(config, fresh, large):
        tokens = calibration_windows(loaded.tokenizer, config.calib, sample.nsamples, sample.seqlen, sample.seed)
        evaluator = CandidateEvaluator(loaded.model, layout, stats, tokens, objectives=("kl",))
        try:
            for _, row in tqdm(best.iterrows(), total=len(best), desc=f"kl on {sample.name}"):
                kl = evaluator.evaluate(candidate_of(row))["kl"]
                scores.append(NoiseScore(run_dir.name, int(row["eval_id"]), float(row["kl"]), sample.name, sample.role,
                                         sample.nsamples, sample.seqlen, sample.seed, float(kl)))  # fmt: skip
        finally:
            evaluator.close()
    return scores


def summarize(scores: Sequence[NoiseScore]) -> NoiseSummary:
    """How far one run's candidates differ in fitness, against how far the samples disagree."""
    frame = pd.DataFrame(scores)
    wide = frame.pivot(index="eval_id", columns="sample", values="kl")
    search = frame.drop_duplicates("eval_id").set_index("eval_id")["search_kl"].loc[wide.index]
    roles = frame.drop_duplicates("sample").set_index("sample")["role"]
    fresh = [name for name in wide.columns if roles[name] == "fresh"]
    large = next(name for name in wide.columns if roles[name] == "large")
    ranks, large_ranks = wide.rank(), wide[large].rank()
    pairs = list(itertools.combinations(fresh, 2))
    return NoiseSummary(
        candidates=len(wide),
        spread=float((search.max() - search.min()) / search.min()),
        mean_kl={name: float(wide[name].mean()) for name in wide.columns},
        fresh_pairs=len(pairs),
        fresh_rho=float(sum(ranks[a].corr(ranks[b]) for a, b in pairs) / len(pairs)) if pairs else float("nan"),
        search_rho=float(search.rank().corr(large_ranks)),
        fresh_large_rho=float(wide[fresh].mean(axis=1).rank().corr(large_ranks)),
        pick_rank=int(large_ranks.loc[search.idxmin()]),
    )
