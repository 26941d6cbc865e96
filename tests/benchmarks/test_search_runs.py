"""A search's run folder: what resuming must match, what it cost, and portable recipes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from paretoprune.errors import InputError
from paretoprune.models import find_layout
from paretoprune.recipe import load_recipe, save_recipe
from paretoprune.testing import tiny_model

from benchmarks.search_runs import Exported, RunLog, check_run, portable_recipe, run_label, search_facts
from benchmarks.searches import Budget, search_named
from benchmarks.studies import REPO_ROOT

from tests.benchmarks.recipes import tiny_recipe


def _settings(run_dir: Path) -> dict:
    spec = search_named("metric-unstructured-0.70")
    return spec.settings("smollm2-135m", Budget(), 0, run_dir, run_dir.parent / "c4.jsonl", stats=(32, 512))


def test_resuming_refuses_a_folder_made_with_other_settings(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stored = _settings(run_dir)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(stored))
    check_run(run_dir, {**stored, "workers": 4})  # workers may change between sessions
    with pytest.raises(InputError, match="seed=0.*choose another --runs"):
        check_run(run_dir, {**stored, "seed": 1})
    with pytest.raises(InputError, match="calibrated on"):
        check_run(run_dir, {**stored, "calib": str(tmp_path / "wikitext.txt")})
    with pytest.raises(InputError, match="already ran 15 generations"):
        check_run(run_dir, {**stored, "generations": 10})
    check_run(run_dir, {**stored, "generations": 20})  # more generations: the search goes on


def test_the_run_log_adds_sessions_and_the_facts_count_failures(tmp_path: Path) -> None:
    log = RunLog.read(tmp_path)
    assert log == RunLog()
    log.wall_seconds, log.sessions = 90.0, 2
    log.write(tmp_path)
    frame = pd.DataFrame({"status": ["ok", "failed", "ok"], "seconds": [30.0, 6.0, 24.0]})
    model = tiny_model("llama")
    names = find_layout(model).names
    recipe = tiny_recipe(model, {name: 0.4 + 0.1 * (index % 3) for index, name in enumerate(names)})
    exported = Exported(None, recipe, tmp_path / "out" / "recipes" / "x.yaml", 7, 1.25)  # type: ignore[arg-type]
    facts = search_facts(tmp_path, frame, exported, tmp_path / "out")
    assert (facts.candidates, facts.failed, facts.search_minutes, facts.fitness_minutes) == (3, 1, 1.5, 1.0)
    assert (facts.recipe, facts.eval_id, facts.kl, facts.rule) == ("recipes/x.yaml", 7, 1.25, "wanda: |W| * act")
    assert (facts.layer_min, facts.layer_max) == pytest.approx((0.4, 0.6))


def test_portable_recipe_rewrites_paths_and_keeps_the_hash(tmp_path: Path) -> None:
    model = tiny_model("llama")
    recipe = tiny_recipe(model, 0.5, calibration_source=str(tmp_path / "data" / "c4.jsonl"),
                         run=str(tmp_path / "runs" / "x"))  # fmt: skip
    portable = portable_recipe(recipe, "c4/c4.jsonl", "runs/x")
    data = portable.to_data()["provenance"]
    assert data["calibration"]["source"] == "c4/c4.jsonl"
    assert data["calibration"]["sha256"] == "ab" * 32
    assert data["search"] == {"run": "runs/x", "evaluation": 3}
    assert portable.to_data()["pruning"] == recipe.to_data()["pruning"]
    assert str(tmp_path) not in json.dumps(portable.to_data())


def test_a_recipe_written_by_the_benchmarks_loads_back(tmp_path: Path) -> None:
    model = tiny_model("llama")
    recipe = tiny_recipe(model, 0.25, rule="ria", calibration_source=str(tmp_path / "c4.jsonl"))
    path = tmp_path / "r.yaml"
    save_recipe(portable_recipe(recipe, "c4/c4.jsonl", "runs/r"), path)
    assert load_recipe(path).layer_sparsities(model) == {name: 0.25 for name in find_layout(model).names}


def test_run_label_is_relative_to_the_repository() -> None:
    assert run_label(REPO_ROOT / "runs" / "bench" / "a") == "runs/bench/a"
    assert run_label(Path("/elsewhere/deep/runs/a")) == "runs/a"
