"""The searched table's orchestration on a real (tiny) model: rows measured from recipes."""

from __future__ import annotations

from pathlib import Path

import bench_io
import bench_plan
import bench_search
import torch

from paretoprune.candidate import Candidate
from paretoprune.metrics.scores import KNOWN_METRICS
from paretoprune.models import find_layout, fingerprint
from paretoprune.recipe import Recipe, save_recipe
from paretoprune.testing import TINY_VOCAB, byte_tokenizer, tiny_model

SEARCH = "sensitivity-unstructured-0.70"
SEQLEN = 16


def _exported_recipe(model, out: Path) -> str:
    layout = find_layout(model)
    recipe = Recipe.from_candidate(
        Candidate(KNOWN_METRICS["wanda"], {name: 0.7 for name in layout.names}), model_name="tiny-llama",
        fingerprint=fingerprint(model), family=layout.family,
        layer_numels=dict(zip(layout.names, layout.numels, strict=True)), objectives={"kl": 1.5},
        provenance={"calibration": {"source": "c4/c4.jsonl", "sha256": "ab" * 32, "nsamples": 2, "seqlen": SEQLEN,
                                    "seed": 0}, "search": {"run": f"runs/{SEARCH}", "evaluation": 7}},
    )  # fmt: skip
    save_recipe(recipe, out / "recipes" / f"{SEARCH}.yaml")
    return f"recipes/{SEARCH}.yaml"


def test_without_its_run_folder_a_search_measures_its_missing_rows_from_the_exported_recipe(
    tmp_path: Path,
) -> None:
    model_dir, out, runs = tmp_path / "model", tmp_path / "out", tmp_path / "runs"
    model = tiny_model("llama", layers=2)
    model.save_pretrained(model_dir)
    byte_tokenizer().save_pretrained(model_dir)
    options = bench_search.parse_options([
        "--out", str(out), "--runs", str(runs), "--model", str(model_dir), "--baselines", str(tmp_path / "none.csv"),
        "--calib-seqlen", str(SEQLEN), "--eval-seqlen", str(SEQLEN), "--calib-nsamples", "2", "--eval-windows", "2",
    ])  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    windows = {name: torch.randint(0, TINY_VOCAB - 2, (2, SEQLEN), generator=generator)
               for name in bench_plan.EVALUATION_FILES}  # fmt: skip
    bench = bench_search.Bench(str(model_dir), windows["c4"], windows, batch_size=2)
    protocol = bench_plan.Protocol(
        model=str(model_dir), model_file="tiny", model_sha256="00", fingerprint=fingerprint(model), blocks=2,
        linears=14, calibration_sha256="11", evaluation_sha256={name: "22" for name in windows},
        evaluation_tokens={name: 2 * (SEQLEN - 1) for name in windows}, budget=options.budget, calib_nsamples=2,
        calib_seqlen=SEQLEN, eval_windows=2, eval_seqlen=SEQLEN, command="python scripts/bench_search.py",
    )  # fmt: skip
    facts = {"candidates": "258", "failed": "0", "search_minutes": "40.3", "fitness_minutes": "36.2",
             "recipe": _exported_recipe(model, out), "eval_id": "7", "kl": "1.5", "rule": "wanda",
             "layer_min": "0.7000", "layer_max": "0.7000"}  # fmt: skip
    earlier = {"search": SEARCH, "mode": "layerwise", "structure": "unstructured", "target_sparsity": "0.7",
               "pruner": "recipe", "achieved_sparsity": "0.7", "wikitext2_ppl": "1", "ptb_ppl": "1", "c4_ppl": "1",
               **facts, **protocol.row_fields()}  # fmt: skip
    planned = bench_plan.planned_keys(bench_plan.plan())
    rows = [bench_plan.with_calibration(earlier)]  # written before the calibration column
    table = bench_search.Table(options, protocol, planned, rows)
    spec = bench_plan.spec_named(SEARCH)
    assert spec is not None

    bench_search.run_one_search(spec, table, bench, [s.name for s in bench_plan.plan()])

    assert not (runs / SEARCH).exists()  # the search was not run again
    written = bench_io.read_rows(out / "searched.csv")
    assert [(row["pruner"], row["calibration"]) for row in written] == [
        ("recipe", "one-shot"), ("sparsegpt", "one-shot"), ("recipe", "sequential"), ("sparsegpt", "sequential")
    ]
    for row in written[1:]:
        assert {name: row[name] for name in facts} == facts
        assert abs(float(row["achieved_sparsity"]) - 0.7) < 0.01
        assert float(row["wikitext2_ppl"]) > 1  # measured, not copied from the earlier row
    # Sequential SparseGPT calibrates the second block on the pruned first one: another model.
    assert written[3]["wikitext2_ppl"] != written[1]["wikitext2_ppl"]
    assert "sensitivity search, sequential" in (out / "README.md").read_text()
