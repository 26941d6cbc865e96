"""What one candidate evaluation costs, measured against a bare forward pass of the dense model.

The floor of an evaluation is one forward pass of the pruned model over the fitness tokens;
everything else (scores, masks, bookkeeping) should be small beside it. :func:`bench_eval`
measures how close the evaluator comes, for the two kinds of candidate a search proposes:

* layerwise: a fixed scoring rule (Wanda) at new per-block sparsities, served by the rank cache;
* metric: a new point of the meta-metric family, whose scores must be computed afresh.

``paretoprune bench-eval`` prints the result; ``EvaluationCost.summary()`` is its JSON.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from paretoprune.candidate import Candidate
from paretoprune.data import calibration_windows
from paretoprune.evaluators.fitness import CandidateEvaluator
from paretoprune.evaluators.stats import collect_stats
from paretoprune.metrics.allocation import block_totals, expand_block_genes, sparsities_from_genes
from paretoprune.metrics.scores import NORMALISERS, SCORING_RULES, TRANSFORMS, MetricSpec
from paretoprune.evaluators.placement import load_on_device
from paretoprune.models import ModelLayout, check_context, find_layout, model_bytes, read_config

__all__ = ["BenchEvalConfig", "EvaluationCost", "bench_eval", "median_seconds", "random_candidate"]

KINDS = ("layerwise", "metric")


@dataclass
class BenchEvalConfig:
    model: str  # alias, folder, .gguf file or hub id
    calib: str = "builtin"  # fitness text
    nsamples: int = 8  # fitness windows
    seqlen: int = 256  # tokens per window
    candidates: int = 5  # timed evaluations of each kind
    sparsity: float = 0.6  # the candidates' mean sparsity
    seed: int = 0  # picks the windows and the candidates
    objectives: tuple[str, ...] = ("kl", "sparsity")
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32 (auto: the checkpoint's on a GPU, fp32 on the CPU)
    device: str = "auto"  # auto | cpu | cuda: where the model runs (auto: the GPUs when there are any)
    progress: bool = True


@dataclass(frozen=True)
class EvaluationCost:
    """Median seconds of each kind of call, and the memory the evaluator adds to the model."""

    forward_s: float  # a bare dense forward pass over the fitness tokens
    layerwise_s: float  # one layerwise candidate's evaluation
    metric_s: float  # one metric candidate's evaluation
    model_bytes: int  # the model's parameters
    overhead_bytes: int  # what the evaluator keeps besides them (targets, rank caches)
    tokens: int
    threads: int  # torch's CPU threads during the measurement
    dtype: str = "float32"  # the dtype the model ran in
    device: str = "cpu"  # where its inputs lived: cpu, or cuda:0 (the first of the GPUs it spans)

    @property
    def layerwise_ratio(self) -> float:
        return self.layerwise_s / self.forward_s

    @property
    def metric_ratio(self) -> float:
        return self.metric_s / self.forward_s

    def summary(self) -> dict[str, Any]:
        """The JSON of ``paretoprune bench-eval --json`` (its keys are a contract with scripts)."""
        return {
            "forward_s": self.forward_s,
            "layerwise_s": self.layerwise_s,
            "metric_s": self.metric_s,
            "layerwise_ratio": self.layerwise_ratio,
            "metric_ratio": self.metric_ratio,
            "model_bytes": self.model_bytes,
            "overhead_bytes": self.overhead_bytes,
            "tokens": self.tokens,
            "threads": self.threads,
            "dtype": self.dtype,
            "device": self.device,
        }


def bench_eval(config: BenchEvalConfig) -> EvaluationCost:
    """Time a bare dense forward against candidate evaluations, side by side in one run.

    The three kinds are timed round-robin (forward, layerwise candidate, metric candidate, ...)
    so that a noisy machine slows them alike; each figure is a median.
    """
    check_context(read_config(config.model), {"--seqlen": config.seqlen})
    loaded = load_on_device(config.model, config.dtype, config.device, "bench-eval")
    model, layout = loaded.model, find_layout(loaded.model)
    device = next(model.parameters()).device  # the embeddings': place_model keeps them on the first GPU
    tokens = calibration_windows(loaded.tokenizer, config.calib, config.nsamples, config.seqlen, config.seed).to(device)
    evaluator = CandidateEvaluator(
        model, layout, collect_stats(model, layout, tokens), tokens,  # each block's on its own device
        objectives=config.objectives, rank_metric=SCORING_RULES["wanda"],
    )  # fmt: skip
    rng = np.random.default_rng(config.seed)

    def forward() -> None:
        with torch.inference_mode():
            model(input_ids=tokens, use_cache=False)

    def evaluation(kind: str) -> Callable[[], object]:
        return lambda: evaluator.evaluate(random_candidate(layout, kind, config.sparsity, rng))

    calls = {"forward": forward, **{kind: evaluation(kind) for kind in KINDS}}
    medians = median_seconds(calls, config.candidates, warm_up=("forward", "layerwise"), desc="bench-eval",
                             progress=config.progress, device=device)  # fmt: skip
    overhead = evaluator.resident_bytes()
    evaluator.close()
    return EvaluationCost(
        forward_s=medians["forward"], layerwise_s=medians["layerwise"], metric_s=medians["metric"],
        model_bytes=model_bytes(model), overhead_bytes=overhead, tokens=int(tokens.numel()),
        threads=torch.get_num_threads(), dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
        device=str(device),
    )  # fmt: skip


def median_seconds(
    calls: Mapping[str, Callable[[], object]],
    repeats: int,
    *,
    warm_up: tuple[str, ...] = (),
    device: torch.device | None = None,
    desc: str = "timing",
    progress: bool = False,
) -> dict[str, float]:
    """The median seconds of each call over ``repeats`` rounds, the calls timed round-robin.

    Round-robin, so that a noisy machine slows every kind alike. The calls named in
    ``warm_up`` run once first, untimed: first calls pay for allocations and kernel choices.
    On a GPU the clock stops only once ``device`` has finished the work queued by the call.
    """
    from tqdm.auto import tqdm

    for name in warm_up:
        calls[name]()
    timings: dict[str, list[float]] = {name: [] for name in calls}
    for _ in tqdm(range(repeats), desc=desc, disable=not progress):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            _synchronize(device)
            timings[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in timings.items()}


def _synchronize(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def random_candidate(layout: ModelLayout, kind: str, sparsity: float, rng: np.random.Generator,
                     delta: float = 0.15) -> Candidate:  # fmt: skip
    """A candidate like those a search proposes: random block sparsities at the exact mean
    ``sparsity`` (each within ``delta`` of it), with Wanda (``layerwise``) or a random point of
    the meta-metric family (``metric``)."""
    blocks = np.array([linear.block_index for linear in layout.linears])
    genes = rng.uniform(-1.0, 1.0, size=int(blocks.max()) + 1)
    per_block = sparsities_from_genes(genes, block_totals(layout.numels, blocks), sparsity, delta)
    sparsities = dict(zip(layout.names, (float(v) for v in expand_block_genes(per_block, blocks))))
    metric = SCORING_RULES["wanda"] if kind == "layerwise" else _random_rule(rng)
    return Candidate(metric=metric, sparsities=sparsities)


def _random_rule(rng: np.random.Generator) -> MetricSpec:
    """A point of the meta-metric family: random operators, random exponents."""
    spec = MetricSpec.operators(
        weight_transform=str(rng.choice(TRANSFORMS)), weight_norm=str(rng.choice(NORMALISERS)),
        act_transform=str(rng.choice(TRANSFORMS)), act_norm=str(rng.choice(NORMALISERS)),
    )  # fmt: skip
    return replace(spec, weight_power=float(rng.uniform(0.25, 2.0)), act_power=float(rng.uniform(0.05, 2.0)))
