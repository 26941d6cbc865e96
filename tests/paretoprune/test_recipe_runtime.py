"""A recipe's optional runtime section: test-time (per-prompt) masks at the recipe's ratio."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from paretoprune.candidate import Candidate
from paretoprune.data import evaluation_windows
from paretoprune.errors import InputError
from paretoprune.evaluators.runtime_pruning import TestTimePruner, test_time_perplexity
from paretoprune.metrics.scores import metric_by_name
from paretoprune.models import find_layout, fingerprint, load_model
from paretoprune.recipe import Recipe, load_recipe, recipe_from_data, recipe_yaml, save_recipe
from paretoprune.testing import save_tiny_model, tiny_model
from paretoprune.workflows import AfterPruning, ApplyConfig, CalibrationOptions, apply

ENV = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", TOKENIZERS_PARALLELISM="false")
CALIBRATION = {"source": "builtin", "sha256": "0" * 64, "nsamples": 8, "seqlen": 32, "seed": 0}
TEST_TIME = {"mode": "test-time", "ratio": 0.5, "structured": False}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("runtime") / "model"
    save_tiny_model(folder, tiny_model("llama", seed=0))
    return folder


@pytest.fixture(scope="module")
def static(model_dir: Path) -> Recipe:
    model = load_model(str(model_dir)).model
    layout = find_layout(model)
    candidate = Candidate(metric=metric_by_name("wanda"), sparsities={name: 0.5 for name in layout.names})
    return Recipe.from_candidate(
        candidate, model_name="tiny-llama", fingerprint=fingerprint(model), family=layout.family,
        layer_numels=dict(zip(layout.names, layout.numels, strict=True)), objectives={"kl": 0.1},
        provenance={"calibration": CALIBRATION, "created": "2026-01-01T00:00:00Z", "version": "0.1.0"},
    )  # fmt: skip


def _with_runtime(recipe: Recipe, runtime: dict[str, Any]) -> Recipe:
    data = copy.deepcopy(recipe.to_data())
    data["runtime"] = runtime
    return recipe_from_data(data)


def test_static_recipe_is_written_without_a_runtime_section(static: Recipe, tmp_path: Path) -> None:
    assert static.runtime is None and static.test_time is None
    assert "runtime" not in static.to_data()
    path = save_recipe(static, tmp_path / "static.yaml")
    assert "runtime" not in path.read_text()
    reloaded = load_recipe(path)
    assert reloaded == static
    assert recipe_yaml(reloaded) == path.read_text()  # byte for byte as before


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_test_time_recipe_round_trips(static: Recipe, tmp_path: Path, suffix: str) -> None:
    recipe = _with_runtime(static, {**TEST_TIME, "structured": True})
    reloaded = load_recipe(save_recipe(recipe, tmp_path / f"tt{suffix}"))
    assert reloaded == recipe
    assert reloaded.test_time is not None
    assert (reloaded.test_time.ratio, reloaded.test_time.structured) == (0.5, True)


@pytest.mark.parametrize(
    ("runtime", "expected"),
    [
        ({"mode": "dynamic", "ratio": 0.5}, "runtime.mode: unknown mode 'dynamic'; use static or test-time"),
        ({"mode": "test-time", "ratio": 0.0}, "runtime.ratio: ratio 0.0 is outside (0, 1]"),
        ({"mode": "test-time", "ratio": 1.5}, "runtime.ratio: ratio 1.5 is outside (0, 1]"),
        ({"mode": "test-time"}, "mode test-time needs a ratio"),
        ({"mode": "test-time", "ratio": 0.5, "keep": 1}, "runtime.keep is not part of"),
    ],
)
def test_bad_runtime_values_get_one_line_errors(static: Recipe, runtime: dict[str, Any], expected: str) -> None:
    with pytest.raises(InputError) as caught:
        _with_runtime(static, runtime)
    message = str(caught.value)
    assert "\n" not in message
    assert expected in message


def test_apply_save_is_refused_through_the_cli(static: Recipe, model_dir: Path, tmp_path: Path) -> None:
    path = save_recipe(_with_runtime(static, TEST_TIME), tmp_path / "tt.yaml")
    saved = tmp_path / "pruned"
    done = subprocess.run(
        [sys.executable, "-m", "paretoprune", "apply", str(path), "--model", str(model_dir), "--save", str(saved)],
        env=ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "masks change with every prompt" in lines[0] and "--save" in lines[0]
    assert not saved.exists()


@pytest.mark.parametrize("structured", [False, True])
def test_apply_eval_matches_the_test_time_pruner(static: Recipe, model_dir: Path, tmp_path: Path,
                                                 structured: bool) -> None:  # fmt: skip
    recipe = _with_runtime(static, {**TEST_TIME, "ratio": 0.4, "structured": structured})
    path = save_recipe(recipe, tmp_path / "tt.yaml")
    config = ApplyConfig(recipe=path, model=str(model_dir), calibration=CalibrationOptions(seqlen=32),
                         after=AfterPruning(eval="builtin", max_windows=2), progress=False)  # fmt: skip
    result = apply(config)
    loaded = load_model(str(model_dir))
    windows = evaluation_windows(loaded.tokenizer, "builtin", 32, 2)
    direct = test_time_perplexity(TestTimePruner(loaded.model, find_layout(loaded.model), 0.4, structured), windows)
    assert result.perplexity == pytest.approx(direct.perplexity, rel=1e-5)
    assert result.tokens == direct.tokens
    assert result.sparsity == pytest.approx(0.6)
    from_recipe = TestTimePruner.from_recipe(loaded.model, find_layout(loaded.model), recipe)
    assert (from_recipe.ratio, from_recipe.structured) == (0.4, structured)


@pytest.mark.parametrize(
    "options, named",
    [
        (dict(pruner="sparsegpt"), "so --pruner cannot apply; drop it"),
        (dict(update=True, rows="trim"), "so --update, --rows cannot apply; drop them"),
        (dict(solver="fw", calibration=CalibrationOptions(seqlen=32, sequential=True)),
         "so --solver, --sequential cannot apply; drop them"),
    ],
)  # fmt: skip
def test_a_test_time_recipe_refuses_the_options_of_a_static_pruning(static: Recipe, model_dir: Path, tmp_path: Path,
                                                                    options: dict, named: str) -> None:  # fmt: skip
    path = save_recipe(_with_runtime(static, {**TEST_TIME, "ratio": 0.4}), tmp_path / "tt.yaml")
    config = ApplyConfig(**{"recipe": path, "model": str(model_dir), "calibration": CalibrationOptions(seqlen=32),
                            "after": AfterPruning(eval="builtin", max_windows=2), "progress": False, **options})
    with pytest.raises(InputError, match="recipe runtime.mode is test-time") as refused:
        apply(config)
    assert str(refused.value).endswith(named)


def test_pruner_refuses_a_static_recipe(static: Recipe) -> None:
    model = tiny_model("llama", seed=0)
    with pytest.raises(InputError, match="static masks"):
        TestTimePruner.from_recipe(model, find_layout(model), static)
