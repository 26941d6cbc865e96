"""The run folder read back through Run, from its path alone; its file names live in run.py only."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd
import pytest
import yaml

from paretoprune.errors import InputError
from paretoprune.search import run as run_module
from paretoprune.search.archive import Archive
from paretoprune.search.config import SearchConfig
from paretoprune.search.run import (
    CONFIG_FILE,
    FRONT_TABLE,
    RECIPES_FOLDER,
    Run,
    front_columns,
    recipe_file_name,
    stage_folder,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
# (kl, sparsity) of each evaluation: 1 is dominated by 0 (same kl, less sparse), 3 failed.
ROWS = [(0.2, 0.5), (0.2, 0.4), (0.6, 0.7), (None, None), (0.1, 0.3)]


def _run_folder(folder: Path, objectives: tuple[str, ...] | None = ("kl", "sparsity"), **settings) -> Path:
    """A run folder as a search leaves it, without a model: settings and an archive."""
    config = SearchConfig(model="tiny", out=str(folder), sparsity_range=(0.3, 0.7), objectives=objectives,
                          **settings)  # fmt: skip
    Run.create(config)
    archive = Archive(folder, config.objective_names)
    for index, (kl, sparsity) in enumerate(ROWS):
        if kl is None:
            archive.append(generation=0, genome=[float(index)], status="failed", error="RuntimeError: boom")
        else:
            values = {name: value for name, value in (("kl", kl), ("sparsity", sparsity)) if name in archive.objectives}
            archive.append(generation=index // 3, genome=[float(index)], candidate={"index": index}, objectives=values)
    return folder


def test_open_gives_the_settings_objectives_and_front(tmp_path: Path) -> None:
    run = Run.open(_run_folder(tmp_path / "run"))
    assert run.config.sparsity_range == (0.3, 0.7) and run.config.model == "tiny"
    assert run.objectives.names == ("kl", "sparsity")
    assert run.objectives.directions == ("minimize", "maximize")
    assert run.final_stage is run and run.stages == []
    assert len(run.evaluations()) == 5
    front = run.front()
    assert front["eval_id"].tolist() == [4, 0, 2]  # sorted by kl; sparsity maximised
    assert run.recipes() == []  # the search has not finished: no recipes yet


def test_objectives_default_as_the_search_chose_them(tmp_path: Path) -> None:
    # A hand-written config without objectives: kl, plus sparsity since the target is searched.
    folder = tmp_path / "run"
    folder.mkdir()
    settings = {"model": "tiny", "out": str(folder), "sparsity_range": [0.3, 0.7]}
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(settings))
    assert Run.open(folder).objectives.names == ("kl", "sparsity")
    (folder / CONFIG_FILE).write_text(yaml.safe_dump({"model": "tiny", "out": str(folder), "sparsity": 0.5}))
    assert Run.open(folder).objectives.names == ("kl",)


def test_recipes_are_found_through_the_front_table(tmp_path: Path) -> None:
    run = Run.open(_run_folder(tmp_path / "run"))
    front = run.front()
    names = [recipe_file_name(i, {"kl": row.kl, "sparsity": row.sparsity}) for i, row in enumerate(front.itertuples())]
    table = front.assign(rule="wanda", recipe=names)[front_columns(list(run.objectives))]
    run.save_front_table(table)
    assert names[0] == "000-kl0.1-sparsity0.3.yaml"
    assert run.recipes() == [tmp_path / "run" / RECIPES_FOLDER / name for name in names]
    assert run.recipe_path(0) == tmp_path / "run" / RECIPES_FOLDER / names[1]
    with pytest.raises(InputError, match="no recipe for evaluation 1 .*--resume"):
        run.recipe_path(1)  # dominated: not on the front


def test_an_interrupted_run_has_a_front_table_but_no_recipes(tmp_path: Path) -> None:
    run = Run.open(_run_folder(tmp_path / "run"))
    run.save_front_table(run.front().assign(rule="wanda", recipe=None)[front_columns(list(run.objectives))])
    assert run.recipes() == []
    with pytest.raises(InputError, match="has not finished"):
        run.recipe_path(4)


def test_a_front_table_of_an_older_release_finds_recipes_by_position(tmp_path: Path) -> None:
    run = Run.open(_run_folder(tmp_path / "run"))
    run.front().to_csv(run.front_table_path, index=False)  # no recipe column, as older releases wrote
    run.recipes_folder.mkdir()
    (run.recipes_folder / "001-kl0.2-sparsity0.5.yaml").write_text("")
    assert run.recipe_path(0) == run.recipes_folder / "001-kl0.2-sparsity0.5.yaml"
    assert run.recipes() == [run.recipes_folder / "001-kl0.2-sparsity0.5.yaml"]


def test_a_staged_run_reads_its_last_stage(tmp_path: Path) -> None:
    top = tmp_path / "run"
    Run.create(SearchConfig(model="tiny", out=str(top), sparsity=0.5, objectives=("kl",),
                            stages=("metric", "layerwise")))  # fmt: skip
    with pytest.raises(InputError, match="last stage has not started yet"):
        Run.open(top).front()
    _run_folder(top / stage_folder(0, "metric"), objectives=("kl",))
    assert [stage.folder.name for stage in Run.open(top).stages] == ["stage1-metric"]
    _run_folder(top / stage_folder(1, "layerwise"), objectives=("kl",))
    run = Run.open(top)
    assert run.final_stage.folder == top / "stage2-layerwise"
    assert run.front()["eval_id"].tolist() == [4]


def test_create_refuses_a_folder_that_holds_a_search(tmp_path: Path) -> None:
    _run_folder(tmp_path / "run")
    with pytest.raises(InputError, match="already holds a search: resume it with --resume"):
        Run.create(SearchConfig(model="tiny", out=str(tmp_path / "run"), sparsity=0.5))
    with pytest.raises(InputError, match="holds no search"):
        Run.open(tmp_path / "elsewhere")


def test_front_columns_name_achieved_sparsity_unless_sparsity_is_an_objective() -> None:
    assert front_columns(["kl"]) == ["eval_id", "generation", "kl", "fidelity", "achieved_sparsity", "rule", "recipe"]
    assert front_columns(["kl", "sparsity"]) == [
        "eval_id", "generation", "kl", "sparsity", "fidelity", "rule", "recipe"]  # fmt: skip


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """Every string literal of a module's code, but docstrings (prose) and dict keys (a JSON
    summary's "recipes" names a list, not the folder)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }  # fmt: skip
    keys = {id(key) for node in ast.walk(tree) if isinstance(node, ast.Dict) for key in node.keys}
    skipped = docstrings | keys
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped]  # fmt: skip


def test_no_run_folder_file_name_is_written_outside_run_py() -> None:
    names = [run_module.CONFIG_FILE, run_module.EVALUATIONS_FILE, run_module.PARTS_FOLDER, run_module.CHECKPOINT_FILE,
             run_module.LEGACY_CHECKPOINT_FILE, run_module.FRONT_TABLE, run_module.FRONT_PLOT,
             run_module.BASELINES_FILE]  # fmt: skip
    sources = [path for folder in ("paretoprune", "search", "evaluators", "metrics")
               for path in sorted((REPO_ROOT / folder).rglob("*.py"))]  # fmt: skip
    found = [
        f"{path.relative_to(REPO_ROOT)}:{line}: {text!r}"
        for path in sources if path != Path(run_module.__file__)
        for line, text in _string_constants(path)
        if any(name in text for name in names) or text in (run_module.RECIPES_FOLDER, f"{run_module.RECIPES_FOLDER}/")
    ]  # fmt: skip
    assert found == []


def test_the_front_table_reads_back_as_written(tmp_path: Path) -> None:
    run = Run.open(_run_folder(tmp_path / "run"))
    table = run.front().assign(rule="wanda", recipe=None)[front_columns(list(run.objectives))]
    run.save_front_table(table)
    again = pd.read_csv(tmp_path / "run" / FRONT_TABLE)
    assert list(again.columns) == ["eval_id", "generation", "kl", "sparsity", "fidelity", "rule", "recipe"]
    assert again["eval_id"].tolist() == [4, 0, 2]
