"""A search with the row gene, on a tiny real model and a real local Ray cluster, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from paretoprune.recipe import load_recipe, save_recipe
from paretoprune.search.archive import Archive, candidate_of
from paretoprune.search.export import recipe_of_row
from paretoprune.search.run import RECIPES_FOLDER, Run
from paretoprune.search.space import SearchSpace
from paretoprune.models import find_layout
from paretoprune.testing import save_tiny_model, tiny_model
from tests.search.test_driver import _run, _search_args

pytestmark = pytest.mark.ray


def test_a_search_with_the_row_gene_scores_trim_candidates_and_exports_them(tmp_path: Path) -> None:
    model = tiny_model("llama", layers=3)
    save_tiny_model(tmp_path / "model", model)
    out = tmp_path / "run"
    args = _search_args(tmp_path / "model", out, "--mode", "layerwise", "--sparsity", "0.5", "--generations", "2",
                        "--search-rows", "--json")  # fmt: skip
    summary = _run(args)
    run = Run.open(out)
    assert run.config.search_rows and summary["evaluations"] == 16
    frame = Archive.load(out).frame()
    assert (frame["status"] == "ok").all()
    rows = frame["candidate"].map(lambda text: json.loads(text).get("rows", "uniform"))
    assert set(rows) == {"uniform", "trim"}
    # The baselines uniform Wanda and Wanda + TRIM: the same layers, another kl.
    kl = {(candidate.rows, tuple(candidate.sparsities.values())): value
          for candidate, value in zip(frame.apply(candidate_of, axis=1), frame["kl"])}  # fmt: skip
    uniform = tuple([0.5] * len(find_layout(model).linears))
    assert kl[("trim", uniform)] != kl[("uniform", uniform)]

    # A trim row's recipe keeps its rows, and the search space expresses it again.
    made = load_recipe(next((out / RECIPES_FOLDER).glob("*.yaml")))
    row = frame[rows == "trim"].iloc[0]
    recipe = recipe_of_row(row, made.model, made.provenance, run.objectives, run=str(out))
    back = load_recipe(save_recipe(recipe, tmp_path / "trim.yaml"))
    assert back.pruning.rows == "trim" and back.to_candidate().rows == "trim"
    space = SearchSpace(find_layout(model), run.config.space_config())
    assert space.decode(space.encode(back.to_candidate())).rows == "trim"
    assert np.isclose(back.objectives["kl"], row["kl"])
