"""The recipe format: schema, load/save, model checks and the exporters (ratios, llm-compressor)."""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.exporters import (
    export_recipe,
    llmcompressor_mask_structure,
    to_llmcompressor,
    to_ratios_json,
)
from paretoprune.metrics.scores import metric_by_name
from paretoprune.models import find_layout, fingerprint
from paretoprune.recipe import (
    FORMAT,
    Recipe,
    load_recipe,
    recipe_from_data,
    save_recipe,
)
from paretoprune.testing import tiny_model

REPO_ROOT = Path(__file__).resolve().parents[2]
CALIBRATION = {"source": "builtin", "sha256": "0" * 64, "nsamples": 8, "seqlen": 32, "seed": 0}
Q_PROJ = "model.layers.0.self_attn.q_proj"


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_model("llama", seed=0)


@pytest.fixture(scope="module")
def layout(model: Any) -> Any:
    return find_layout(model)


def _shapes(layout: Any) -> dict[str, tuple[int, int]]:
    return {linear.name: (linear.out_features, linear.in_features) for linear in layout.linears}


def _candidate(layout: Any, metric: str = "wanda", structure: str = "unstructured") -> Candidate:
    # Listed backwards and varied, so order and weighting are both tested.
    sparsities = {name: 0.3 + 0.03 * index for index, name in enumerate(layout.names)}
    reversed_order = dict(reversed(list(sparsities.items())))
    return Candidate(metric=metric_by_name(metric), sparsities=reversed_order, structure=structure)


def _recipe(model: Any, layout: Any, candidate: Candidate | None = None) -> Recipe:
    return Recipe.from_candidate(
        candidate or _candidate(layout),
        model_name="tiny-llama",
        fingerprint=fingerprint(model),
        family=layout.family,
        layer_numels=dict(zip(layout.names, layout.numels, strict=True)),
        objectives={"kl": 0.25, "sparsity": 0.4},
        provenance={"calibration": CALIBRATION, "search": {"run": "runs/demo", "evaluation": 17}},
        layer_shapes=_shapes(layout),
    )


@pytest.fixture(scope="module")
def recipe(model: Any, layout: Any) -> Recipe:
    return _recipe(model, layout)


def _raises_one_line(data: dict[str, Any]) -> str:
    with pytest.raises(InputError) as caught:
        recipe_from_data(data, source="r.yaml")
    message = str(caught.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------------------------
# Building and round trips


def test_from_candidate_keeps_model_order_and_weights_the_global_sparsity(
    recipe: Recipe, layout: Any
) -> None:
    assert list(recipe.pruning.layers) == layout.names
    weighted = (
        sum(recipe.pruning.layers[n] * k for n, k in zip(layout.names, layout.numels, strict=True))
        / layout.total_numel
    )
    plain = sum(recipe.pruning.layers.values()) / len(layout.names)
    assert recipe.pruning.sparsity == pytest.approx(weighted, abs=1e-12)
    assert abs(weighted - plain) > 1e-4  # the layers differ in size: weighting matters here
    assert recipe.format == FORMAT
    assert recipe.model.shapes[Q_PROJ] == (64, 64)


def test_shapes_alone_give_the_same_weights(recipe: Recipe, model: Any, layout: Any) -> None:
    from_shapes = Recipe.from_candidate(
        _candidate(layout),
        model_name="tiny-llama",
        fingerprint=fingerprint(model),
        family=layout.family,
        layer_numels=None,
        objectives={},
        provenance={"calibration": CALIBRATION},
        layer_shapes=_shapes(layout),
    )
    assert from_shapes.pruning == recipe.pruning
    assert from_shapes.provenance.search is None


def test_to_candidate_gives_back_the_candidate(recipe: Recipe, layout: Any) -> None:
    original = _candidate(layout)
    restored = recipe.to_candidate()
    assert restored.metric == original.metric
    assert restored.metric.name == "wanda"
    assert dict(restored.sparsities) == pytest.approx(dict(original.sparsities))
    assert (restored.structure, restored.group) == (original.structure, original.group)


def test_from_candidate_rejects_a_layer_the_model_lacks(model: Any, layout: Any) -> None:
    candidate = Candidate(metric=metric_by_name("magnitude"), sparsities={"model.nowhere": 0.5})
    with pytest.raises(InputError, match="model.nowhere"):
        _recipe(model, layout, candidate)


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_round_trip(recipe: Recipe, tmp_path: Path, suffix: str) -> None:
    path = save_recipe(recipe, tmp_path / "sub" / f"recipe{suffix}")
    assert load_recipe(path) == recipe
    text = path.read_text()
    if suffix == ".json":
        assert json.loads(text)["format"] == FORMAT
    else:
        assert text.startswith("# paretoprune recipe")
        assert yaml.safe_load(text)["pruning"]["layers"][Q_PROJ] == recipe.pruning.layers[Q_PROJ]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_load_sniffs_the_content_whatever_the_extension(recipe: Recipe, tmp_path: Path) -> None:
    as_json = tmp_path / "recipe.yaml"
    as_json.write_text(json.dumps(recipe.to_data()))
    as_yaml = tmp_path / "recipe.txt"
    as_yaml.write_text(yaml.safe_dump(recipe.to_data()))
    assert load_recipe(as_json) == recipe == load_recipe(as_yaml)


def test_save_overwrites_and_refuses_unknown_extensions(recipe: Recipe, tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text("old")
    save_recipe(recipe, path)
    assert load_recipe(path) == recipe
    with pytest.raises(InputError, match=r"\.yaml, \.yml or \.json"):
        save_recipe(recipe, tmp_path / "recipe.toml")


# --------------------------------------------------------------------------------------------
# Malformed recipes: one line that names the field


def _mutated(recipe: Recipe, change: Any) -> dict[str, Any]:
    data = copy.deepcopy(recipe.to_data())
    change(data)
    return data


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["pruning"].pop("metric"), "pruning.metric is missing"),
        (
            lambda d: d["provenance"]["calibration"].pop("sha256"),
            "provenance.calibration.sha256 is missing",
        ),
        (lambda d: d["pruning"].update(sparsty=0.5), "pruning.sparsty is not part of"),
        (lambda d: d.update(notes="x"), "field notes is not part of"),
        (lambda d: d["pruning"].update(sparsity="half"), "pruning.sparsity is invalid"),
        (
            lambda d: d["pruning"]["layers"].update({Q_PROJ: "lots"}),
            f"pruning.layers[{Q_PROJ}] is invalid",
        ),
        (
            lambda d: d["pruning"]["layers"].update({Q_PROJ: 1.0}),
            f"layer {Q_PROJ} has sparsity 1.0, outside [0, 1)",
        ),
        (
            lambda d: d["pruning"]["layers"].update({Q_PROJ: -0.1}),
            f"layer {Q_PROJ} has sparsity -0.1",
        ),
        (lambda d: d["pruning"].update(sparsity=1.5), "global sparsity 1.5 is outside [0, 1)"),
        (lambda d: d["pruning"].update(layers={}), "no layers listed"),
        (lambda d: d["pruning"].update(structure="4:2"), "structure '4:2'"),
        (lambda d: d["pruning"].update(structure="blocks"), "is not understood"),
        (lambda d: d["pruning"].update(group="column"), "pruning.group is invalid"),
        (lambda d: d.update(format="paretoprune.recipe/v0"), "is not supported"),
        (lambda d: d["pruning"].update(solvers=["update", "fw"]), "put the solvers that change the mask (fw) before"),
        (lambda d: d["pruning"].update(solvers=["obs"]), "unknown solver 'obs'"),
        (lambda d: d["pruning"].update(rows="zigzag"), "unknown row allocation 'zigzag'"),
        (lambda d: d.update(format="paretoprune.recipe/v1") or d["pruning"].pop("rows"),
         "pruning.solvers needs format paretoprune.recipe/v2"),
        (lambda d: d.pop("format"), "format is missing"),
    ],
)
def test_malformed_recipes_get_one_line_errors(recipe: Recipe, change: Any, expected: str) -> None:
    message = _raises_one_line(_mutated(recipe, change))
    assert expected in message
    assert message.startswith("r.yaml")


def test_unreadable_and_unparsable_files(tmp_path: Path) -> None:
    broken_yaml = tmp_path / "broken.yaml"
    broken_yaml.write_text("pruning: [1, 2\n")
    broken_json = tmp_path / "broken.json"
    broken_json.write_text("{not json")
    not_a_mapping = tmp_path / "list.yaml"
    not_a_mapping.write_text("- 1\n- 2\n")
    cases = {
        tmp_path / "missing.yaml": "does not exist",
        tmp_path: "cannot read recipe",
        broken_yaml: "is not valid YAML (line",
        broken_json: "is not valid JSON (line 1",
        not_a_mapping: "does not hold a mapping",
    }
    for path, expected in cases.items():
        with pytest.raises(InputError) as caught:
            load_recipe(path)
        assert expected in str(caught.value)
        assert "\n" not in str(caught.value)


def test_a_metric_that_describes_no_scoring_rule_fails_on_use(recipe: Recipe) -> None:
    data = _mutated(recipe, lambda d: d["pruning"]["metric"]["params"].update(colour="blue"))
    loaded = recipe_from_data(data)
    with pytest.raises(InputError, match="colour"):
        loaded.to_candidate()


# --------------------------------------------------------------------------------------------
# Applying to a model


def test_the_recipes_own_model_gets_every_layer(recipe: Recipe, model: Any, layout: Any) -> None:
    match = recipe.check_model(fingerprint(model), _shapes(layout), force=False)
    assert match.sparsities == recipe.pruning.layers
    assert match.skipped == []
    assert recipe.layer_sparsities(model) == recipe.pruning.layers


def test_same_fingerprint_but_missing_layer_is_an_error(recipe: Recipe, layout: Any) -> None:
    shapes = _shapes(layout)
    del shapes[Q_PROJ]
    with pytest.raises(InputError, match=f"recipe layer {Q_PROJ} is not a prunable linear"):
        recipe.check_model(recipe.model.fingerprint, shapes)


def test_another_model_is_refused_without_force(recipe: Recipe) -> None:
    other = tiny_model("llama", seed=0, intermediate_size=96)
    with pytest.raises(InputError) as caught:
        recipe.layer_sparsities(other)
    message = str(caught.value)
    assert f"recipe made for tiny-llama (fingerprint {recipe.model.fingerprint})" in message
    assert fingerprint(other) in message and "--force" in message


def test_force_applies_by_name_where_shapes_agree(
    recipe: Recipe, caplog: pytest.LogCaptureFixture
) -> None:
    other = tiny_model("llama", seed=0, intermediate_size=96)  # every MLP matrix changes shape
    with caplog.at_level(logging.WARNING, logger="paretoprune.recipe"):
        applied = recipe.layer_sparsities(other, force=True)
    mlp = {name for name in recipe.pruning.layers if ".mlp." in name}
    assert set(applied) == set(recipe.pruning.layers) - mlp
    assert all(applied[name] == recipe.pruning.layers[name] for name in applied)
    assert "6 of 14 layers skipped" in caplog.text and "model.layers.0.mlp.up_proj" in caplog.text


def test_force_without_stored_shapes_matches_names_only(recipe: Recipe) -> None:
    bare = recipe_from_data(_mutated(recipe, lambda d: d["model"].update(shapes={})))
    shapes = {name: (1, 1) for name in list(recipe.pruning.layers)[:3]}
    match = bare.check_model("another", shapes, force=True)
    assert list(match.sparsities) == list(shapes)
    assert len(match.skipped) == len(recipe.pruning.layers) - 3


def test_force_with_nothing_in_common_is_an_error(recipe: Recipe) -> None:
    with pytest.raises(InputError, match="no layer of the recipe"):
        recipe.check_model("another", {"transformer.h.0.attn.c_attn": (192, 64)}, force=True)


# --------------------------------------------------------------------------------------------
# Exports


def test_ratios_export(recipe: Recipe, tmp_path: Path) -> None:
    ratios = to_ratios_json(recipe)
    assert ratios["layers"] == recipe.pruning.layers
    assert ratios["sparsity"] == recipe.pruning.sparsity
    assert ratios["structure"] == "unstructured"
    written = export_recipe(recipe, tmp_path / "ratios.json", "ratios")
    assert json.loads(written.read_text()) == json.loads(json.dumps(ratios))


def test_export_formats_and_suffixes(recipe: Recipe, tmp_path: Path) -> None:
    assert export_recipe(recipe, tmp_path / "best", "yaml").name == "best.yaml"
    assert load_recipe(export_recipe(recipe, tmp_path / "best", "json")) == recipe
    with pytest.raises(InputError, match="does not end in .json"):
        export_recipe(recipe, tmp_path / "best.yaml", "json")
    with pytest.raises(InputError, match="export format 'onnx' is unknown"):
        export_recipe(recipe, tmp_path / "best", "onnx")


def _modifier(text: str) -> tuple[str, dict[str, Any]]:
    stage = yaml.safe_load(text)["sparsity_stage"]["sparsity_modifiers"]
    assert len(stage) == 1
    return next(iter(stage.items()))


def _matched_in_module_order(model: Any, targets: list[str]) -> list[str]:
    """What llm-compressor's matcher yields for exact-name targets: named_modules() order."""
    wanted = set(targets)
    return [name for name, _ in model.named_modules() if name in wanted]


def test_llmcompressor_export_aligns_with_module_order(recipe: Recipe, model: Any) -> None:
    text = to_llmcompressor(recipe)
    name, modifier = _modifier(text)
    assert name == "WandaPruningModifier"  # a Wanda recipe goes to Wanda by default
    assert modifier["mask_structure"] == "0:0"
    assert modifier["targets"] == _matched_in_module_order(model, modifier["targets"])
    assert len(modifier["sparsity"]) == len(modifier["targets"]) == len(recipe.pruning.layers)
    assert "lm_head" not in modifier["targets"]
    assert modifier["sparsity"] == [recipe.pruning.layers[target] for target in modifier["targets"]]
    assert load_recipe_text(text) == recipe  # the metadata key carries the whole recipe


def load_recipe_text(text: str) -> Recipe:
    return recipe_from_data(yaml.safe_load(text), source="export")


def test_llmcompressor_export_follows_the_given_module_order(recipe: Recipe, layout: Any) -> None:
    shuffled = recipe_from_data(
        _mutated(
            recipe,
            lambda d: d["pruning"].update(layers=dict(sorted(d["pruning"]["layers"].items()))),
        )
    )
    _, unordered = _modifier(to_llmcompressor(shuffled))
    _, ordered = _modifier(to_llmcompressor(shuffled, module_order=layout.names))
    assert unordered["targets"] != layout.names  # the recipe's own (alphabetical) order is trusted
    assert ordered["targets"] == layout.names
    assert ordered["sparsity"] == [recipe.pruning.layers[name] for name in layout.names]
    with pytest.raises(InputError, match="not among the model's modules"):
        to_llmcompressor(recipe, module_order=layout.names[1:])


def test_llmcompressor_export_leaves_dense_layers_out(recipe: Recipe) -> None:
    dense = recipe_from_data(
        _mutated(recipe, lambda d: d["pruning"]["layers"].update({Q_PROJ: 0.0}))
    )
    text = to_llmcompressor(dense, pruner="sparsegpt")
    _, modifier = _modifier(text)
    assert Q_PROJ not in modifier["targets"]
    assert len(modifier["sparsity"]) == len(modifier["targets"]) == len(recipe.pruning.layers) - 1
    assert "1 layers the recipe leaves dense" in text
    nothing = recipe_from_data(
        _mutated(
            recipe,
            lambda d: d["pruning"].update(
                layers={n: 0.0 for n in d["pruning"]["layers"]}, sparsity=0.0
            ),
        )
    )
    with pytest.raises(InputError, match="prunes no layer"):
        to_llmcompressor(nothing)


@pytest.mark.parametrize(
    ("ours", "theirs"), [("unstructured", "0:0"), ("2:4", "2:4"), ("1:4", "3:4"), ("6:8", "2:8")]
)
def test_mask_structure_counts_pruned_weights(ours: str, theirs: str) -> None:
    assert llmcompressor_mask_structure(ours) == theirs


def test_inexpressible_parts_warn_and_are_commented(
    model: Any, layout: Any, caplog: pytest.LogCaptureFixture
) -> None:
    searched = _recipe(model, layout, _candidate(layout, metric="ria", structure="2:4"))
    with caplog.at_level(logging.WARNING, logger="paretoprune.exporters"):
        text = to_llmcompressor(searched, pruner="sparsegpt")
    name, modifier = _modifier(text)
    assert name == "SparseGPTModifier" and modifier["mask_structure"] == "2:4"
    assert "scoring rule 'ria' has no llm-compressor modifier" in caplog.text
    assert "have a sparsity other than 0.5" in caplog.text
    comments = [line for line in text.splitlines() if line.startswith("# WARNING:")]
    assert len(comments) == 2


def test_wanda_recipe_exported_for_sparsegpt_says_what_changes(
    recipe: Recipe, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="paretoprune.exporters"):
        name, _ = _modifier(to_llmcompressor(recipe, pruner="sparsegpt"))
    assert name == "SparseGPTModifier"
    assert "export with pruner='wanda' to keep it" in caplog.text


# --------------------------------------------------------------------------------------------
# llm-compressor itself, when some environment has it


def _llmcompressor_python() -> str | None:
    """A Python that can import llm-compressor: this one, else the separate checker venv."""
    if importlib.util.find_spec("llmcompressor") is not None:
        return sys.executable
    separate = REPO_ROOT / ".venv-llmc" / "bin" / "python"
    return str(separate) if separate.exists() else None


def test_llmcompressor_parses_the_export(recipe: Recipe, model: Any, tmp_path: Path) -> None:
    python = _llmcompressor_python()
    if python is None:
        pytest.skip(
            "llm-compressor is not installed here nor in .venv-llmc: run "
            "scripts/llmcompressor_venv.sh (make check-llmcompressor) to test exports against it"
        )
    model.config.save_pretrained(tmp_path / "model")
    dense = recipe_from_data(
        _mutated(recipe, lambda d: d["pruning"]["layers"].update({Q_PROJ: 0.0}))
    )
    files = []
    for pruner, source in (("wanda", recipe), ("sparsegpt", dense)):
        files.append(
            export_recipe(source, tmp_path / f"{pruner}.yaml", "llmcompressor", pruner=pruner)
        )
    script = REPO_ROOT / "scripts" / "check_llmcompressor.py"
    command = [python, str(script), "--model", str(tmp_path / "model"), *map(str, files)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "all checks passed" in done.stdout
    assert done.stdout.count("ok   ") == 2


def test_version_1_recipes_load_as_uniform_rows_without_solvers(recipe: Recipe) -> None:
    data = recipe.to_data()
    data["format"] = "paretoprune.recipe/v1"
    for key in ("rows", "solvers"):
        data["pruning"].pop(key)
    old = recipe_from_data(data, source="old.yaml")
    candidate = old.to_candidate()
    assert candidate.rows == "uniform" and candidate.solvers == ()
    assert candidate.sparsities == recipe.to_candidate().sparsities


def test_rows_and_solvers_round_trip_through_a_file(model: Any, layout: Any, tmp_path: Path) -> None:
    from dataclasses import replace

    chosen = replace(_candidate(layout), rows="trim", solvers=("fw", "update"))
    written = save_recipe(_recipe(model, layout, chosen), tmp_path / "r.yaml")
    loaded = load_recipe(written)
    assert loaded.format == "paretoprune.recipe/v2"
    assert loaded.pruning.rows == "trim" and loaded.pruning.solvers == ["fw", "update"]
    assert loaded.to_candidate().solvers == ("fw", "update") and loaded.to_candidate().rows == "trim"
