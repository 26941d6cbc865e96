"""What an evaluation costs: the candidates timed are like a search's, the JSON keys are a contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from paretoprune.evaluators.cost import BenchEvalConfig, bench_eval, median_seconds, random_candidate
from paretoprune.metrics.allocation import weighted_mean
from paretoprune.models import find_layout
from paretoprune.testing import save_tiny_model, tiny_model

# The keys scripts read from `paretoprune bench-eval --json`.
CONTRACT = {"forward_s", "layerwise_s", "metric_s", "layerwise_ratio", "metric_ratio", "model_bytes",
            "overhead_bytes"}  # fmt: skip


@pytest.mark.parametrize("kind", ["layerwise", "metric"])
def test_random_candidates_hold_the_mean_sparsity_within_the_box(kind: str) -> None:
    layout = find_layout(tiny_model("llama", layers=4))
    rng = np.random.default_rng(0)
    candidates = [random_candidate(layout, kind, 0.6, rng) for _ in range(5)]
    for candidate in candidates:
        values = [candidate.sparsities[name] for name in layout.names]
        assert weighted_mean(values, layout.numels) == pytest.approx(0.6, abs=1e-9)
        assert 0.45 - 1e-9 <= min(values) and max(values) <= 0.75 + 1e-9
        blocks = {linear.block_index: candidate.sparsities[linear.name] for linear in layout.linears}
        assert len(set(blocks.values())) > 1  # the blocks differ, as a search's do
    metrics = {candidate.metric for candidate in candidates}
    if kind == "layerwise":
        assert {metric.name for metric in metrics} == {"wanda"}
    else:
        assert len(metrics) == 5 and all(metric.name == "meta" for metric in metrics)


def test_bench_eval_times_all_three_kinds(tmp_path: Path) -> None:
    save_tiny_model(tmp_path, tiny_model("llama", layers=2))
    cost = bench_eval(BenchEvalConfig(model=str(tmp_path), nsamples=2, seqlen=32, candidates=2, progress=False))
    summary = cost.summary()
    assert CONTRACT <= set(summary) and summary["tokens"] == 64
    assert all(summary[key] > 0 for key in ("forward_s", "layerwise_s", "metric_s", "model_bytes"))
    assert summary["layerwise_ratio"] == pytest.approx(cost.layerwise_s / cost.forward_s)
    assert summary["metric_ratio"] == pytest.approx(cost.metric_s / cost.forward_s)


def test_bench_eval_runs_the_model_in_the_dtype_asked(tmp_path: Path) -> None:
    model = tiny_model("llama", layers=2)
    save_tiny_model(tmp_path, model)
    parameters = sum(p.numel() for p in model.parameters())
    cost = bench_eval(BenchEvalConfig(model=str(tmp_path), nsamples=2, seqlen=32, candidates=1, dtype="bfloat16",
                                      progress=False))  # fmt: skip
    assert cost.summary()["dtype"] == "bfloat16" and cost.model_bytes == 2 * parameters


def test_median_seconds_warms_up_then_times_the_calls_round_robin() -> None:
    order: list[str] = []
    calls = {name: (lambda name=name: order.append(name)) for name in ("a", "b")}
    medians = median_seconds(calls, 3, warm_up=("b",))
    assert order == ["b", "a", "b", "a", "b", "a", "b"]
    assert set(medians) == {"a", "b"} and all(value >= 0 for value in medians.values())
