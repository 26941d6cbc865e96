"""Recipes end to end: search -> export -> apply (own metric, Wanda, SparseGPT) -> save -> reload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from paretoprune.models import find_layout, load_model
from paretoprune.recipe import load_recipe
from paretoprune.testing import save_tiny_model, tiny_model

ENV = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", TOKENIZERS_PARALLELISM="false")
CALIB = ["--calib", "builtin", "--nsamples", "4", "--seqlen", "64"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "paretoprune", *args], env=ENV, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def _json(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("apply")
    model_dir = root / "model"
    save_tiny_model(model_dir, tiny_model("llama", layers=3))
    run = root / "run"
    _json(_cli("search", "--model", str(model_dir), *CALIB, "--mode", "layerwise", "--sparsity", "0.6",
               "--pop", "8", "--generations", "1", "--workers", "1", "--out", str(run), "--quiet", "--json"))
    return model_dir, run


@pytest.mark.ray
@pytest.mark.parametrize("pruner", ["recipe", "wanda", "sparsegpt"])
def test_round_trip_keeps_sparsities_and_perplexity(searched, tmp_path: Path, pruner: str) -> None:
    model_dir, run = searched
    recipe_path = tmp_path / "best.yaml"
    _json(_cli("export", str(run), "--format", "yaml", "--pick", "best:kl", "--out", str(recipe_path), "--json"))
    recipe = load_recipe(recipe_path)
    saved = tmp_path / "pruned"
    applied = _json(_cli("apply", str(recipe_path), "--model", str(model_dir), "--pruner", pruner, *CALIB,
                         "--save", str(saved), "--eval", "builtin", "--max-windows", "4", "--device", "cpu",
                         "--json", "--quiet"))  # fmt: skip
    assert applied["sparsity"] == pytest.approx(recipe.pruning.sparsity, abs=0.01)
    reloaded = load_model(str(saved))
    layout = find_layout(reloaded.model)
    for linear in layout.linears:  # the searched per-layer sparsities, read back from the weights
        zeros = float((linear.weight_matrix() == 0).float().mean())
        assert zeros == pytest.approx(recipe.pruning.layers[linear.name], abs=1.5 / linear.in_features)
    assert load_recipe(saved / "recipe.yaml") == recipe
    again = _json(_cli("eval", "--model", str(saved), "--data", "builtin", "--seqlen", "64",
                       "--max-windows", "4", "--json", "--quiet"))
    assert again["perplexity"] == pytest.approx(applied["perplexity"], rel=1e-5)


@pytest.mark.ray
def test_llmcompressor_and_ratio_exports(searched, tmp_path: Path) -> None:
    _, run = searched
    ratios, knee = tmp_path / "ratios.json", tmp_path / "knee.yaml"
    _json(_cli("export", str(run), "--format", "ratios", "--pick", "knee", "--out", str(ratios), "--json"))
    _json(_cli("export", str(run), "--format", "yaml", "--pick", "knee", "--out", str(knee), "--json"))
    exported, recipe = json.loads(ratios.read_text()), load_recipe(knee)
    assert exported["layers"] == recipe.pruning.layers  # every layer, in the model's module order
    assert list(exported["layers"]) == list(recipe.pruning.layers)
    assert exported["sparsity"] == recipe.pruning.sparsity and exported["structure"] == recipe.pruning.structure
    target = tmp_path / "llmc.yaml"
    _json(_cli("export", str(run), "--format", "llmcompressor", "--pick", "index:0", "--out", str(target), "--json"))
    stage = yaml.safe_load(target.read_text())["sparsity_stage"]["sparsity_modifiers"]
    modifier = next(iter(stage.values()))
    assert len(modifier["sparsity"]) == len(modifier["targets"]) == 21


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda r: r.pop("pruning"), "pruning"),
        (lambda r: r.update(extra=1), "extra"),
        (lambda r: r["pruning"]["layers"].update({"model.layers.0.mlp.up_proj": 1.5}), "1.5"),
        (lambda r: r["model"].update(fingerprint="0000000000000000"), "--force"),
    ],
)
@pytest.mark.ray
def test_malformed_or_foreign_recipes_exit_2_in_one_line(searched, tmp_path: Path, edit, fragment) -> None:
    model_dir, run = searched
    data = yaml.safe_load(next((run / "recipes").glob("000-*.yaml")).read_text())
    edit(data)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    done = _cli("apply", str(bad), "--model", str(model_dir), *CALIB, "--quiet")
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], done.stderr
    assert "Traceback" not in done.stderr
