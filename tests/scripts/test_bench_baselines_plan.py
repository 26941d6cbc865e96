"""The baseline table's plan: which rows a run makes, and which the filters keep."""

from __future__ import annotations

import pytest

import bench_baselines
from bench_baselines_plan import BenchConfig, plan, select


def test_baseline_filters_pick_one_shape_and_calibration() -> None:
    options = bench_baselines.parse_options(
        ["--only", "wanda", "--shapes", "0.7,2:4", "--calibrations", "one-shot"]
    )
    assert options.shapes == ("0.7", "2:4") and options.calibrations == ("one-shot",)
    chosen = [
        config
        for config in select(plan(), options.only)
        if config.shape in options.shapes and config.calibration in options.calibrations
    ]
    assert {(c.method, c.shape, c.calibration) for c in chosen} == {
        ("wanda", "0.7", "one-shot"),
        ("wanda", "2:4", "one-shot"),
    }


@pytest.mark.parametrize("method", ["sparsegpt", "wanda-update"])
def test_hessian_baselines_cover_every_shape_the_searches_report(method: str) -> None:
    configs = [c for c in plan(with_sparsegpt=True) if c.method == method]
    for calibration in ("one-shot", "sequential"):
        assert {c.shape for c in configs if c.calibration == calibration} == {"0.5", "0.6", "0.7", "2:4"}
    assert len(configs) == 8
    assert not any(c.method == method for c in plan())


def test_update_methods_name_their_rule() -> None:
    config = BenchConfig("wanda-update", target_sparsity=0.5, calibration="one-shot")
    assert (config.rule, config.update, config.label) == ("wanda", True, "wanda-update")
    assert (BenchConfig("sparsegpt").rule, BenchConfig("sparsegpt").update) == ("magnitude", False)
