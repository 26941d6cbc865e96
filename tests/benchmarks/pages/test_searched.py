"""The searched page, rendered from rows alone."""

from __future__ import annotations

from benchmarks.measurement import Measurement, SearchFacts
from benchmarks.pages.searched import against_budget, comparable_baselines, searched_page
from benchmarks.plan import Pruning, baseline, planned, search_rows
from benchmarks.searches import Budget, search_named

from tests.benchmarks.pages.conftest import protocol

BUDGET = Budget(pop=16, generations=15, nsamples=8, seqlen=256, workers=1)
OURS = protocol(("wikitext2", "ptb", "c4"), "python -m benchmarks searched", BUDGET)


def _searched(search: str, pruner: str, wikitext2: float, kl: float, calibration: str = "one-shot",
              update: bool = False) -> Measurement:  # fmt: skip
    spec = search_named(search)
    pruning = Pruning("search", search, pruner, update, spec.structure, spec.target, calibration)
    facts = SearchFacts(258, 0, 40.3, 36.2, f"recipes/{search}.yaml", 7, kl, "wanda", 0.40, 0.99)
    return Measurement(pruning, spec.target, wikitext2, 600.0, 200.0, 1.0, 2.0, facts)


def _baseline(pruner: str, calibration: str, wikitext2: float) -> Measurement:
    return Measurement(baseline("baselines", pruner, 0.7, calibration=calibration).pruning, 0.7, wikitext2, None, None,
                       1.0, 2.0)  # fmt: skip


def test_the_page_shows_ratios_to_one_shot_wanda_and_lists_what_is_missing() -> None:
    rows = [
        _searched("sensitivity-unstructured-0.70", "recipe", 257.4148, 1.88),
        _searched("sensitivity-unstructured-0.70", "recipe", 301.5, 1.88, calibration="sequential"),
    ]
    baselines = [_baseline("wanda", "one-shot", 841.22), _baseline("wanda", "sequential", 972.49)]
    planned_rows = [row.pruning for row in search_rows("searched", search_named("sensitivity-unstructured-0.70"))]
    page = searched_page(rows, baselines, 2, OURS, planned_rows)
    assert "| sensitivity search |  |  | 257.41 (0.31×) |  |" in page
    assert "| Wanda |  |  | 841.22 (1.00×) |  |" in page
    assert "| Wanda, sequential |  |  | 972.49 (1.16×) |  |" in page  # its own line, not the reference
    assert "| sensitivity search, sequential |  |  | 301.50 (0.36×) |  |" in page
    assert "| sensitivity search | 0.7000 | 257.41 | 600.00 | 200.00 | 0.306 | 258 | 40.3 |" in page
    assert "| Wanda | 0.7000 | 841.22 | – | – | 1.000 | – | – |" in page
    assert "**Dense model:** perplexity WikiText-2 –, PTB –, C4 –." in page
    assert "- sensitivity-unstructured-0.70 at 70%, pruner sparsegpt, one-shot" in page
    assert "- sensitivity-unstructured-0.70 at 70%, pruner sparsegpt, sequential" in page
    assert "pruner recipe" not in page
    assert "[sensitivity-unstructured-0.70.yaml](recipes/sensitivity-unstructured-0.70.yaml)" in page
    assert "4 rounds at every level (70%, 60%, 50%): 258 candidates, 18 more than the others' 240." in page


def test_the_cost_table_keeps_one_line_per_search() -> None:
    rows = [_searched("metric-2of4-0.50", pruner, ppl, 0.9) for pruner, ppl in (("recipe", 189.78), ("sparsegpt", 143.24))]
    page = searched_page(rows, [], 0, OURS, planned("searched"))
    cost_lines = [line for line in page.splitlines() if line.startswith("| metric-2of4-0.50 |")]
    assert len(cost_lines) == 1 and "[fronts/metric-2of4-0.50.png]" in cost_lines[0]
    assert "(0 of its 0 rows)" in page


def test_baselines_made_with_other_windows_are_left_out() -> None:
    rows = [_baseline("wanda", "one-shot", 841.22)]
    assert comparable_baselines(rows, protocol(), OURS) == rows
    assert comparable_baselines(rows, protocol(eval_windows=16), OURS) == []
    assert comparable_baselines(rows, None, OURS) == []


def test_a_search_budget_is_compared_with_the_others() -> None:
    assert against_budget(258, BUDGET) == "18 more than the others' 240"
    assert against_budget(194, BUDGET) == "46 fewer than the others' 240"
    assert against_budget(240, BUDGET) == "as many as the others"
