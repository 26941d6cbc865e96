"""The plan: which rows each study measures, in which order, and which the filters keep."""

from __future__ import annotations

import pytest

from paretoprune.errors import InputError

from benchmarks.labels import label
from benchmarks.plan import PLAN, Pruning, baseline, planned, search_rows, select
from benchmarks.searches import RANGE_LEVELS, search_named


def test_every_planned_row_is_planned_once_per_study() -> None:
    for study in ("baselines", "searched", "zeroshot"):
        rows = planned(study)
        assert len(rows) == len(set(rows)) and rows[0] == Pruning("dense")
    assert len(planned("baselines")) == 94 and len(planned("searched")) == 113 and len(planned("zeroshot")) == 3
    assert {row.study for row in PLAN} == {"baselines", "searched", "zeroshot"}


def test_baseline_filters_pick_one_shape_and_calibration() -> None:
    chosen = select(planned("baselines"), only=["wanda"], shapes=["0.7", "2:4"], calibrations=["one-shot"])
    assert {(p.name, p.shape, p.calibration) for p in chosen} == {("wanda", "0.7", "one-shot"), ("wanda", "2:4", "one-shot")}


def test_the_dense_row_passes_every_filter_but_only() -> None:
    chosen = select(planned("baselines"), shapes=["0.5"], pruners=["ria"], calibrations=["sequential"])
    assert chosen[0].kind == "dense" and {p.name for p in chosen[1:]} == {"ria"}
    assert all(p.kind != "dense" for p in select(planned("baselines"), only=["ria"]))


@pytest.mark.parametrize("name", ["sparsegpt", "wanda-update"])
def test_hessian_baselines_cover_every_shape_the_searches_report(name: str) -> None:
    rows = [p for p in planned("baselines") if p.name == name]
    for calibration in ("one-shot", "sequential"):
        assert {p.shape for p in rows if p.calibration == calibration} == {"0.5", "0.6", "0.7", "2:4"}
    assert len(rows) == 8


def test_update_rows_name_their_rule() -> None:
    update = baseline("baselines", "wanda", 0.5, update=True).pruning
    assert (update.pruner, update.update, update.name, update.pruner_label) == ("wanda", True, "wanda-update", "update")
    owl = baseline("baselines", "wanda", 0.5, allocation="owl").pruning
    assert owl.name == "owl-wanda" and owl.describe() == "owl-wanda 50% one-shot"
    assert baseline("baselines", "ria", 0.0, structure="4:8").pruning.target_sparsity == 0.5


def test_a_search_gives_every_pick_pruner_and_calibration_one_shot_first() -> None:
    rows = [row.pruning for row in search_rows("searched", search_named("metric-2of4-0.50"))]
    assert [(p.pruner_label, p.calibration) for p in rows] == [
        ("recipe", "one-shot"), ("update", "one-shot"), ("sparsegpt", "one-shot"),
        ("recipe", "sequential"), ("update", "sequential"), ("sparsegpt", "sequential"),
    ]  # fmt: skip
    assert rows[1].describe() == "metric-2of4-0.50 at 50%, pruner update, one-shot"
    # The sensitivity search's recipe is applied with Wanda++'s regional optimisation too, one-shot.
    solved = [row.pruning for row in search_rows("searched", search_named("sensitivity-unstructured-0.70"))][-1]
    assert (solved.pruner, solved.solvers, solved.pruner_label, solved.calibration) == (
        "recipe", "regional", "regional", "one-shot")
    assert label(solved) == "sensitivity search → RO"
    # The range search gives one recipe per level, applied one-shot with its own rule only.
    ranged = [row.pruning for row in search_rows("searched", search_named("layerwise-unstructured-0.40to0.80"))]
    assert [(p.target_sparsity, p.pruner_label, p.calibration) for p in ranged] == [
        (level, "recipe", "one-shot") for level in RANGE_LEVELS
    ]


def test_unknown_filter_values_are_refused_in_one_line() -> None:
    with pytest.raises(InputError, match="--only layerwise-unstructured-0.99 is not known"):
        select(planned("searched"), only=["layerwise-unstructured-0.99"])
    with pytest.raises(InputError, match="--pruners wanda is not known"):
        select(planned("searched"), pruners=["wanda"])
    with pytest.raises(InputError, match="--calibrations both is not known"):
        select(planned("searched"), calibrations=["both"])


def test_building_block_rows_name_their_rows_and_solvers_and_read_as_labels() -> None:
    from benchmarks.labels import label

    fw = baseline("baselines", "wanda", 0.0, structure="2:4", solvers="fw", update=True, calibration="sequential").pruning
    assert (fw.name, fw.chain, label(fw)) == ("wanda-fw-update", ("fw", "update"), "Wanda → FW + update, sequential")
    trim = baseline("baselines", "wanda", 0.8, rows="trim").pruning
    assert (trim.name, trim.chain, label(trim)) == ("wanda-trim", (), "Wanda + TRIM rows")
    ro = baseline("baselines", "wanda++", 0.0, structure="2:4", solvers="regional").pruning
    assert (ro.name, label(ro)) == ("wanda++-regional", "Wanda++ RGS → RO")
    names = {p.name for p in planned("baselines")}
    assert {"unipruning", "lrp", "wanda++", "tplo-wanda", "wanda-trim", "wanda-fw", "wanda-fw-update"} <= names
    assert all(p.structure == "unstructured" for p in planned("baselines") if p.rows != "uniform" or p.source == "tplo")
