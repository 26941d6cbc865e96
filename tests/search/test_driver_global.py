"""A layerwise search whose base metric is a global rule (LRP), end to end on a real local Ray
cluster: its candidates, finalists and recipes name the rule, and `apply` reproduces the masks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from paretoprune.data import calibration_windows
from paretoprune.global_scores import cached_score_map
from paretoprune.models import find_layout, load_model
from paretoprune.pruning import prune_model
from paretoprune.recipe import load_recipe
from paretoprune.search.archive import candidate_of
from paretoprune.search.run import Run
from paretoprune.testing import save_tiny_model, tiny_model

pytestmark = pytest.mark.ray

CALIB = ["--calib", "builtin", "--nsamples", "4", "--seqlen", "64"]


def _cli(*args: str) -> dict:
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, "-m", "paretoprune", *args, "--json"], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_lrp_search_exports_recipes_that_apply_to_the_masks_it_scored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARETOPRUNE_CACHE", str(tmp_path / "cache"))  # the subprocesses inherit it
    model_dir = save_tiny_model(tmp_path / "model", tiny_model("llama", layers=3))
    run_dir = tmp_path / "run"
    _cli("search", "--model", str(model_dir), *CALIB, "--mode", "layerwise", "--sparsity", "0.6",
         "--base-metric", "lrp", "--pop", "8", "--generations", "2", "--workers", "1", "--seed", "0",
         "--objectives", "kl", "--finalists", "2", "--finalist-tokens", "256", "--out", str(run_dir), "--quiet")
    frame = Run.open(run_dir).evaluations()
    assert (frame["status"] == "ok").all() and frame["generation"].max() == 1
    assert {candidate_of(row).global_rule for _, row in frame.iterrows()} == {"lrp"}  # finalists too
    assert (frame["fidelity"] != "base").any()
    assert len(list((tmp_path / "cache" / "scores").glob("lrp-*.safetensors"))) == 1  # one map, shared

    recipe_path = tmp_path / "best.yaml"
    _cli("export", str(run_dir), "--format", "yaml", "--pick", "best:kl", "--out", str(recipe_path))
    recipe = load_recipe(recipe_path)
    assert recipe.pruning.global_rule == "lrp"
    _cli("apply", str(recipe_path), "--model", str(model_dir), *CALIB, "--save", str(tmp_path / "pruned"), "--quiet")

    loaded = load_model(str(model_dir))
    layout = find_layout(loaded.model)
    tokens = calibration_windows(loaded.tokenizer, "builtin", 4, 64, 0)
    lrp = cached_score_map("lrp", loaded.model, layout, tokens, progress=False)
    prune_model(loaded.model, layout, recipe.to_candidate(), tokens, progress=False, scores=lrp)
    saved = find_layout(load_model(str(tmp_path / "pruned")).model)
    for mine, theirs in zip(saved.linears, layout.linears):
        assert torch.equal(mine.weight_matrix(), theirs.weight_matrix()), mine.name
