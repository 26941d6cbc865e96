"""UniPruning on tiny real models: masks from one calibration, the cache, the original weights,
and the command line."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import pytest
import torch

from paretoprune import unipruning
from paretoprune.candidate import Candidate
from paretoprune.cli import main
from paretoprune.errors import InputError
from paretoprune.global_scores import GLOBAL_SCORES, GlobalScoreInputs
from paretoprune.metrics import masks
from paretoprune.metrics.scores import SCORING_RULES
from paretoprune.models import find_layout, fingerprint
from paretoprune.pruning import layer_sparsities, prune_model
from paretoprune.recipe import Recipe, save_recipe
from paretoprune.testing import save_tiny_model, tiny_model
from paretoprune.unipruning import UniPruningSettings, calibrate, unipruning_scores

# Few, short steps and a large learning rate: the weights move visibly within the test's budget.
FAST = UniPruningSettings(steps=6, seqlen=32, lr=3e-3)


def _tokens(seed: int = 1, windows: int = 4, length: int = 32) -> torch.Tensor:
    return torch.randint(0, 256, (windows, length), generator=torch.Generator().manual_seed(seed))


def _inputs(model, tokens: torch.Tensor, cache: Path | None) -> GlobalScoreInputs:
    return GlobalScoreInputs(model, find_layout(model), tokens, model_id="tiny-llama", cache_dir=cache, progress=False)


def _dense(model) -> dict[str, torch.Tensor]:
    return {linear.name: linear.weight_matrix().clone() for linear in find_layout(model).linears}


def _pruned(model, scores, sparsity: float = 0.5, structure: str = "unstructured") -> dict[str, torch.Tensor]:
    """A copy of ``model`` pruned by ``scores``, as its weights by layer."""
    copied = copy.deepcopy(model)
    layout = find_layout(copied)
    candidate = Candidate(metric=SCORING_RULES["magnitude"], sparsities=layer_sparsities(layout, sparsity, "uniform"),
                          structure=structure)  # fmt: skip
    prune_model(copied, layout, candidate, None, progress=False, scores=scores)
    return _dense(copied)


def test_the_calibration_gives_the_original_weights_back_and_the_pruned_ones_are_them_masked() -> None:
    model = tiny_model("llama")
    dense = _dense(model)
    flags = [parameter.requires_grad for parameter in model.parameters()]
    scores = unipruning_scores(_inputs(model, _tokens(), None), FAST)
    for linear in find_layout(model).linears:
        assert torch.equal(linear.weight_matrix(), dense[linear.name]), linear.name
    assert [parameter.requires_grad for parameter in model.parameters()] == flags and not model.training
    pruned = _pruned(model, scores, 0.6)
    for name, weight in pruned.items():
        assert torch.equal(weight, dense[name] * masks.keep_mask(scores[name], 0.6)), name


def test_the_fine_tune_moves_the_saliency_the_static_variant_does_not() -> None:
    model, tokens = tiny_model("llama"), _tokens()
    layout = find_layout(model)
    moved = calibrate(model, layout, tokens, FAST, progress=False)
    static = calibrate(model, layout, tokens, UniPruningSettings(steps=6, seqlen=32, train=False), progress=False)
    again = calibrate(model, layout, tokens, UniPruningSettings(steps=6, seqlen=32, train=False), progress=False)
    # Same seed: the same batches and subsets, so only the weights' movement tells them apart.
    assert all(torch.equal(static[name], again[name]) for name in layout.names)
    assert any(not torch.allclose(moved[name], static[name]) for name in layout.names)


def test_masks_at_any_sparsity_from_one_calibration_are_nested() -> None:
    model = tiny_model("llama")
    scores = unipruning_scores(_inputs(model, _tokens(), None), FAST)
    kept = {sparsity: _pruned(model, scores, sparsity) for sparsity in (0.5, 0.7)}
    for name in scores:
        light, heavy = kept[0.5][name] != 0, kept[0.7][name] != 0
        assert bool((heavy <= light).all()) and int(heavy.sum()) < int(light.sum()), name
    for name, weight in _pruned(model, scores, structure="2:4").items():
        assert torch.equal(weight != 0, masks.nm_keep_mask(scores[name], 2, 4) & (weight != 0)), name


def test_the_cache_is_hit_on_the_second_call_and_keyed_by_calibration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokens = tiny_model("llama"), _tokens()
    first = unipruning_scores(_inputs(model, tokens, tmp_path), FAST)
    assert len(list(tmp_path.glob("unipruning-*.safetensors"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(unipruning, "calibrate", no_training)
    second = unipruning_scores(_inputs(model, tokens, tmp_path), FAST)
    assert set(second) == set(first) and all(torch.equal(second[name], first[name]) for name in first)
    with pytest.raises(AssertionError, match="cache should have answered"):
        unipruning_scores(_inputs(model, _tokens(seed=2), tmp_path), FAST)  # other calibration tokens
    with pytest.raises(AssertionError, match="cache should have answered"):
        unipruning_scores(_inputs(model, tokens, tmp_path), UniPruningSettings(steps=6, seqlen=32, train=False))


def test_bad_settings_and_missing_calibration_are_one_line_errors() -> None:
    with pytest.raises(InputError, match="steps >= 1"):
        UniPruningSettings(steps=0)
    with pytest.raises(InputError, match="kappa > 0"):
        UniPruningSettings(kappa=0.0)
    with pytest.raises(InputError, match="calibration windows"):
        calibrate(tiny_model("llama"), find_layout(tiny_model("llama")), torch.ones(5, dtype=torch.long), FAST)


def _json_main(*args: str) -> dict:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), pytest.raises(SystemExit) as exited:
        main([*args, "--json", "--quiet"])
    assert exited.value.code in (0, None), stdout.getvalue()[-500:]
    return json.loads(stdout.getvalue().strip().splitlines()[-1])


def test_prune_and_apply_with_unipruning_on_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARETOPRUNE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "tiny-qwen2"
    model = tiny_model("qwen2")
    save_tiny_model(folder, model)
    common = ("--model", str(folder), "--nsamples", "2", "--seqlen", "64", "--eval", "builtin", "--max-windows", "2")
    short = ("--unipruning-steps", "2")  # a short run keeps the test fast
    pruned = _json_main("prune", "--method", "unipruning", "--sparsity", "0.5", *short, *common)
    assert pruned["sparsity"] == pytest.approx(0.5, abs=1e-3) and pruned["perplexity"] > 1
    assert len(list((tmp_path / "cache" / "scores").glob("unipruning-*.safetensors"))) == 1

    layout = find_layout(model)
    recipe = Recipe.from_candidate(
        Candidate(metric=SCORING_RULES["wanda"], sparsities={name: 0.5 for name in layout.names}),
        model_name="tiny-qwen2", fingerprint=fingerprint(model), family=layout.family,
        layer_numels=dict(zip(layout.names, layout.numels, strict=True)), objectives={"kl": 0.1},
        provenance={"calibration": {"source": "builtin", "sha256": "0" * 64, "nsamples": 2, "seqlen": 64, "seed": 0},
                    "search": {"run": "run", "evaluation": 0}},
    )  # fmt: skip
    recipe_file = save_recipe(recipe, tmp_path / "recipe.yaml")
    applied = _json_main("apply", str(recipe_file), "--pruner", "unipruning", *short, *common)
    # The same uniform sparsities and the same cached scores: the same masks as prune's.
    assert applied["perplexity"] == pytest.approx(pruned["perplexity"], rel=1e-9)
    assert len(list((tmp_path / "cache" / "scores").glob("*.safetensors"))) == 1
    wanda = _json_main("apply", str(recipe_file), *common)
    assert wanda["perplexity"] != pytest.approx(pruned["perplexity"], rel=1e-6)


def test_both_rules_are_registered() -> None:
    assert {"unipruning", "unipruning-static"} <= set(GLOBAL_SCORES)


def test_the_step_count_is_a_setting_of_the_rule_and_part_of_its_cache_key(tmp_path: Path) -> None:
    model, tokens = tiny_model("llama"), _tokens()
    rule = GLOBAL_SCORES["unipruning"]
    for steps in (2, 3, 2):
        inputs = GlobalScoreInputs(model, find_layout(model), tokens, model_id="tiny-llama", cache_dir=tmp_path,
                                   progress=False, settings={"steps": steps, "seqlen": 16})  # fmt: skip
        rule.compute(inputs)
        assert unipruning.cache_path(inputs, UniPruningSettings(steps=steps, seqlen=16)).is_file()
    assert len(list(tmp_path.glob("unipruning-*.safetensors"))) == 2  # one per step count


def _exit_and_error(*args: str) -> tuple[int, str]:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exited:
        main(list(args))
    return int(exited.value.code), stderr.getvalue()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--method", "unipruning", "--unipruning-steps", "0"), "--unipruning-steps 0 is too small: give at least 1"),
        (("--method", "wanda", "--unipruning-steps", "2"), "use it with unipruning or unipruning-static, not wanda"),
    ],
)
def test_bad_unipruning_options_exit_2_with_one_line(tmp_path: Path, extra: tuple[str, ...], message: str) -> None:
    code, error = _exit_and_error("prune", "--model", str(tmp_path / "absent"), "--sparsity", "0.5", *extra)
    assert code == 2 and message in error and len(error.strip().splitlines()) == 1
