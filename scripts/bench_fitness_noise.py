"""Does a search's fitness still tell its best candidates apart? Fresh C4 samples say.

A finished search's best candidates (by its own fitness) are scored again on other samples of
the same C4 train text: the search's own sample (a check that the scores are reproduced), a few
fresh samples of the same size (other seeds) and one larger sample. If the candidates' order
changes from one fresh sample to the next, the fitness differences among them are the sample's
noise, and the search was choosing by noise: a larger fitness sample is what it needs. Nothing
but C4 train text is used, so the finding may guide the plan without touching evaluation data.

    python scripts/bench_fitness_noise.py --run runs/bench-search/sensitivity-unstructured-0.50
"""

from __future__ import annotations

import argparse
import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import yaml
from tqdm.auto import tqdm

from paretoprune.candidate import Candidate
from paretoprune.data import calibration_windows
from paretoprune.errors import InputError
from paretoprune.evaluators.fitness import CandidateEvaluator
from paretoprune.evaluators.stats import ChannelStats, collect_stats
from paretoprune.models import ModelLayout, find_layout, load_model
from paretoprune.search.archive import Archive
from paretoprune.search.driver import SearchConfig, candidate_of, load_config

from bench_io import REPO_ROOT, write_text_atomic

logger = logging.getLogger("bench_fitness_noise")

SEARCH = "search"  # the sample the search scored its candidates on


@dataclass(frozen=True)
class Sample:
    """Seeded random windows of the search's calibration text."""

    name: str
    nsamples: int
    seqlen: int
    seed: int

    @property
    def tokens(self) -> int:
        return self.nsamples * self.seqlen


@dataclass(frozen=True)
class Ranked:
    """One of the search's best candidates."""

    eval_id: int
    search_kl: float  # the fitness the search recorded
    candidate: Candidate


def best_candidates(run_dir: Path, count: int) -> list[Ranked]:
    """The run's ``count`` lowest-kl successful evaluations, best first (ties: lower eval_id)."""
    frame = Archive.load(run_dir).frame()
    if "kl" not in frame.columns:
        raise InputError(f"the run in {run_dir} has no kl objective; this check needs one")
    ok = frame[frame["status"] == "ok"].sort_values(["kl", "eval_id"], kind="stable").head(count)
    return [Ranked(int(row["eval_id"]), float(row["kl"]), candidate_of(row)) for _, row in ok.iterrows()]


def samples_for(config: SearchConfig, fresh: int, large: tuple[int, int]) -> list[Sample]:
    """The search's own sample, ``fresh`` others of its size, and one ``large`` (windows, tokens)."""
    own = Sample(SEARCH, config.nsamples, config.seqlen, config.seed)
    others = [Sample(f"fresh{i}", config.nsamples, config.seqlen, config.seed + i) for i in range(1, fresh + 1)]
    return [own, *others, Sample(f"large{large[0]}x{large[1]}", *large, seed=config.seed + fresh + 1)]


def rescore(
    model: torch.nn.Module,
    layout: ModelLayout,
    stats: Mapping[str, ChannelStats],
    ranked: Sequence[Ranked],
    windows: Mapping[str, torch.Tensor],
    progress: bool = True,
) -> pd.DataFrame:
    """kl of every candidate on every sample's windows: one row per candidate, a column per sample."""
    rows = [{"eval_id": r.eval_id, "search_kl": r.search_kl} for r in ranked]
    for name, tokens in windows.items():
        evaluator = CandidateEvaluator(model, layout, stats, tokens, objectives=("kl",))
        try:
            for row, r in zip(rows, tqdm(ranked, desc=f"kl on {name}", disable=not progress)):
                row[f"kl@{name}"] = evaluator.evaluate(r.candidate)["kl"]
        finally:
            evaluator.close()
    return pd.DataFrame(rows)


def summarize(frame: pd.DataFrame, fresh: Sequence[str], large: str) -> dict[str, float]:
    """How far the candidates' fitness differs, against how far the samples disagree on it.

    ``spread``: (worst - best) / best of the search's fitness among the candidates.
    ``fresh_rho``: mean Spearman rho between fresh samples of the search's size, over pairs.
    ``search_rho`` / ``fresh_large_rho``: Spearman rho of the search's fitness / of the fresh
    samples' mean with the large sample. ``pick_rank``: where the search's pick (its best)
    ranks on the large sample, 1 = best there too.
    """
    search = frame["search_kl"]
    ranks = frame.rank()
    pairs = list(itertools.combinations(fresh, 2))
    fresh_mean = frame[list(fresh)].mean(axis=1)
    large_ranks = ranks[large]
    return {
        "candidates": float(len(frame)),
        "spread": float((search.max() - search.min()) / search.min()),
        "fresh_rho": float(sum(ranks[a].corr(ranks[b]) for a, b in pairs) / len(pairs)) if pairs else float("nan"),
        "search_rho": float(ranks["search_kl"].corr(large_ranks)),
        "fresh_large_rho": float(fresh_mean.rank().corr(large_ranks)),
        "pick_rank": float(large_ranks.iloc[int(search.to_numpy().argmin())]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, action="append", help="a finished search's run folder")
    parser.add_argument("--top", type=int, default=8, help="how many of the best candidates to score again")
    parser.add_argument("--fresh", type=int, default=3, help="fresh samples of the search's size")
    parser.add_argument("--large", default="32x512", help="the large sample, windows x tokens")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "evaluator")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    large = _parse_windows(args.large)
    sections = []
    for run_dir in args.run:
        frame, summary, samples = check_run(run_dir, args.top, args.fresh, large)
        _write_csv(frame, args.out / f"fitness_noise-{run_dir.name}.csv")
        sections.append(render_section(run_dir.name, frame, summary, samples))
    write_text_atomic(args.out / "fitness_noise.md", "\n".join(sections))
    logger.info("wrote %s", args.out / "fitness_noise.md")


def check_run(run_dir: Path, top: int, fresh: int, large: tuple[int, int]) -> tuple[pd.DataFrame, dict, list[Sample]]:
    """Score one run's best candidates on its samples; the table and its summary."""
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise InputError(f"no config.yaml in {run_dir}; pass a folder a search wrote with --out")
    config = load_config(yaml.safe_load(config_path.read_text()))
    ranked = best_candidates(run_dir, top)
    loaded = load_model(config.model)
    layout = find_layout(loaded.model)
    stats_shape = (config.stats_nsamples or config.nsamples, config.stats_seqlen or config.seqlen)
    stats = collect_stats(loaded.model, layout, calibration_windows(loaded.tokenizer, config.calib, *stats_shape,
                                                                    config.seed))  # fmt: skip
    samples = samples_for(config, fresh, large)
    windows = {s.name: calibration_windows(loaded.tokenizer, config.calib, s.nsamples, s.seqlen, s.seed)
               for s in samples}  # fmt: skip
    frame = rescore(loaded.model, layout, stats, ranked, windows)
    fresh_names = [f"kl@{s.name}" for s in samples[1:-1]]
    return frame, summarize(frame, fresh_names, f"kl@{samples[-1].name}"), samples


def render_section(name: str, frame: pd.DataFrame, summary: Mapping[str, float], samples: Sequence[Sample]) -> str:
    """One run's table (kl per candidate and sample) and its summary, as markdown."""
    columns = ["search_kl", *(f"kl@{s.name}" for s in samples)]
    header = "| eval_id | " + " | ".join(columns) + " |"
    lines = [f"## {name}", "", header, "|---" * (len(columns) + 1) + "|"]
    lines += ["| " + " | ".join([str(int(row["eval_id"])), *(f"{row[c]:.4f}" for c in columns)]) + " |"
              for _, row in frame.iterrows()]  # fmt: skip
    described = ", ".join(f"{s.name} = {s.nsamples}x{s.seqlen} (seed {s.seed})" for s in samples)
    lines += [
        "",
        f"Samples: {described}.",
        f"Fitness spread among these {int(summary['candidates'])}: {summary['spread']:.2%}. "
        f"Spearman rho between fresh samples of the search's size: {summary['fresh_rho']:.2f}; "
        f"of the search's fitness with the large sample: {summary['search_rho']:.2f}; "
        f"of the fresh samples' mean with the large sample: {summary['fresh_large_rho']:.2f}. "
        f"The search's pick ranks {int(summary['pick_rank'])} of {int(summary['candidates'])} on the large sample.",
        "",
    ]
    return "\n".join(lines)


def _parse_windows(text: str) -> tuple[int, int]:
    try:
        windows, tokens = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--large {text!r} is not WINDOWSxTOKENS, e.g. 32x512") from None
    return windows, tokens


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, frame.to_csv(index=False, float_format="%.6f"))


if __name__ == "__main__":
    main()
