"""What the fitness costs: a candidate evaluation against a bare dense forward, and memory.

``paretoprune.evaluators.cost.bench_eval`` times, in turn and on the same windows, a dense forward,
a candidate that changes only the per-layer sparsities and one that changes the scoring rule
(medians of a few each, so that ratios are taken inside one run). ``python -m benchmarks
bench-eval`` writes its figures as the one row of ``bench_eval.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from paretoprune.evaluators.cost import BenchEvalConfig, bench_eval

from benchmarks.protocol import CALIBRATION_FILE, data_file

__all__ = ["EvaluatorCost", "measure_evaluator"]

MIB = 1 << 20


@dataclass(frozen=True)
class EvaluatorCost:
    tokens: int  # fitness tokens per candidate (windows x tokens per window)
    forward_s: float  # median seconds of a bare dense forward over them
    layerwise_s: float  # ... of a candidate that changes only the per-layer sparsities
    metric_s: float  # ... of a candidate that changes the scoring rule too
    layerwise_ratio: float  # layerwise_s / forward_s, of the unrounded medians
    metric_ratio: float  # metric_s / forward_s
    model_mib: float  # the model's weights
    overhead_mib: float  # the evaluator's extra resident memory
    threads: int | None  # torch threads (None: not recorded)


def measure_evaluator(model: str, data_dir: Path, nsamples: int = 8, seqlen: int = 256,
                      candidates: int = 5) -> EvaluatorCost:  # fmt: skip
    """Time the evaluator on ``nsamples`` windows of ``seqlen`` C4 train tokens, on the CPU.

    The CPU, even where there are GPUs: the page's protocol is a CPU's, and a GPU's figures come
    from ``scripts/gpu_check.py`` (or ``paretoprune bench-eval --device cuda``).
    """
    calib = str(data_file(data_dir, CALIBRATION_FILE))
    cost = bench_eval(BenchEvalConfig(model=model, calib=calib, nsamples=nsamples, seqlen=seqlen,
                                      candidates=candidates, device="cpu"))  # fmt: skip
    return EvaluatorCost(
        tokens=cost.tokens, forward_s=cost.forward_s, layerwise_s=cost.layerwise_s, metric_s=cost.metric_s,
        layerwise_ratio=cost.layerwise_ratio, metric_ratio=cost.metric_ratio, model_mib=cost.model_bytes / MIB,
        overhead_mib=cost.overhead_bytes / MIB, threads=cost.threads,
    )  # fmt: skip
