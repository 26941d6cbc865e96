#!/usr/bin/env python3
"""The baseline table of ``make bench``: known pruners on SmolLM2-135M, WikiText-2 perplexity.

Every search result is read against this table, so it must be cheap to reproduce and exact
about its protocol. One run loads the model once, tokenizes its texts once, and for each
configuration (method x allocation x structure x sparsity x calibration mode):

1. writes the dense weights back into the live linears (kept once, in memory),
2. prunes: one-shot configurations share one pass of dense activation statistics; sequential
   ones walk the model block by block through the pruning driver (each block calibrated on the
   outputs of the blocks already pruned, as the Wanda and SparseGPT papers do),
3. measures the achieved sparsity and the perplexity of the first windows of WikiText-2 test,
4. appends the row to ``baselines.csv`` atomically and re-renders ``README.md``.

A killed run resumes: rows already in the CSV (for the same protocol) are skipped.

    python scripts/bench_baselines.py                     # the full table (about an hour on 2 cores)
    python scripts/bench_baselines.py --with-sparsegpt    # plus SparseGPT and Wanda + update
    python scripts/bench_baselines.py --quick             # tiny smoke run into a scratch folder
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from bench_baselines_plan import (
    CALIBRATION_FILE,
    COLUMNS,
    EVALUATION_FILE,
    KEY_COLUMNS,
    LABELS,
    MODEL,
    BenchConfig,
    Protocol,
    plan,
    select,
)
from bench_baselines_report import render_readme
from bench_io import (
    check_same_protocol,
    describe_model,
    file_sha256,
    in_plan_order,
    read_rows,
    row_key,
    write_rows,
    write_text_atomic,
)
from paretoprune.evaluators.perplexity import perplexity
from paretoprune.evaluators.stats import ChannelStats, collect_stats
from paretoprune.metrics.masks import parse_structure
from paretoprune.metrics.scores import KNOWN_METRICS
from paretoprune.metrics.sparsegpt import sparsegpt_prune, sparsegpt_update
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from paretoprune.candidate import Candidate
from paretoprune.data import (
    TextSource,
    calibration_windows,
    evaluation_windows,
    load_text,
)
from paretoprune.errors import InputError
from paretoprune.models import (
    LoadedModel,
    ModelLayout,
    find_layout,
    load_model,
)
from paretoprune.pruning import (
    keep_mask,
    layer_sparsities,
    measure_sparsity,
    prune_model,
)

__all__ = ["Bench", "Options", "main", "parse_options", "prune_config", "prune_one_shot", "run"]

logger = logging.getLogger("bench_baselines")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"

# --------------------------------------------------------------------------------------------
# The run: one model, its dense weights, its tokens, and the statistics shared by one-shot rows


@dataclass
class Bench:
    loaded: LoadedModel
    layout: ModelLayout
    calibration: torch.Tensor  # LongTensor[nsamples, seqlen]
    evaluation: torch.Tensor  # LongTensor[windows, seqlen]
    batch_size: int
    dense: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, ChannelStats] | None = None
    stats_seconds: float = 0.0
    hessians: dict[str, ChannelStats] | None = None
    hessian_seconds: float = 0.0
    owl: dict[float, dict[str, float]] = field(default_factory=dict)  # by target sparsity
    owl_seconds: dict[float, float] = field(default_factory=dict)

    def keep_dense_weights(self) -> None:
        self.dense = {lin.name: lin.weight_matrix().detach().clone() for lin in self.layout.linears}

    def restore_dense_weights(self) -> None:
        with torch.no_grad():
            for linear in self.layout.linears:
                linear.weight_matrix().copy_(self.dense[linear.name])

    def dense_stats(self) -> dict[str, ChannelStats]:
        """Activation statistics of the dense model, gathered on first use, then shared."""
        if self.stats is None:
            started = time.perf_counter()
            self.stats = collect_stats(
                self.loaded.model, self.layout, self.calibration, batch_size=self.batch_size
            )
            self.stats_seconds = time.perf_counter() - started
            logger.info("dense statistics: %.1f s (shared by the one-shot rows)", self.stats_seconds)
        return self.stats

    def dense_hessians(self) -> dict[str, ChannelStats]:
        """Like dense_stats, with each linear's Gram matrix (SparseGPT needs it; ~0.5 GB here)."""
        if self.hessians is None:
            started = time.perf_counter()
            self.hessians = collect_stats(
                self.loaded.model,
                self.layout,
                self.calibration,
                batch_size=self.batch_size,
                hessian=True,
            )
            self.hessian_seconds = time.perf_counter() - started
            logger.info("dense Hessians: %.1f s (shared by SparseGPT rows)", self.hessian_seconds)
        return self.hessians


def candidate_for(bench: Bench, config: BenchConfig) -> Candidate:
    """The per-layer sparsities of a configuration (OWL from dense statistics, as OWL does)."""
    metric = KNOWN_METRICS[config.rule]
    if config.structure != "unstructured":
        sparsities = {name: config.target_sparsity for name in bench.layout.names}
        return Candidate(metric=metric, sparsities=sparsities, structure=config.structure)
    if config.allocation == "owl":
        return Candidate(metric=metric, sparsities=owl_allocation(bench, config.target_sparsity))
    sparsities = layer_sparsities(bench.layout, config.target_sparsity, "uniform")
    return Candidate(metric=metric, sparsities=sparsities)


def owl_allocation(bench: Bench, target: float) -> dict[str, float]:
    """OWL's per-layer sparsities (dense weights, dense statistics), computed once per target.

    Call it on the dense model only: the outlier ratios are read from the live weights.
    """
    if target not in bench.owl:
        stats = bench.dense_stats()
        started = time.perf_counter()
        bench.owl[target] = layer_sparsities(bench.layout, target, "owl", stats)
        bench.owl_seconds[target] = time.perf_counter() - started
    return bench.owl[target]


def prune_one_shot(
    layout: ModelLayout, candidate: Candidate, stats: dict[str, ChannelStats] | None, update: bool = False
) -> None:
    """Mask every linear from statistics already gathered on the dense model; with ``update``
    (the statistics then hold Hessians) reconstruct the survivors as SparseGPT does."""
    for linear in layout.linears:
        act_norm = stats[linear.name].act_norm if stats is not None else None
        weight = linear.weight_matrix()
        mask = keep_mask(
            weight,
            act_norm,
            candidate.metric,
            candidate.sparsities[linear.name],
            candidate.structure,
            candidate.group,
            linear.name,
        )
        if update:
            assert stats is not None
            weight.copy_(sparsegpt_update(weight.float(), stats[linear.name].hessian(), mask).to(weight.dtype))
        else:
            weight.mul_(mask.to(weight.dtype))


def prune_sparsegpt_one_shot(
    layout: ModelLayout, candidate: Candidate, hessians: dict[str, ChannelStats]
) -> None:
    """SparseGPT on every linear, each with the Hessian of its dense-model inputs."""
    structure = parse_structure(candidate.structure)
    for linear in layout.linears:
        weight = linear.weight_matrix()
        sparsity = candidate.sparsities[linear.name]
        pruned = sparsegpt_prune(weight.float(), hessians[linear.name].hessian(), sparsity, structure)
        weight.copy_(pruned.to(weight.dtype))


def prune_config(bench: Bench, config: BenchConfig) -> float:
    """Prune the (dense) live model as ``config`` says; return its cost in seconds.

    The cost includes the shared dense-statistics pass whenever the row uses it (one-shot rows,
    OWL's allocation), so that every row reads as what the configuration costs on its own.
    """
    if config.method == "dense":
        return 0.0
    shared = shared_pass_seconds(bench, config)
    candidate = candidate_for(bench, config)
    started = time.perf_counter()
    if config.calibration == "sequential":
        prune_model(
            bench.loaded.model,
            bench.layout,
            candidate,
            bench.calibration,
            method=config.pruner,
            update=config.update,
            sequential=True,
            batch_size=bench.batch_size,
            progress=False,
        )
    elif config.method == "sparsegpt":
        prune_sparsegpt_one_shot(bench.layout, candidate, bench.dense_hessians())
    elif config.update:
        prune_one_shot(bench.layout, candidate, bench.dense_hessians(), update=True)
    else:
        stats = bench.dense_stats() if candidate.metric.uses_activations else None
        prune_one_shot(bench.layout, candidate, stats)
    return time.perf_counter() - started + shared


def shared_pass_seconds(bench: Bench, config: BenchConfig) -> float:
    """Run the dense-model pass this row shares with others (once per run); return its cost."""
    hessians = config.method == "sparsegpt" or config.update
    if hessians and config.calibration == "one-shot":
        bench.dense_hessians()
        return bench.hessian_seconds
    one_shot_data = config.calibration == "one-shot" and KNOWN_METRICS[config.rule].uses_activations
    if config.allocation == "owl":
        owl_allocation(bench, config.target_sparsity)
        return bench.stats_seconds + bench.owl_seconds[config.target_sparsity]
    if one_shot_data:
        bench.dense_stats()
        return bench.stats_seconds
    return 0.0


def run_config(bench: Bench, config: BenchConfig, protocol: Protocol) -> dict[str, str]:
    """One finished row: prune from dense, measure sparsity and perplexity."""
    bench.restore_dense_weights()
    with torch.no_grad():
        prune_seconds = prune_config(bench, config)
    achieved = measure_sparsity(bench.layout).sparsity
    started = time.perf_counter()
    scored = perplexity(bench.loaded.model, bench.evaluation, batch_size=bench.batch_size, progress=False)
    eval_seconds = time.perf_counter() - started
    if scored.tokens != protocol.eval_tokens:
        raise RuntimeError(f"scored {scored.tokens} tokens, the protocol says {protocol.eval_tokens}")
    return {
        "method": config.method,
        "allocation": config.allocation,
        "structure": config.structure,
        "target_sparsity": f"{config.target_sparsity:g}",
        "calibration": config.calibration,
        "achieved_sparsity": f"{achieved:.6f}",
        "wikitext2_ppl": f"{scored.perplexity:.4f}",
        "prune_seconds": f"{prune_seconds:.1f}",
        "eval_seconds": f"{eval_seconds:.1f}",
        **protocol.row_fields(),
    }


# --------------------------------------------------------------------------------------------
# Command line


@dataclass(frozen=True)
class Options:
    out: Path
    data_dir: Path
    model: str
    windows: int
    nsamples: int
    seqlen: int
    seed: int
    batch_size: int
    only: tuple[str, ...]
    shapes: tuple[str, ...]  # e.g. ("0.7", "2:4"); empty: every shape
    calibrations: tuple[str, ...]  # e.g. ("one-shot",); empty: every calibration
    with_sparsegpt: bool
    command: str


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for baselines.csv and README.md")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="the shared data folder")
    parser.add_argument("--model", default=MODEL, help="model alias, folder or .gguf file")
    parser.add_argument("--windows", type=int, default=32, help="WikiText-2 test windows scored")
    parser.add_argument("--nsamples", type=int, default=32, help="calibration windows")
    parser.add_argument("--seqlen", type=int, default=512, help="tokens per window")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration windows")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(LABELS)}")
    parser.add_argument("--shapes", default="", help="comma-separated sparsities or structures, e.g. 0.7,2:4")
    parser.add_argument("--calibrations", default="", help="comma-separated subset of one-shot,sequential")
    parser.add_argument("--with-sparsegpt", action="store_true",
                        help="add the rows that need Hessians: SparseGPT and Wanda + update")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.windows, args.nsamples, args.seqlen = 2, 4, 64
        args.out = args.out or Path(tempfile.gettempdir()) / "paretoprune-bench-quick"
    out = args.out or REPO_ROOT / "results" / "baselines"
    for name in ("windows", "nsamples", "seqlen", "batch_size"):
        if getattr(args, name) < (2 if name == "seqlen" else 1):
            raise InputError(f"--{name.replace('_', '-')} must be a positive integer (seqlen >= 2)")
    only = tuple(label.strip() for label in args.only.split(",") if label.strip())
    return Options(
        out=out,
        data_dir=args.data_dir,
        model=args.model,
        windows=args.windows,
        nsamples=args.nsamples,
        seqlen=args.seqlen,
        seed=args.seed,
        batch_size=args.batch_size,
        only=only,
        shapes=_words(args.shapes),
        calibrations=_words(args.calibrations),
        with_sparsegpt=args.with_sparsegpt,
        command=_reproduce_command(args),
    )


def _words(text: str) -> tuple[str, ...]:
    return tuple(word.strip() for word in text.split(",") if word.strip())


def _reproduce_command(args: argparse.Namespace) -> str:
    """The command line that makes (or finishes) this table, without machine paths."""
    words = ["python scripts/bench_baselines.py"]
    if args.quick:
        words.append("--quick")
    else:
        defaults = {"windows": 32, "nsamples": 32, "seqlen": 512, "seed": 0}
        words += [f"--{k} {getattr(args, k)}" for k, v in defaults.items() if getattr(args, k) != v]
    if args.model != MODEL:
        words.append(f"--model {args.model}")
    if args.with_sparsegpt:
        words.append("--with-sparsegpt")
    return " ".join(words)


def load_source(data_dir: Path, relative: str) -> TextSource:
    path = data_dir / relative
    if not path.is_file():
        raise InputError(f"{relative} not found under {data_dir}; pass the shared data folder with --data-dir")
    return load_text(path)


def prepare(options: Options) -> tuple[Bench, Protocol]:
    """Load the model and tokenize the texts once; keep the dense weights."""
    calib_text = load_source(options.data_dir, CALIBRATION_FILE)
    eval_text = load_source(options.data_dir, EVALUATION_FILE)
    loaded = load_model(options.model)
    layout = find_layout(loaded.model)
    calibration = calibration_windows(loaded.tokenizer, calib_text, options.nsamples, options.seqlen, options.seed)
    evaluation = evaluation_windows(loaded.tokenizer, eval_text, options.seqlen, options.windows)
    bench = Bench(loaded, layout, calibration, evaluation, options.batch_size)
    bench.keep_dense_weights()
    protocol = Protocol(
        model=describe_model(options.model, loaded.model, layout),
        calibration_file=CALIBRATION_FILE,
        calibration_file_sha256=file_sha256(options.data_dir / CALIBRATION_FILE),
        calibration_sha256=calib_text.sha256,
        nsamples=options.nsamples,
        seqlen=options.seqlen,
        seed=options.seed,
        evaluation_file=EVALUATION_FILE,
        evaluation_sha256=eval_text.sha256,
        eval_windows=int(evaluation.shape[0]),
        eval_tokens=int(evaluation.shape[0]) * (options.seqlen - 1),
    )
    return bench, protocol


def run(options: Options) -> None:
    bench, protocol = prepare(options)
    csv_path, readme_path = options.out / "baselines.csv", options.out / "README.md"
    rows = read_rows(csv_path)
    check_same_protocol(rows, protocol.row_fields(), csv_path)
    with_sparsegpt = options.with_sparsegpt or any(row["method"] == "sparsegpt" for row in rows)
    planned = plan(with_sparsegpt)
    if with_sparsegpt and not options.with_sparsegpt:  # the README's command must finish this table
        options = replace(options, command=f"{options.command} --with-sparsegpt")
    done = {row_key(row, KEY_COLUMNS) for row in rows}
    todo = [
        config
        for config in select(plan(options.with_sparsegpt), options.only)
        if config.key not in done
        and (not options.shapes or config.shape in options.shapes or config.method == "dense")
        and (not options.calibrations or config.calibration in (*options.calibrations, "none"))
    ]
    logger.info("%d rows present, %d to run, out: %s", len(rows), len(todo), options.out)
    write_rows(csv_path, rows, COLUMNS)
    write_text_atomic(readme_path, render_readme(rows, protocol, planned, options.command))
    with logging_redirect_tqdm():
        for config in tqdm(todo, desc="configurations", unit="config"):
            row = run_config(bench, config, protocol)
            logger.info("%-28s ppl %9.3f  sparsity %.4f  prune %6.1f s  eval %5.1f s",
                        config.describe(), float(row["wikitext2_ppl"]), float(row["achieved_sparsity"]),
                        float(row["prune_seconds"]), float(row["eval_seconds"]))  # fmt: skip
            rows = in_plan_order([*rows, row], [config.key for config in planned], KEY_COLUMNS)
            write_rows(csv_path, rows, COLUMNS)
            write_text_atomic(readme_path, render_readme(rows, protocol, planned, options.command))


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        run(parse_options(argv))
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
