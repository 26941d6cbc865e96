"""The runner on a tiny model: rows measured, skipped when present, and searched rows measured
from recipes exported before."""

from __future__ import annotations

from pathlib import Path

import pytest

from paretoprune.errors import InputError
from paretoprune.models import load_model
from paretoprune.recipe import save_recipe

import benchmarks.runner
from benchmarks.measurement import Measurement, SearchFacts
from benchmarks.plan import CALIBRATIONS, SEARCH_PRUNERS, Pruning, planned
from benchmarks.protocol import PROTOCOL_FILE, Windows, read_protocol
from benchmarks.runner import Filters, RunOptions, run_study
from benchmarks.studies import STUDIES
from benchmarks.table import read_table, write_table

from tests.benchmarks.recipes import tiny_recipe

WINDOWS = Windows(calib_nsamples=2, calib_seqlen=16, eval_windows=2, eval_seqlen=16)
SEARCH = "sensitivity-unstructured-0.70"


def _options(tmp_path: Path, model_dir: Path, data_dir: Path, windows: Windows = WINDOWS, **filters: tuple) -> RunOptions:
    return RunOptions(out=tmp_path / "out", runs=tmp_path / "runs", data_dir=data_dir, model=str(model_dir),
                      windows=windows, batch_size=2, filters=Filters(**filters), command="python -m benchmarks x")  # fmt: skip


def test_a_run_measures_the_selected_rows_and_a_second_run_skips_them(
    tmp_path: Path, model_dir: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = _options(tmp_path, model_dir, data_dir, only=("dense", "wanda"), shapes=("0.5",),
                       calibrations=("one-shot",))  # fmt: skip
    rows = run_study(STUDIES["baselines"], options)
    assert [(row.pruning.name, row.pruning.shape, row.pruning.calibration) for row in rows] == [
        ("dense", "0", "none"), ("wanda", "0.5", "one-shot")]  # fmt: skip
    assert rows[1].achieved_sparsity == pytest.approx(0.5, abs=0.01) and rows[1].wikitext2_ppl != rows[0].wikitext2_ppl
    assert rows[1].ptb_ppl is None and read_table(options.out / "baselines.csv", Measurement) == rows
    page = (options.out / "README.md").read_text()
    assert f"2 of {len(planned('baselines'))} planned rows are present" in page and "`python -m benchmarks x`" in page
    stored = read_protocol(options.out / PROTOCOL_FILE)
    assert stored is not None and stored.eval_tokens == {"wikitext2": 2 * 15}

    def no_pruning(*args: object) -> None:
        raise AssertionError("a measured row was measured again")

    monkeypatch.setattr(benchmarks.runner, "prune_fresh", no_pruning)
    assert run_study(STUDIES["baselines"], options) == rows
    with pytest.raises(InputError, match=r"measured with other settings \(eval_tokens.wikitext2: 30 -> 45; windows.eval_windows: 2 -> 3\)"):
        run_study(STUDIES["baselines"], _options(tmp_path, model_dir, data_dir, Windows(2, 16, 0, 3, 16)))


def test_without_its_run_folder_a_search_measures_its_missing_rows_from_the_exported_recipe(
    tmp_path: Path, model_dir: Path, data_dir: Path
) -> None:
    out = tmp_path / "out"
    recipe = tiny_recipe(load_model(str(model_dir)).model, 0.7, run=f"runs/{SEARCH}")
    save_recipe(recipe, out / "recipes" / f"{SEARCH}.yaml")
    facts = SearchFacts(258, 0, 40.3, 36.2, f"recipes/{SEARCH}.yaml", 7, 1.5, "wanda", 0.7, 0.7)
    earlier = Measurement(Pruning("search", SEARCH, "recipe", False, "unstructured", 0.7, "one-shot"), 0.7, 1.0, 1.0,
                          1.0, 0.0, 0.0, facts)  # fmt: skip
    write_table(out / "searched.csv", [earlier], Measurement)

    # First only the one-shot update row, as --pruners and --calibrations ask; then the rest.
    run_study(STUDIES["searched"], _options(tmp_path, model_dir, data_dir, only=(SEARCH,), pruners=("update",),
                                            calibrations=("one-shot",)))  # fmt: skip
    rows = read_table(out / "searched.csv", Measurement)
    assert [(row.pruning.pruner_label, row.pruning.calibration) for row in rows] == [("recipe", "one-shot"),
                                                                                       ("update", "one-shot")]  # fmt: skip
    rows = run_study(STUDIES["searched"], _options(tmp_path, model_dir, data_dir, only=(SEARCH,)))

    assert not (tmp_path / "runs" / SEARCH).exists()  # the search was not run again
    assert [(row.pruning.pruner, row.pruning.update, row.pruning.calibration, row.pruning.solvers) for row in rows] == [
        *((pruner, update, calibration, "none") for calibration in CALIBRATIONS for pruner, update in SEARCH_PRUNERS),
        ("recipe", False, "one-shot", "regional"),  # then Wanda++'s regional optimisation of the recipe's masks
    ]
    assert all(row.search == facts for row in rows)
    assert all(row.achieved_sparsity == pytest.approx(0.7, abs=0.01) for row in rows[1:])
    assert all(row.wikitext2_ppl > 1 and row.ptb_ppl and row.c4_ppl for row in rows[1:])  # measured, not copied
    perplexities = [row.wikitext2_ppl for row in rows[1:]]  # each way of applying the recipe gives another model
    assert len(set(perplexities)) == len(perplexities)
    assert "sensitivity search + update, sequential" in (out / "README.md").read_text()
