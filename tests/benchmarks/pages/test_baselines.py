"""The baselines page, rendered from rows alone."""

from __future__ import annotations

from benchmarks.measurement import Measurement
from benchmarks.pages.baselines import baselines_page
from benchmarks.plan import Pruning, baseline, dense, planned

from tests.benchmarks.pages.conftest import protocol


def _row(pruning: Pruning, ppl: float) -> Measurement:
    return Measurement(pruning, pruning.target_sparsity, ppl, None, None, 1.0, 2.0)


def test_cells_land_in_their_calibration_column_and_the_rest_is_listed_as_missing() -> None:
    one_shot = baseline("baselines", "sparsegpt", 0.6).pruning
    sequential = baseline("baselines", "sparsegpt", 0.6, calibration="sequential").pruning
    rows = [_row(dense("baselines").pruning, 28.5), _row(one_shot, 168.61), _row(sequential, 120.25)]
    plan = planned("baselines")
    page = baselines_page(rows, protocol(), plan)
    sparsegpt_line = next(line for line in page.splitlines() if line.startswith("| SparseGPT |"))
    # Columns: 50 % one-shot, 50 % sequential, 60 % one-shot, 60 % sequential, 70 % ...
    assert [cell.strip() for cell in sparsegpt_line.split("|")[2:7]] == ["", "", "168.61", "120.25", ""]
    assert "**Dense model:** perplexity 28.50" in page
    assert f"{len(rows)} of {len(plan)} planned rows are present" in page
    assert "- sparsegpt 70% sequential" in page and "- sparsegpt 60% sequential" not in page
    assert "Finish the table with `python -m benchmarks baselines` (it resumes" in page
    assert "| sparsegpt | uniform | unstructured | 0.6 | sequential | 0.600000 | 120.2500 | 16352 | 1.0 | 2.0 |" in page


def test_a_pruner_the_labels_do_not_know_gets_a_line_of_its_own() -> None:
    seed = baseline("baselines", "dsnot", 0.5).pruning
    page = baselines_page([_row(seed, 61.0)], protocol(), [seed])
    assert "| dsnot | 61.00 |" in page
    assert "**Dense model:** perplexity –" in page and "All 1 planned rows are present." in page


def test_a_building_block_gets_its_own_line_apart_from_the_plain_rule() -> None:
    trim = baseline("baselines", "wanda", 0.8, rows="trim").pruning
    plain = baseline("baselines", "wanda", 0.8).pruning
    page = baselines_page([_row(trim, 900.0), _row(plain, 1500.0)], protocol(), planned("baselines"))
    # Columns: 50, 60, 70 and 80 %, one-shot and sequential each: 80 % one-shot is the seventh.
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:10]] for line in page.splitlines()
             if line.startswith("| Wanda")}  # fmt: skip
    assert cells["Wanda + TRIM rows"][6] == "900.00" and cells["Wanda"][6] == "1500.00"
    assert "| trim |" not in page and "| wanda-trim | uniform | unstructured | 0.8 | one-shot |" in page
