"""The searched table's orchestration on a real (tiny) model: rows measured from recipes."""

from __future__ import annotations

from pathlib import Path

import bench_io
import bench_plan
import bench_search
import pytest
import torch

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
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


def _options(tmp_path: Path, model_dir: Path, *filters: str) -> bench_search.Options:
    return bench_search.parse_options([
        "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs"), "--model", str(model_dir),
        "--baselines", str(tmp_path / "none.csv"), "--calib-seqlen", str(SEQLEN), "--eval-seqlen", str(SEQLEN),
        "--calib-nsamples", "2", "--eval-windows", "2", *filters,
    ])  # fmt: skip


def test_without_its_run_folder_a_search_measures_its_missing_rows_from_the_exported_recipe(
    tmp_path: Path,
) -> None:
    model_dir, out = tmp_path / "model", tmp_path / "out"
    model = tiny_model("llama", layers=2)
    model.save_pretrained(model_dir)
    byte_tokenizer().save_pretrained(model_dir)
    generator = torch.Generator().manual_seed(0)
    windows = {name: torch.randint(0, TINY_VOCAB - 2, (2, SEQLEN), generator=generator)
               for name in bench_plan.EVALUATION_FILES}  # fmt: skip
    bench = bench_search.Bench(str(model_dir), windows["c4"], windows, batch_size=2)
    options = _options(tmp_path, model_dir)
    protocol = bench_plan.Protocol(
        model=bench_io.ModelRecord(str(model_dir), "tiny", "00", fingerprint(model), blocks=2, linears=14),
        calibration_sha256="11", evaluation_sha256={name: "22" for name in windows},
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
    spec = bench_plan.spec_named(SEARCH)
    assert spec is not None
    order = [s.name for s in bench_plan.plan()]

    # First only the one-shot update row, as --pruners and --calibrations ask; then the rest.
    filtered = _options(tmp_path, model_dir, "--pruners", "update", "--calibrations", "one-shot")
    table = bench_search.Table(filtered, protocol, planned, rows)
    bench_search.run_one_search(spec, table, bench, order)
    measured = [(row["pruner"], row["calibration"]) for row in table.rows]
    assert measured == [("recipe", "one-shot"), ("update", "one-shot")]
    table = bench_search.Table(options, protocol, planned, table.rows)
    bench_search.run_one_search(spec, table, bench, order)

    assert not (tmp_path / "runs" / SEARCH).exists()  # the search was not run again
    written = {(row["pruner"], row["calibration"]): row for row in bench_io.read_rows(out / "searched.csv")}
    assert list(written) == [(pruner, calibration) for calibration in bench_plan.CALIBRATIONS
                             for pruner in bench_plan.PRUNERS]  # fmt: skip
    for key, row in written.items():
        assert {name: row[name] for name in facts} == facts
        assert abs(float(row["achieved_sparsity"]) - 0.7) < 0.01
        assert key == ("recipe", "one-shot") or float(row["wikitext2_ppl"]) > 1  # measured, not copied
    # Each way of applying the recipe gives another model.
    perplexities = [row["wikitext2_ppl"] for key, row in written.items() if key != ("recipe", "one-shot")]
    assert len(set(perplexities)) == len(perplexities)
    assert "sensitivity search + update, sequential" in (out / "README.md").read_text()


def test_unknown_pruners_or_calibrations_are_refused_in_one_line() -> None:
    with pytest.raises(InputError, match="--pruners wanda is not known"):
        bench_search.parse_options(["--pruners", "wanda"])
    with pytest.raises(InputError, match="--calibrations both is not known"):
        bench_search.parse_options(["--calibrations", "both"])
