"""Best kl so far: one curve per fixed-sparsity search, one per level for the range search."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks.kl_curves import KlPoint, kl_figure, kl_points, record_kl_points
from benchmarks.plots import draw
from benchmarks.searches import RANGE_LEVELS, search_named
from benchmarks.table import read_table


def test_a_range_search_level_counts_only_candidates_that_sparse() -> None:
    frame = pd.DataFrame({
        "eval_id": [0, 1, 2, 3],
        "kl": [0.5, 2.0, 0.1, 1.5],
        "sparsity": [0.55, 0.70, 0.75, 0.6981],  # 0.6981 is 0.7 within the repair's slack
        "status": ["ok", "ok", "failed", "ok"],
        "generation": [0, 0, 1, 1],
    })  # fmt: skip
    points = kl_points(search_named("layerwise-unstructured-0.40to0.80"), frame)
    best = {(point.level, point.candidates): point.best_kl for point in points}
    assert [best[(0.5, n)] for n in range(1, 5)] == [0.5] * 4
    # The failed candidate (kl 0.1) never counts, however sparse.
    assert [best[(0.7, n)] for n in range(1, 5)] == [None, 2.0, 2.0, 1.5]
    assert len(points) == 4 * len(RANGE_LEVELS)


def test_recording_one_search_keeps_the_others_in_plan_order(tmp_path: Path) -> None:
    frame = pd.DataFrame({"eval_id": [0, 1], "kl": [3.0, 2.0], "status": ["ok", "ok"], "generation": [0, 0]})
    path = tmp_path / "curves.csv"
    for name in ("sensitivity-unstructured-0.70", "naive-unstructured-0.70", "sensitivity-unstructured-0.70"):
        record_kl_points(path, search_named(name), frame)
    points = read_table(path, KlPoint)
    assert [point.search for point in points] == ["naive-unstructured-0.70"] * 2 + ["sensitivity-unstructured-0.70"] * 2
    assert [point.best_kl for point in points] == [3.0, 2.0] * 2
    assert path.read_text().splitlines()[1] == "naive-unstructured-0.70,0.7,1,0,0,3.000000"
    figure = kl_figure(points)
    assert [panel.title for panel in figure.panels] == ["70% unstructured"]
    assert [line.label for line in figure.panels[0].lines] == ["naive search", "sensitivity search"]
    draw(figure, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0
