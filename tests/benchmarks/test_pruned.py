"""Pruning as a plan row says: each baseline with its own method, a fresh model each time."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from paretoprune.errors import InputError
from paretoprune.models import find_layout, load_model
from paretoprune.pruning import prune_model
from paretoprune.testing import tiny_model
from paretoprune.workflows import apply_recipe

from benchmarks.plan import Pruning, baseline
from benchmarks.pruned import BaselineExtras, baseline_candidate, prune_baseline, prune_fresh
from benchmarks.workbench import Workbench
from tests.benchmarks.recipes import tiny_recipe

TOKENS = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1))


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {linear.name: linear.weight_matrix().detach().clone() for linear in find_layout(model).linears}


def test_wanda_update_keeps_wandas_masks_and_changes_the_survivors() -> None:
    weights = {}
    for update in (False, True):
        model = tiny_model("llama")
        prune_baseline(model, baseline("baselines", "wanda", 0.5, update=update).pruning, TOKENS, batch_size=2)
        weights[update] = _weights(model)
    for name, masked in weights[False].items():
        assert torch.equal(masked != 0, weights[True][name] != 0)
    assert any(not torch.equal(masked, weights[True][name]) for name, masked in weights[False].items())


@pytest.mark.parametrize(("pruner", "update"), [("sparsegpt", False), ("wanda", True), ("wanda", False)])
def test_a_sequential_row_prunes_with_its_own_method(pruner: str, update: bool) -> None:
    pruning = baseline("baselines", pruner, 0.5, update=update, calibration="sequential").pruning
    model = tiny_model("llama")
    prune_baseline(model, pruning, TOKENS, batch_size=2)
    got = _weights(model)

    def pruned_by(method: str, with_update: bool) -> dict[str, torch.Tensor]:
        fresh = tiny_model("llama")
        layout = find_layout(fresh)
        candidate = replace(baseline_candidate(fresh, layout, pruning, TOKENS, batch_size=2), solvers=())
        prune_model(fresh, layout, candidate, TOKENS, method=method, update=with_update, sequential=True,
                    batch_size=2, progress=False)  # fmt: skip
        return _weights(fresh)

    expected = pruned_by("sparsegpt" if pruner == "sparsegpt" else "metric", update)
    assert all(torch.equal(got[name], weight) for name, weight in expected.items())
    rule_alone = pruned_by("metric", False)  # magnitude stands in for SparseGPT's own masks
    assert all(torch.equal(got[name], weight) for name, weight in rule_alone.items()) == (not update and pruner == "wanda")


def test_owl_spreads_the_target_over_the_blocks_from_dense_statistics() -> None:
    model = tiny_model("llama", layers=3)
    layout = find_layout(model)
    pruning = baseline("baselines", "wanda", 0.6, allocation="owl").pruning
    sparsities = baseline_candidate(model, layout, pruning, TOKENS, batch_size=2).sparsities
    mean = sum(sparsities[name] * numel for name, numel in zip(layout.names, layout.numels)) / layout.total_numel
    assert mean == pytest.approx(0.6) and len(set(sparsities.values())) > 1
    structured = baseline("baselines", "ria", 0.0, structure="2:4").pruning
    candidate = baseline_candidate(model, layout, structured, TOKENS, batch_size=2)
    assert candidate.structure == "2:4" and set(candidate.sparsities.values()) == {0.5}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (baseline("baselines", "wanda", 0.6, rows="trim"), {"rows": "trim", "solvers": ()}),
        (baseline("baselines", "wanda", 0.0, structure="2:4", solvers="fw", update=True),
         {"rows": "uniform", "solvers": ("fw", "update")}),
    ],
)  # fmt: skip
def test_a_building_block_row_prunes_as_prune_model_does_with_its_rows_and_solvers(row, expected) -> None:
    pruning = row.pruning
    model = tiny_model("llama")
    prune_baseline(model, pruning, TOKENS, batch_size=2)
    fresh = tiny_model("llama")
    layout = find_layout(fresh)
    candidate = baseline_candidate(fresh, layout, pruning, TOKENS, batch_size=2)
    assert {"rows": candidate.rows, "solvers": tuple(candidate.solvers)} == expected
    prune_model(fresh, layout, candidate, TOKENS, batch_size=2, progress=False)
    got, want = _weights(model), _weights(fresh)
    assert all(torch.equal(got[name], weight) for name, weight in want.items())
    plain = tiny_model("llama")
    prune_model(plain, layout, replace(candidate, rows="uniform", solvers=()), TOKENS, batch_size=2, progress=False)
    assert any(not torch.equal(got[name], weight) for name, weight in _weights(plain).items())


def test_a_global_rule_row_prunes_by_its_score_map(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PARETOPRUNE_CACHE", str(tmp_path))
    model = tiny_model("llama")
    prune_baseline(model, baseline("baselines", "lrp", 0.5).pruning, TOKENS, batch_size=2)
    assert list((tmp_path / "scores").glob("lrp-*.safetensors")), "the score map is cached as prune caches it"
    magnitude = tiny_model("llama")
    prune_baseline(magnitude, baseline("baselines", "magnitude", 0.5).pruning, TOKENS, batch_size=2)
    got, stand_in = _weights(model), _weights(magnitude)
    assert all((weight == 0).float().mean() == pytest.approx(0.5, abs=0.02) for weight in got.values())
    assert any(not torch.equal(got[name] != 0, weight != 0) for name, weight in stand_in.items())


def test_tplo_reads_the_statements_it_is_given(tmp_path) -> None:
    pruning = baseline("baselines", "wanda", 0.5, allocation="tplo").pruning
    model = tiny_model("llama")
    with pytest.raises(InputError, match="truth"):
        baseline_candidate(model, find_layout(model), pruning, TOKENS, batch_size=2, extras=BaselineExtras(truth_dir=tmp_path))


def test_a_searched_row_with_a_solver_applies_the_recipe_then_that_solver(model_dir: Path) -> None:
    workbench = Workbench(str(model_dir), model_dir / "calib.jsonl", TOKENS, {}, batch_size=2)
    recipe = tiny_recipe(load_model(str(model_dir)).model, 0.5)
    plain, solved = (Pruning("search", "sensitivity-unstructured-0.50", "recipe", False, "unstructured", 0.5, "one-shot",
                             solvers=solvers) for solvers in ("none", "regional"))  # fmt: skip
    weights = {row.solvers: _weights(prune_fresh(row, workbench, recipe).loaded.model) for row in (plain, solved)}
    reference = load_model(str(model_dir)).model
    apply_recipe(reference, recipe, TOKENS, solver="regional", progress=False)
    assert all(torch.equal(weights["regional"][name], weight) for name, weight in _weights(reference).items())
    # Regional optimisation moves the surviving weights the recipe's own rule left.
    assert any(not torch.equal(weights["none"][name], weight) for name, weight in weights["regional"].items())
