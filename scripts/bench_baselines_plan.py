"""What the baseline table runs: its configurations, in order, and the protocol of its rows.

A row is a ``BenchConfig`` (method x allocation x structure x sparsity x calibration);
``plan()`` lists them in the order ``scripts/bench_baselines.py`` runs them, so that a partial
table already compares methods at the levels it has.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from paretoprune.metrics.masks import parse_structure

from paretoprune.errors import InputError

from bench_io import ModelRecord

__all__ = [
    "CALIBRATION_FILE",
    "COLUMNS",
    "EVALUATION_FILE",
    "KEY_COLUMNS",
    "LABELS",
    "MODEL",
    "SPARSITIES",
    "STRUCTURES",
    "BenchConfig",
    "Protocol",
    "nm_sparsity",
    "plan",
    "select",
]

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
    def pruner(self) -> str:
        """The pruning driver's ``method``: SparseGPT picks its masks, every other rule scores."""
        return "sparsegpt" if self.method == "sparsegpt" else "metric"

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


def nm_sparsity(structure: str) -> float:
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
    model: ModelRecord
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
