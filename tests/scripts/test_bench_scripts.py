"""The benchmark scripts' own logic: plans, filters, atomic tables and portable recipes.

The benchmarks themselves run for hours on the real model (``make bench``); these tests cover
what decides which rows they run, how they resume and what they write, without the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import bench_allocation
import bench_curve
import bench_io
import bench_zeroshot

from paretoprune.candidate import Candidate
from paretoprune.metrics.scores import KNOWN_METRICS
from paretoprune.models import find_layout, fingerprint
from paretoprune.recipe import Recipe, load_recipe, save_recipe
from paretoprune.testing import tiny_model


def test_rows_round_trip_and_a_rewrite_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    assert bench_io.read_rows(path) == []
    bench_io.write_rows(path, [{"a": "1", "b": "x"}], ["a", "b"])
    bench_io.write_rows(path, [{"a": "1", "b": "x"}, {"a": "2", "b": "y", "extra": "dropped"}], ["a", "b"])
    assert bench_io.read_rows(path) == [{"a": "1", "b": "x"}, {"a": "2", "b": "y"}]
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_file_sha256_reads_the_bytes(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "blob"
    path.write_bytes(b"paretoprune" * 100_000)
    assert bench_io.file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def _recipe(model, metric: str, sparsity: float, calibration_source: str, run: str) -> Recipe:
    layout = find_layout(model)
    return Recipe.from_candidate(
        Candidate(KNOWN_METRICS[metric], {name: sparsity for name in layout.names}),
        model_name="tiny-llama",
        fingerprint=fingerprint(model),
        family=layout.family,
        layer_numels=dict(zip(layout.names, layout.numels, strict=True)),
        objectives={"kl": 0.5},
        provenance={
            "calibration": {"source": calibration_source, "sha256": "ab" * 32,
                            "nsamples": 2, "seqlen": 8, "seed": 0},
            "search": {"run": run, "evaluation": 3},
        },
    )  # fmt: skip


def test_portable_recipe_rewrites_paths_and_keeps_the_hash(tmp_path: Path) -> None:
    model = tiny_model("llama")
    recipe = _recipe(model, "wanda", 0.5, str(tmp_path / "data" / "c4.jsonl"), str(tmp_path / "runs" / "x"))
    portable = bench_io.portable_recipe(recipe, "c4/c4.jsonl", "runs/x")
    data = portable.to_data()["provenance"]
    assert data["calibration"]["source"] == "c4/c4.jsonl"
    assert data["calibration"]["sha256"] == "ab" * 32
    assert data["search"] == {"run": "runs/x", "evaluation": 3}
    assert portable.to_data()["pruning"] == recipe.to_data()["pruning"]
    assert str(tmp_path) not in json.dumps(portable.to_data())


def test_run_label_is_relative_to_the_repository() -> None:
    assert bench_io.run_label(bench_io.REPO_ROOT / "runs" / "bench" / "a") == "runs/bench/a"
    assert bench_io.run_label(Path("/elsewhere/deep/runs/a")) == "runs/a"


def test_zero_shot_page_has_one_column_per_finished_row(tmp_path: Path) -> None:
    def tasks(acc: float) -> dict:
        per_task = {name: {"acc": acc, "n": 100} for name in bench_zeroshot.task_names()}
        per_task["lambada"]["perplexity"] = 12.5
        return {"tasks": per_task, "mean_acc": acc, "notes": ["hellaswag: derived copy"]}

    for row, acc in (("dense", 0.5), ("wanda-uniform-0.50", 0.25)):
        (tmp_path / f"{row}.json").write_text(json.dumps({"row": row, "tasks": tasks(acc)}))
    page = bench_zeroshot.render(tmp_path, limit=100)
    assert "| boolq | acc | 50.0 | 25.0 |" in page
    assert "| lambada | perplexity | 12.50 | 12.50 |" in page
    assert "| **mean** | acc | 50.0 | 25.0 |" in page
    assert "searched" not in page.split("| task | metric |")[1].splitlines()[0]  # no column yet
    assert "- hellaswag: derived copy" in page
    assert "Not run yet." in page  # no cross-check file beside the rows


def test_a_recipe_written_by_the_benchmarks_loads_back(tmp_path: Path) -> None:
    model = tiny_model("llama")
    layout = find_layout(model)
    recipe = _recipe(model, "ria", 0.25, str(tmp_path / "c4.jsonl"), str(tmp_path / "runs" / "r"))
    path = tmp_path / "r.yaml"
    save_recipe(bench_io.portable_recipe(recipe, "c4/c4.jsonl", "runs/r"), path)
    assert load_recipe(path).layer_sparsities(model) == {name: 0.25 for name in layout.names}


def test_best_so_far_takes_the_lowest_kl_among_the_first_n_successes() -> None:
    frame = pd.DataFrame({
        "eval_id": [0, 1, 2, 3, 4, 5],
        "kl": [3.0, 2.5, 1.0, 2.0, 0.5, 0.1],
        "status": ["ok", "ok", "failed", "ok", "ok", "ok"],  # the failed row's kl never counts
    })  # fmt: skip
    points = bench_curve.best_so_far(frame, [2, 4, 5, 7])  # 7 is past the end: the whole archive instead
    assert [(p.candidates, p.eval_id, p.kl) for p in points] == [(2, 1, 2.5), (4, 3, 2.0), (5, 4, 0.5), (6, 5, 0.1)]


def test_ppl_curve_reuses_scored_points_and_keeps_other_searches(tmp_path: Path) -> None:
    path = tmp_path / "ppl_curves.csv"
    other = {"search": "naive-unstructured-0.70", "level": "0.7", "candidates": "16", "eval_id": "3",
             "best_kl": "2.5", "wikitext2_ppl": "500.0"}  # fmt: skip
    mine = {"search": "layerwise-unstructured-0.70", "level": "0.7", "candidates": "16", "eval_id": "7",
            "best_kl": "2.400000", "wikitext2_ppl": "450.0"}  # fmt: skip
    bench_io.write_rows(path, [other, mine], bench_curve.PPL_CURVE_COLUMNS)
    frame = pd.DataFrame({"eval_id": range(20), "kl": [3.0] * 7 + [2.4] + [3.0] * 11 + [1.0],
                          "status": ["ok"] * 20, "candidate": ["{}"] * 20})  # fmt: skip
    # Without a scorer only cached points come back: 16 (eval 7, cached) but not 20 (eval 19).
    rows = bench_curve.update_ppl_curve(path, "layerwise-unstructured-0.70", 0.7, frame, scorer=None)
    assert sorted(rows, key=lambda row: row["search"]) == [mine, other]
    assert bench_io.read_rows(path) == rows
    # Run again from scratch, eval 7 is another candidate (another kl): its cached point is stale.
    frame.loc[7, "kl"] = 2.3
    rows = bench_curve.update_ppl_curve(path, "layerwise-unstructured-0.70", 0.7, frame, scorer=None)
    assert rows == [other]


def test_block_allocation_weights_each_linear_by_its_size(tmp_path: Path) -> None:
    model = tiny_model("llama")
    layout = find_layout(model)
    first = layout.linears_of_block(0)
    sparsities = {linear.name: 0.5 for linear in layout.linears}
    sparsities[first[0].name] = 0.9  # one linear of block 0 much sparser than the others
    recipe = Recipe.from_candidate(
        Candidate(KNOWN_METRICS["wanda"], sparsities), model_name="tiny-llama", fingerprint=fingerprint(model),
        family=layout.family, layer_numels=dict(zip(layout.names, layout.numels, strict=True)),
        objectives={"kl": 0.5}, provenance=_recipe(model, "wanda", 0.5, "c4/c4.jsonl", "runs/r").provenance,
    )  # fmt: skip
    shares = bench_allocation.block_sparsities(recipe, layout)
    expected = 0.5 + 0.4 * first[0].numel / sum(linear.numel for linear in first)
    assert len(shares) == len(layout.blocks) and shares[0] == pytest.approx(expected)
    assert shares[1:] == pytest.approx([0.5] * (len(layout.blocks) - 1))
    path = tmp_path / "allocations.csv"
    bench_allocation.update_allocations(path, "naive-unstructured-0.70", 0.7, [0.6, 0.8])
    bench_allocation.update_allocations(path, "sensitivity-unstructured-0.70", 0.7, [0.5, 0.9])
    rows = bench_allocation.update_allocations(path, "naive-unstructured-0.70", 0.7, [0.65, 0.75])  # replaces
    assert [(r["search"], r["block"], r["sparsity"]) for r in rows] == [
        ("naive-unstructured-0.70", "0", "0.6500"), ("naive-unstructured-0.70", "1", "0.7500"),
        ("sensitivity-unstructured-0.70", "0", "0.5000"), ("sensitivity-unstructured-0.70", "1", "0.9000"),
    ]  # fmt: skip
    bench_allocation.plot_allocations(rows, tmp_path / "allocations.png", {})
    assert (tmp_path / "allocations.png").stat().st_size > 0
