"""Best kl so far: one curve per fixed-sparsity search, one per level for the range search."""

from __future__ import annotations

from pathlib import Path

import bench_kl_curve
import bench_plan
import pandas as pd


def test_a_range_search_level_counts_only_candidates_that_sparse() -> None:
    spec = bench_plan.spec_named("layerwise-unstructured-0.40to0.80")
    assert spec is not None
    frame = pd.DataFrame({
        "eval_id": [0, 1, 2, 3],
        "kl": [0.5, 2.0, 0.1, 1.5],
        "sparsity": [0.55, 0.70, 0.75, 0.6981],  # 0.6981 is 0.7 within the repair's slack
        "status": ["ok", "ok", "failed", "ok"],
        "generation": [0, 0, 1, 1],
    })  # fmt: skip
    rows = bench_kl_curve.curve_rows(spec, frame)
    best = {(row["level"], row["candidates"]): row["best_kl"] for row in rows}
    assert [best[("0.5", str(n))] for n in range(1, 5)] == ["0.500000"] * 4
    # The failed candidate (kl 0.1) never counts, however sparse.
    assert [best[("0.7", str(n))] for n in range(1, 5)] == ["", "2.000000", "2.000000", "1.500000"]
    assert len(rows) == 4 * len(bench_plan.RANGE_LEVELS)


def test_updating_one_search_keeps_the_others_in_plan_order(tmp_path: Path) -> None:
    order = [spec.name for spec in bench_plan.plan()]
    frame = pd.DataFrame({"eval_id": [0, 1], "kl": [3.0, 2.0], "status": ["ok", "ok"], "generation": [0, 0]})
    for name in ("sensitivity-unstructured-0.70", "naive-unstructured-0.70", "sensitivity-unstructured-0.70"):
        spec = bench_plan.spec_named(name)
        assert spec is not None
        bench_kl_curve.update_curves(spec, frame, tmp_path, order)
    rows = list(pd.read_csv(tmp_path / "curves.csv", dtype=str).itertuples(index=False))
    assert [row.search for row in rows] == ["naive-unstructured-0.70"] * 2 + ["sensitivity-unstructured-0.70"] * 2
    assert [row.best_kl for row in rows] == ["3.000000", "2.000000"] * 2
    assert (tmp_path / "curves.png").stat().st_size > 0
