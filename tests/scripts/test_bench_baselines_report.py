"""The baseline table's README, rendered from rows alone."""

from __future__ import annotations

from bench_baselines_plan import BenchConfig, Protocol, plan
from bench_baselines_report import render_readme
from bench_io import ModelRecord

PROTOCOL = Protocol(
    model=ModelRecord("smollm2-135m", "model.gguf", "ab" * 32, "llama-30", blocks=30, linears=210),
    calibration_file="c4/train.jsonl", calibration_file_sha256="cd" * 32,
    calibration_sha256="ef" * 32, nsamples=32, seqlen=512, seed=0, evaluation_file="wikitext2/test.raw",
    evaluation_sha256="01" * 32, eval_windows=32, eval_tokens=32 * 511,
)  # fmt: skip


def _row(config: BenchConfig, ppl: float) -> dict[str, str]:
    return {
        "method": config.method, "allocation": config.allocation, "structure": config.structure,
        "target_sparsity": f"{config.target_sparsity:g}", "calibration": config.calibration,
        "achieved_sparsity": f"{config.target_sparsity:.6f}", "wikitext2_ppl": f"{ppl:.4f}",
        "eval_tokens": "16352", "prune_seconds": "1.0", "eval_seconds": "2.0",
        "nsamples": "32", "seqlen": "512", "seed": "0",
    }  # fmt: skip


def test_cells_land_in_their_calibration_column_and_the_rest_is_listed_as_missing() -> None:
    one_shot = BenchConfig("sparsegpt", target_sparsity=0.6, calibration="one-shot")
    sequential = BenchConfig("sparsegpt", target_sparsity=0.6, calibration="sequential")
    rows = [_row(BenchConfig("dense"), 28.5), _row(one_shot, 168.61), _row(sequential, 120.25)]
    planned = plan(with_sparsegpt=True)
    page = render_readme(rows, PROTOCOL, planned, "python scripts/bench_baselines.py --with-sparsegpt")
    sparsegpt_line = next(line for line in page.splitlines() if line.startswith("| SparseGPT |"))
    # Columns: 50 % one-shot, 50 % sequential, 60 % one-shot, 60 % sequential, 70 % ...
    assert [cell.strip() for cell in sparsegpt_line.split("|")[2:7]] == ["", "", "168.61", "120.25", ""]
    assert "**Dense model:** perplexity 28.50" in page
    assert f"{len(rows)} of {len(planned)} planned rows are present" in page
    assert "- sparsegpt 70% sequential" in page and "- sparsegpt 60% sequential" not in page
    assert "--with-sparsegpt` (it skips the rows already present)" in page
