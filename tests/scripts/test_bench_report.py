"""The searched table's README, rendered from rows alone."""

from __future__ import annotations

import bench_plan
import bench_report
from bench_io import ModelRecord

BUDGET = bench_plan.Budget(pop=16, generations=15, nsamples=8, seqlen=256, workers=1, seed=0)
PROTOCOL = bench_plan.Protocol(
    model=ModelRecord("smollm2-135m", "model.gguf", "00" * 32, "abc", blocks=30, linears=210),
    calibration_sha256="11" * 32,
    evaluation_sha256={name: "22" * 32 for name in bench_plan.EVALUATION_FILES},
    evaluation_tokens={name: 32 * 511 for name in bench_plan.EVALUATION_FILES}, budget=BUDGET, calib_nsamples=32,
    calib_seqlen=512, eval_windows=32, eval_seqlen=512, command="python scripts/bench_search.py",
)  # fmt: skip


def _searched(
    search: str, pruner: str, wikitext2: float, kl: float, calibration: str = "one-shot"
) -> dict[str, str]:
    spec = bench_plan.spec_named(search)
    assert spec is not None
    return {
        "search": search, "mode": spec.mode, "structure": spec.structure, "target_sparsity": f"{spec.target:g}",
        "pruner": pruner, "calibration": calibration, "achieved_sparsity": f"{spec.target:.6f}",
        "wikitext2_ppl": f"{wikitext2}",
        "ptb_ppl": "600.0", "c4_ppl": "200.0", "candidates": "258", "failed": "0", "search_minutes": "40.3",
        "fitness_minutes": "36.2", "recipe": f"recipes/{search}.yaml", "kl": f"{kl}", "rule": "wanda",
        "layer_min": "0.40", "layer_max": "0.99",
    }  # fmt: skip


def _baseline(method: str, calibration: str, wikitext2: float, eval_tokens: int = 32 * 511) -> dict[str, str]:
    return {"method": method, "allocation": "uniform", "calibration": calibration, "structure": "unstructured",
            "target_sparsity": "0.7", "achieved_sparsity": "0.7", "wikitext2_ppl": f"{wikitext2}",
            "nsamples": "32", "seqlen": "512", "seed": "0", "eval_tokens": str(eval_tokens)}  # fmt: skip


def test_the_page_shows_ratios_to_one_shot_wanda_and_lists_what_is_missing() -> None:
    rows = [
        _searched("sensitivity-unstructured-0.70", "recipe", 257.4148, 1.88),
        _searched("sensitivity-unstructured-0.70", "recipe", 301.5, 1.88, calibration="sequential"),
    ]
    baselines = [
        _baseline("wanda", "one-shot", 841.22),
        _baseline("wanda", "sequential", 972.49),  # its own line, not the reference
        _baseline("ria", "one-shot", 1.0, eval_tokens=16 * 511),  # other windows: left out
    ]
    planned = bench_plan.planned_keys([bench_plan.spec_named("sensitivity-unstructured-0.70")])
    page = bench_report.render_readme(rows, baselines, PROTOCOL, planned)
    assert "| sensitivity search |  |  | 257.41 (0.31×) |  |" in page
    assert "| Wanda |  |  | 841.22 (1.00×) |  |" in page
    assert "| Wanda, sequential |  |  | 972.49 (1.16×) |  |" in page
    assert "| sensitivity search, sequential |  |  | 301.50 (0.36×) |  |" in page
    assert "RIA" not in page.split("## WikiText-2 perplexity")[1].split("##")[0]
    assert "**Dense model:** not run yet." in page
    assert "- sensitivity-unstructured-0.70 at 70%, pruner sparsegpt, one-shot" in page
    assert "- sensitivity-unstructured-0.70 at 70%, pruner sparsegpt, sequential" in page
    assert "pruner recipe" not in page
    assert "[sensitivity-unstructured-0.70.yaml](recipes/sensitivity-unstructured-0.70.yaml)" in page


def test_the_cost_table_keeps_one_line_per_search() -> None:
    measured = (("recipe", 189.78), ("sparsegpt", 143.24))
    rows = [_searched("metric-2of4-0.50", pruner, ppl, 0.9) for pruner, ppl in measured]
    page = bench_report.render_readme(rows, [], PROTOCOL, bench_plan.planned_keys([]))
    cost_lines = [line for line in page.splitlines() if line.startswith("| metric-2of4-0.50 |")]
    assert len(cost_lines) == 1 and "[fronts/metric-2of4-0.50.png]" in cost_lines[0]
    assert "`../baselines/baselines.csv` is not there yet" in page
