"""Wanda++ end to end: ``prune --method wanda++ --structure 2:4 --solver regional`` on a tiny model
through the command line, a recipe that names it applied again, and bad input in one line."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from paretoprune.candidate import Candidate
from paretoprune.cli import main
from paretoprune.errors import InputError
from paretoprune.metrics.scores import metric_by_name
from paretoprune.models import find_layout, fingerprint
from paretoprune.pruning import prune_model, uniform_sparsities
from paretoprune.recipe import Recipe, load_recipe, save_recipe
from paretoprune.testing import save_tiny_model, tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    save_tiny_model(folder, tiny_model("llama"))
    return folder


def _run(*args: str) -> tuple[int, str, list[str]]:
    """The command in this process: exit code, stdout and its ``error:`` lines."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exited:
        main([*args, "--quiet"])
    assert "Traceback" not in stderr.getvalue()
    errors = [line for line in stderr.getvalue().splitlines() if line.startswith("error:")]
    return int(exited.value.code or 0), stdout.getvalue(), errors


def test_prune_wanda_plus_plus_2_4_with_regional_through_the_cli(model_dir: Path) -> None:
    common = ("prune", "--model", str(model_dir), "--structure", "2:4", "--nsamples", "4", "--seqlen", "32",
              "--eval", "builtin", "--max-windows", "2", "--json")  # fmt: skip
    code, out, errors = _run(*common, "--method", "wanda++", "--solver", "regional")
    assert code == 0, errors
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert 1.0 < summary["perplexity"] < float("inf")
    code, out, _ = _run(*common, "--method", "wanda")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["perplexity"] != summary["perplexity"]


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--method", "sparsegpt", "--solver", "regional"], "sparsegpt already updates"),
        (["--method", "wanda++", "--solver", "regional,update"], "regional works on whole blocks"),
        (["--method", "wanda++", "--solver", "regional,fw"], "before those that update the weights"),
    ],
)  # fmt: skip
def test_bad_regional_chains_exit_2_in_one_line(model_dir: Path, extra: list[str], fragment: str) -> None:
    code, _, errors = _run("prune", "--model", str(model_dir), "--structure", "2:4", "--seqlen", "32", *extra)
    assert code == 2 and len(errors) == 1 and fragment in errors[0], errors


def test_a_recipe_with_the_gradient_term_and_regional_saves_loads_and_needs_data(tmp_path: Path) -> None:
    model = tiny_model("llama")
    layout = find_layout(model)
    candidate = Candidate(metric=metric_by_name("wanda++"), sparsities=uniform_sparsities(layout, 0.5),
                          structure="2:4", solvers=("regional",))  # fmt: skip
    recipe = Recipe.from_candidate(
        candidate, model_name="tiny-llama", fingerprint=fingerprint(model), family=layout.family,
        layer_numels=dict(zip(layout.names, layout.numels, strict=True)), objectives={"kl": 0.1},
        provenance={"calibration": {"source": "builtin", "sha256": "0" * 64, "nsamples": 4, "seqlen": 32, "seed": 0},
                    "search": {"run": "run", "evaluation": 0}},
    )  # fmt: skip
    loaded = load_recipe(save_recipe(recipe, tmp_path / "recipe.yaml")).to_candidate()
    assert loaded.metric == candidate.metric and loaded.metric.grad_coef == 100.0
    assert tuple(loaded.solvers) == ("regional",)
    with pytest.raises(InputError, match="needs calibration data"):
        prune_model(model, layout, loaded, None, progress=False)
    magnitude = Candidate(metric=metric_by_name("magnitude"), sparsities=uniform_sparsities(layout, 0.5),
                          solvers=("regional",))  # fmt: skip
    with pytest.raises(InputError, match="needs calibration data"):
        prune_model(model, layout, magnitude, None, progress=False)
