"""Best perplexity so far: which candidates are scored, and which cached points are reused."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks.ppl_curves import PplPoint, best_so_far, ppl_figure, record_ppl_points
from benchmarks.table import read_table, write_table


def test_best_so_far_takes_the_lowest_kl_among_the_first_n_successes() -> None:
    frame = pd.DataFrame({
        "eval_id": [0, 1, 2, 3, 4, 5],
        "kl": [3.0, 2.5, 1.0, 2.0, 0.5, 0.1],
        "status": ["ok", "ok", "failed", "ok", "ok", "ok"],  # the failed row's kl never counts
    })  # fmt: skip
    points = best_so_far(frame, [2, 4, 5, 7])  # 7 is past the end: the whole archive instead
    assert [(p.candidates, p.eval_id, p.kl) for p in points] == [(2, 1, 2.5), (4, 3, 2.0), (5, 4, 0.5), (6, 5, 0.1)]


def test_recording_reuses_scored_points_and_keeps_other_searches(tmp_path: Path) -> None:
    path = tmp_path / "ppl_curves.csv"
    other = PplPoint("naive-unstructured-0.70", 0.7, 16, 3, 2.5, 500.0)
    mine = PplPoint("layerwise-unstructured-0.70", 0.7, 16, 7, 2.4, 450.0)
    write_table(path, [other, mine], PplPoint)
    frame = pd.DataFrame({"eval_id": range(20), "kl": [3.0] * 7 + [2.4] + [3.0] * 11 + [1.0],
                          "status": ["ok"] * 20, "candidate": ["{}"] * 20})  # fmt: skip
    # Without a scorer only cached points come back: 16 (eval 7, cached) but not 20 (eval 19).
    points = record_ppl_points(path, "layerwise-unstructured-0.70", 0.7, frame, scorer=None)
    assert points == [mine, other] == read_table(path, PplPoint)
    # Run again from scratch, eval 7 is another candidate (another kl): its cached point is stale.
    frame.loc[7, "kl"] = 2.3
    assert record_ppl_points(path, "layerwise-unstructured-0.70", 0.7, frame, scorer=None) == [other]


def test_the_figure_has_a_panel_per_level_and_the_baselines_as_references() -> None:
    points = [PplPoint("naive-unstructured-0.70", 0.7, 16, 3, 2.5, 500.0),
              PplPoint("sensitivity-unstructured-0.50", 0.5, 16, 3, 0.6, 60.0)]  # fmt: skip
    figure = ppl_figure(points, {0.7: {"Wanda": 841.2}})
    assert [panel.title for panel in figure.panels] == ["50% unstructured", "70% unstructured"]
    assert figure.panels[1].references == (("Wanda", 841.2),) and figure.log_y
    assert figure.panels[1].lines[0].label == "naive swap search"


def test_a_range_search_picks_the_front_member_nearest_each_level_among_the_first_n() -> None:
    frame = pd.DataFrame({
        "eval_id": [0, 1, 2, 3, 4],
        "kl": [0.5, 2.0, 1.0, 0.8, 1.5],
        "sparsity": [0.4, 0.8, 0.6, 0.6, 0.7],
        "status": ["ok"] * 5,
    })  # fmt: skip
    # Among the first 3 the front is {0 (0.4), 2 (0.6), 1 (0.8)}: 0.6 picks eval 2, 0.7 the
    # nearer of 0.6 and 0.8 (a tie, the lower one); with eval 3, 0.6 picks the better one.
    at_60 = best_so_far(frame, [1, 3, 4], level=0.6)
    assert [(p.candidates, p.eval_id) for p in at_60] == [(3, 2), (4, 3), (5, 3)]  # 1: no member near 0.6
    at_70 = best_so_far(frame, [3, 4], level=0.7)
    assert [(p.candidates, p.eval_id) for p in at_70] == [(3, 2), (4, 3), (5, 4)]


def test_a_range_search_records_each_level_without_dropping_the_others(tmp_path: Path) -> None:
    path = tmp_path / "ppl_curves.csv"
    at_50 = PplPoint("memetic-unstructured-0.40to0.80", 0.5, 2, 0, 0.5, 60.0)
    at_60 = PplPoint("memetic-unstructured-0.40to0.80", 0.6, 2, 1, 1.0, 120.0)
    write_table(path, [at_50, at_60], PplPoint)
    frame = pd.DataFrame({"eval_id": [0, 1], "kl": [0.5, 1.0], "sparsity": [0.5, 0.6], "status": ["ok", "ok"],
                          "candidate": ["{}", "{}"]})  # fmt: skip
    points = record_ppl_points(path, at_60.search, 0.6, frame, scorer=None, ranged=True)
    assert points == [at_50, at_60]
