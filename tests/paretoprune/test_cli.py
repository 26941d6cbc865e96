"""The command line as users and scripts see it: JSON last lines, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from paretoprune.candidate import Candidate
from paretoprune.cli import main
from paretoprune.metrics.scores import metric_by_name
from paretoprune.models import find_layout, fingerprint
from paretoprune.recipe import Recipe, save_recipe
from paretoprune.testing import save_tiny_model, tiny_model, write_statement_sets


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "paretoprune", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-qwen2")
    save_tiny_model(folder, tiny_model("qwen2"))
    return folder


def test_prune_save_reload_gives_the_reported_perplexity(model_dir: Path, tmp_path: Path) -> None:
    saved = tmp_path / "pruned"
    done = _cli("prune", "--model", str(model_dir), "--method", "wanda", "--sparsity", "0.5",
                "--nsamples", "4", "--seqlen", "64", "--eval", "builtin", "--max-windows", "4",
                "--save", str(saved), "--json", "--quiet")  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["sparsity"] == pytest.approx(0.5)
    assert summary["tokens"] == 4 * 63
    memory = summary["memory"]  # on the CPU, the peak is set against the whole estimate it printed
    assert memory["device"] == "cpu" and memory["bound"] == memory["estimate"]["total"]
    assert 0 < memory["peak"] <= memory["bound"]
    assert (saved / "model.safetensors").exists()
    again = _cli("eval", "--model", str(saved), "--data", "builtin", "--seqlen", "64",
                 "--max-windows", "4", "--device", "cpu", "--json", "--quiet")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["perplexity"] == pytest.approx(
        summary["perplexity"], rel=1e-5
    )


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["prune", "--model", "./missing-model", "--sparsity", "0.5"], "does not exist"),
        (["prune", "--model", "MODEL", "--sparsity", "1.5"], "out of range"),
        (["prune", "--model", "MODEL", "--sparsity", "0.5", "--seqlen", "64", "--calib", "no/such/file.txt"], "file.txt"),
        (["prune", "--model", "MODEL", "--structure", "3:5", "--seqlen", "64", "--nsamples", "2"], "divide"),
        (["prune", "--model", "MODEL", "--method", "nope", "--sparsity", "0.5"], "unknown method"),
        (["eval", "--model", "MODEL", "--data", "wikitext2", "--seqlen", "64"], "local file"),
        (["front", "no-such-run"], "holds no search"),
        (["prune", "--model", "MODEL", "--no-such-option"], "No such option: --no-such-option"),
        (["prune", "--model", "MODEL", "--sparsity", "half"], "Invalid value for '--sparsity'"),
        (["prune", "--model", "MODEL", "--method", "sparsegpt", "--update", "--sparsity", "0.5"], "--update and --solver go with"),
        (["prune", "--model", "MODEL", "--sparsity", "0.5", "--dtype", "half"], "use auto, bfloat16, float16 or float32"),
        (["eval", "--model", "MODEL", "--data", "builtin", "--seqlen", "64", "--dtype", "fp8"], "unknown dtype 'fp8'"),
        (["prune", "--model", "MODEL", "--sparsity", "0.5", "--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_bad_input_exits_2_with_one_line(model_dir: Path, args: list[str], fragment: str) -> None:
    done = _cli(*[str(model_dir) if a == "MODEL" else a for a in args], "--quiet" if args[0] != "front" else "--json")
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.real_model
def test_real_smollm2_prune_end_to_end(shared_data: Path) -> None:
    calib = shared_data / "c4" / "c4-en-train-shard00000-first1000.jsonl"
    wiki = shared_data / "wikitext2" / "wiki.test.raw"
    done = _cli("prune", "--model", "smollm2-135m", "--method", "wanda", "--sparsity", "0.5",
                "--calib", str(calib), "--nsamples", "4", "--seqlen", "128",
                "--eval", str(wiki), "--max-windows", "4", "--json", "--quiet")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert 10 < summary["perplexity"] < 1000  # a working 135M model at half density, not noise
    # What it printed before pruning holds: the weights, the calibration walk and the evaluation.
    memory = summary["memory"]
    assert memory["estimate"]["weights"] < memory["peak"] <= memory["estimate"]["total"]


def test_eval_and_prune_report_zero_shot_tasks(model_dir: Path, shared_data: Path) -> None:
    tasks = ["--task-dir", str(shared_data / "zeroshot"), "--limit", "3"]
    done = _cli("eval", "--model", str(model_dir), "--tasks", "arc_easy,piqa", *tasks, "--json", "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    scored = summary["tasks"]["tasks"]
    assert set(scored) == {"arc_easy", "piqa"}
    for entry in scored.values():  # three examples each: an accuracy in thirds
        assert entry["acc"] * 3 == pytest.approx(round(entry["acc"] * 3))
    assert summary["tasks"]["mean_acc"] == pytest.approx((scored["arc_easy"]["acc"] + scored["piqa"]["acc"]) / 2)
    assert "perplexity" not in summary
    pruned = _cli("prune", "--model", str(model_dir), "--method", "magnitude", "--sparsity", "0.3",
                  "--eval-tasks", "rte", *tasks, "--json", "--quiet")  # fmt: skip
    assert pruned.returncode == 0, pruned.stderr[-2000:]
    result = json.loads(pruned.stdout.strip().splitlines()[-1])
    assert result["sparsity"] == pytest.approx(0.3, abs=0.01)
    assert list(result["tasks"]["tasks"]) == ["rte"]


# --------------------------------------------------------------------------------------------
# Windows longer than the model's context (the tiny models read 512 tokens)


def _main(*args: str) -> tuple[int, list[str]]:
    """Run the command in this process: its exit code and its ``error:`` lines on stderr."""
    import contextlib
    import io

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exited:
        main(list(args))
    assert "Traceback" not in stderr.getvalue()
    return int(exited.value.code), [line for line in stderr.getvalue().splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    """A recipe for the tiny model of ``model_dir`` (same family and seed, so same fingerprint)."""
    model = tiny_model("qwen2")
    layout = find_layout(model)
    recipe = Recipe.from_candidate(
        Candidate(metric=metric_by_name("wanda"), sparsities={name: 0.5 for name in layout.names}),
        model_name="tiny-qwen2", fingerprint=fingerprint(model), family=layout.family,
        layer_numels=dict(zip(layout.names, layout.numels, strict=True)), objectives={"kl": 0.1},
        provenance={"calibration": {"source": "builtin", "sha256": "0" * 64, "nsamples": 4, "seqlen": 64, "seed": 0},
                    "search": {"run": "run", "evaluation": 0}},
    )  # fmt: skip
    return save_recipe(recipe, tmp_path_factory.mktemp("recipe") / "recipe.yaml")


@pytest.mark.parametrize(
    "args, option",
    [
        (["prune", "--model", "MODEL", "--sparsity", "0.5", "--seqlen", "1000"], "--seqlen"),
        (["prune", "--model", "MODEL", "--method", "magnitude", "--sparsity", "0.5", "--eval", "builtin",
          "--seqlen", "1000"], "--seqlen"),
        (["eval", "--model", "MODEL", "--data", "builtin", "--seqlen", "1000"], "--seqlen"),
        (["bench-eval", "--model", "MODEL", "--seqlen", "1000"], "--seqlen"),
        (["apply", "RECIPE", "--model", "MODEL", "--seqlen", "1000"], "--seqlen"),
        (["search", "--model", "MODEL", "--sparsity", "0.5", "--seqlen", "1000", "--out", "OUT"], "--seqlen"),
        (["search", "--model", "MODEL", "--sparsity", "0.5", "--seqlen", "64", "--stats-seqlen", "1000",
          "--out", "OUT"], "--stats-seqlen"),
    ],
)  # fmt: skip
def test_a_window_longer_than_the_context_is_refused_in_every_command(
    model_dir: Path, recipe_file: Path, tmp_path: Path, args: list[str], option: str
) -> None:
    places = {"MODEL": str(model_dir), "RECIPE": str(recipe_file), "OUT": str(tmp_path / "run")}
    code, errors = _main(*[places.get(arg, arg) for arg in args], "--quiet")
    assert code == 2, errors
    assert errors == [f"error: {option} 1000 exceeds the model's context of 512 tokens; use {option} 512 or less"]
    assert not (tmp_path / "run").exists()  # a refused search leaves no folder to delete


def test_an_unused_default_seqlen_does_not_stop_a_short_context_model(model_dir: Path) -> None:
    # Magnitude pruning without evaluation builds no windows: the default --seqlen 2048 is moot.
    code, errors = _main("prune", "--model", str(model_dir), "--method", "magnitude", "--sparsity", "0.5", "--quiet")
    assert code == 0, errors


@pytest.mark.real_model
def test_real_smollm2_refuses_a_seqlen_beyond_its_context_at_once() -> None:
    done = _cli("prune", "--model", "smollm2-135m", "--sparsity", "0.5", "--seqlen", "100000", "--quiet", timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "error: --seqlen 100000 exceeds the model's context of 8192 tokens; use --seqlen 8192 or less" in done.stderr


# --------------------------------------------------------------------------------------------
# Choices come from the registries


def test_help_lists_every_registered_method_allocation_and_pruner() -> None:
    import typer

    from paretoprune.cli import app
    from paretoprune.global_scores import GLOBAL_SCORES
    from paretoprune.metrics.scores import SCORING_RULES
    from paretoprune.pruning import LAYER_ALLOCATIONS

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]

    def help_of(command: str, option: str) -> str:
        return next(p.help for p in commands[command].params if option in p.opts)

    methods = " | ".join((*SCORING_RULES, *GLOBAL_SCORES))
    assert help_of("prune", "--method") == f"{methods} | sparsegpt"
    assert help_of("prune", "--allocation") == LAYER_ALLOCATIONS.choices()
    assert help_of("apply", "--pruner") == f"recipe | {methods} | sparsegpt"


def test_a_newly_registered_scoring_rule_is_a_prune_method(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from paretoprune.metrics.scores import SCORING_RULES, MetricSpec

    # Registered for this test only: the entries dict is restored afterwards.
    monkeypatch.setattr(SCORING_RULES, "_entries", dict(SCORING_RULES._entries))
    SCORING_RULES.register("sqrt-magnitude", MetricSpec(name="sqrt-magnitude", weight_power=0.5), summary="|W|^0.5")
    code, errors = _main("prune", "--model", str(model_dir), "--method", "sqrt-magnitude", "--sparsity", "0.5",
                         "--quiet")  # fmt: skip
    assert code == 0, errors
    code, errors = _main("prune", "--model", str(model_dir), "--method", "cube-magnitude", "--sparsity", "0.5")
    from paretoprune.workflows import prune_methods

    assert code == 2 and f"choose one of {', '.join(prune_methods())}" in errors[0]
    assert "sqrt-magnitude" in prune_methods() and "cube-magnitude" not in errors[0].split("choose one of")[1]


def test_prune_and_apply_share_their_calibration_and_after_pruning_options() -> None:
    import dataclasses

    import typer

    from paretoprune.cli import app
    from paretoprune.workflows import AfterPruning, ApplyConfig, CalibrationOptions, PruneConfig

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]

    def described(command: str, option: str) -> tuple:
        param = next(p for p in commands[command].params if option in p.opts)
        return param.default, param.help

    calibration = ["--calib", "--nsamples", "--seqlen", "--seed", "--sequential"]
    after = ["--eval", "--max-windows", "--eval-tasks", "--task-dir", "--limit", "--save"]
    for option in [*calibration, *after, "--update"]:
        assert described("prune", option) == described("apply", option), option
    for config in (PruneConfig, ApplyConfig):
        types = {f.name: f.default_factory for f in dataclasses.fields(config) if f.name in ("calibration", "after")}
        assert types == {"calibration": CalibrationOptions, "after": AfterPruning}


def test_every_command_that_loads_a_model_takes_dtype() -> None:
    import typer

    from paretoprune.cli import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for name in ("prune", "eval", "bench-eval", "search", "apply"):
        option = next((p for p in commands[name].params if "--dtype" in p.opts), None)
        assert option is not None, name
        assert "auto | bfloat16 | float16 | float32" in option.help, name


def test_prune_in_bf16_saves_a_bf16_model(model_dir: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    saved = tmp_path / "pruned"
    summary = _json_main("prune", "--model", str(model_dir), "--sparsity", "0.5", "--nsamples", "2", "--seqlen", "32",
                         "--dtype", "bfloat16", "--save", str(saved))  # fmt: skip
    assert summary["sparsity"] == pytest.approx(0.5)
    with safe_open(str(saved / "model.safetensors"), framework="pt") as weights:
        assert {weights.get_slice(key).get_dtype() for key in weights.keys()} == {"BF16"}


def test_bench_eval_prints_the_keys_scripts_read(model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bench-eval", "--model", str(model_dir), "--nsamples", "2", "--seqlen", "32", "--candidates", "1",
              "--device", "cpu", "--json", "--quiet"])  # fmt: skip
    assert exited.value.code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert {"forward_s", "layerwise_s", "metric_s", "layerwise_ratio", "metric_ratio", "model_bytes",
            "overhead_bytes", "device"} <= set(summary)  # fmt: skip
    assert summary["device"] == "cpu"
    assert lines[0].startswith("dense forward") and lines[0].endswith("on cpu)") and "x forward" in lines[1]


# --------------------------------------------------------------------------------------------
# Solvers and row allocations


def _json_main(*args: str) -> dict:
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), pytest.raises(SystemExit) as exited:
        main([*args, "--json", "--quiet"])
    assert exited.value.code in (0, None), stdout.getvalue()[-500:]
    return json.loads(stdout.getvalue().strip().splitlines()[-1])


def test_prune_with_a_solver_chain_and_trim_rows_keeps_the_sparsity(model_dir: Path) -> None:
    common = ("prune", "--model", str(model_dir), "--sparsity", "0.6", "--seqlen", "64", "--nsamples", "4",
              "--eval", "builtin", "--max-windows", "2")  # fmt: skip
    plain = _json_main(*common)
    solved = _json_main(*common, "--solver", "fw,update")
    rows = _json_main(*common, "--rows", "trim")
    assert solved["sparsity"] == pytest.approx(plain["sparsity"], abs=1e-3)
    assert rows["sparsity"] == pytest.approx(plain["sparsity"], abs=1e-6)
    assert solved["perplexity"] != plain["perplexity"] and rows["perplexity"] != plain["perplexity"]


def test_apply_uses_the_recipes_solvers_unless_told_otherwise(
    model_dir: Path, recipe_file: Path, tmp_path: Path
) -> None:
    from paretoprune.recipe import load_recipe, recipe_from_data

    data = load_recipe(recipe_file).to_data()
    data["pruning"]["solvers"] = ["update"]
    with_solver = save_recipe(recipe_from_data(data), tmp_path / "solved.yaml")
    common = ("--model", str(model_dir), "--seqlen", "64", "--nsamples", "4", "--eval", "builtin", "--max-windows", "2")
    own = _json_main("apply", str(with_solver), *common)
    explicit = _json_main("apply", str(recipe_file), *common, "--solver", "update")
    plain = _json_main("apply", str(recipe_file), *common)
    assert own["perplexity"] == pytest.approx(explicit["perplexity"], rel=1e-9)
    assert own["perplexity"] != plain["perplexity"]
    overridden = _json_main("apply", str(with_solver), *common, "--solver", "fw")
    assert overridden["perplexity"] != own["perplexity"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["prune", "--model", "MODEL", "--sparsity", "0.5", "--seqlen", "64", "--solver", "update,fw"],
         "put the solvers that change the mask (fw) before"),
        (["prune", "--model", "MODEL", "--sparsity", "0.5", "--seqlen", "64", "--solver", "obs"],
         "unknown solver 'obs' for --solver"),
        (["prune", "--model", "MODEL", "--structure", "2:4", "--seqlen", "64", "--rows", "trim"],
         "use --rows uniform with --structure 2:4"),
        (["prune", "--model", "MODEL", "--method", "sparsegpt", "--sparsity", "0.5", "--seqlen", "64",
          "--solver", "fw"], "sparsegpt already updates"),
        (["apply", "RECIPE", "--model", "MODEL", "--seqlen", "64", "--rows", "zigzag"],
         "unknown row allocation 'zigzag' for --rows"),
    ],
)  # fmt: skip
def test_bad_solver_and_row_choices_exit_2_in_one_line(
    model_dir: Path, recipe_file: Path, args: list[str], fragment: str
) -> None:
    places = {"MODEL": str(model_dir), "RECIPE": str(recipe_file)}
    code, errors = _main(*[places.get(arg, arg) for arg in args], "--quiet")
    assert code == 2 and len(errors) == 1 and fragment in errors[0], errors


# --------------------------------------------------------------------------------------------
# Capabilities: diagnostics, passkey, test-time pruning


def test_eval_diagnostics_against_the_dense_reference(model_dir: Path, tmp_path: Path) -> None:
    saved = tmp_path / "pruned"
    _json_main("prune", "--model", str(model_dir), "--sparsity", "0.7", "--seqlen", "64", "--nsamples", "4",
               "--save", str(saved))  # fmt: skip
    common = ("eval", "--data", "builtin", "--seqlen", "64", "--max-windows", "2", "--diagnostics")
    itself = _json_main(*common, "--model", str(model_dir), "--reference", str(model_dir))["diagnostics"]
    pruned = _json_main(*common, "--model", str(saved), "--reference", str(model_dir))["diagnostics"]
    assert itself["diff_erank"] == 0 and itself["topk_tau_10"] == 1 and itself["energy_shift"] == 0
    assert pruned["topk_tau_10"] < 1 and pruned["energy_w1"] > 0
    assert set(pruned) >= {"diff_erank", "topk_tau_3", "topk_tau_20", "energy_shift"}


def test_eval_passkey_grid_and_its_plot(model_dir: Path, tmp_path: Path) -> None:
    plot = tmp_path / "passkey.png"
    summary = _json_main("eval", "--model", str(model_dir), "--tasks", "passkey", "--passkey-lengths", "200,300",
                         "--passkey-depths", "0,1", "--passkey-trials", "1", "--passkey-plot", str(plot))  # fmt: skip
    grid = summary["passkey"]
    assert grid["lengths"] == [200, 300] and grid["depths"] == [0.0, 1.0] and len(grid["accuracy"]) == 2
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_eval_test_time_pruning_is_exact_at_ratio_one(model_dir: Path) -> None:
    common = ("eval", "--model", str(model_dir), "--data", "builtin", "--seqlen", "64", "--max-windows", "2")
    exact = _json_main(*common, "--test-time-prune", "1.0")["test_time"]
    half = _json_main(*common, "--test-time-prune", "0.5", "--structured")["test_time"]
    assert exact["perplexity"] == pytest.approx(exact["unpruned_perplexity"], rel=1e-6)
    assert exact["scored_tokens"] == 2 * 32 and exact["context_tokens"] == 32
    assert half["perplexity"] != pytest.approx(half["unpruned_perplexity"], rel=1e-3)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--data", "builtin", "--diagnostics"], "add --reference M"),
        (["--tasks", "passkey", "--diagnostics", "--reference", "MODEL"], "--diagnostics scores text windows"),
        (["--data", "builtin", "--test-time-prune", "1.5"], "test-time ratio 1.5 is outside (0, 1]"),
        (["--tasks", "passkey", "--passkey-lengths", "100000"], "--passkey-lengths 100000 exceeds the model's context"),
        (["--tasks", "passkey", "--passkey-lengths", "a,b"], "--passkey-lengths a,b is not understood"),
        (["--tasks", "passkey,mmlu"], "unknown evaluation task 'mmlu' for --tasks"),
    ],
)  # fmt: skip
def test_bad_capability_options_exit_2_in_one_line(model_dir: Path, args: list[str], fragment: str) -> None:
    code, errors = _main("eval", "--model", str(model_dir), "--seqlen", "64",
                         *[str(model_dir) if a == "MODEL" else a for a in args], "--quiet")  # fmt: skip
    assert code == 2 and len(errors) == 1 and fragment in errors[0], errors


def test_prune_with_tplo_allocation_keeps_the_mean_and_needs_its_statements(model_dir: Path, tmp_path: Path) -> None:
    common = ("prune", "--model", str(model_dir), "--sparsity", "0.5", "--seqlen", "64", "--nsamples", "4",
              "--allocation", "tplo")  # fmt: skip
    summary = _json_main(*common, "--truth-dir", str(write_statement_sets(tmp_path / "truth")))
    assert summary["sparsity"] == pytest.approx(0.5, abs=0.01)
    code, errors = _main(*common, "--truth-dir", str(tmp_path / "nowhere"), "--quiet")
    assert code == 2 and "nowhere" in errors[0]


def test_the_search_summary_sets_each_peak_beside_its_estimate() -> None:
    from paretoprune.cli import _memory_lines

    memory = {"estimate": {"total": 3 * 2**30}, "peaks": [2**30, 2 * 2**30],
              "driver": {"estimate": {"total": 5 * 2**30}, "peak": 4 * 2**30}}  # fmt: skip
    assert _memory_lines(memory) == ["evaluator memory: peak 2.0 GiB, estimated 3.0 GiB",
                                     "driver memory: peak 4.0 GiB, estimated 5.0 GiB"]  # fmt: skip
    # Before the search ended (or from a run folder written before drivers reported): nothing to set.
    assert _memory_lines({"estimate": {"total": 1}, "peaks": []}) == []
    # Actors on GPUs report torch's allocation there, set against the estimate's GPU part.
    on_gpus = {"estimate": {"total": 3 * 2**30}, "bound": 2 * 2**30, "on_gpus": True, "peaks": [2**30]}
    assert _memory_lines(on_gpus) == ["evaluator memory: peak 1.0 GiB on its GPU, estimated 2.0 GiB"]


# --------------------------------------------------------------------------------------------
# A model larger than the free RAM is refused before it loads


@pytest.fixture(scope="module")
def huge_model_dir(model_dir: Path, tmp_path_factory) -> Path:
    """The tiny model's config and tokenizer beside a checkpoint whose header declares 4 TiB of
    fp32 weights: what the memory check reads. Its data is not there; nothing may try to load it."""
    import shutil
    import struct

    folder = tmp_path_factory.mktemp("huge")
    for path in model_dir.iterdir():
        if path.suffix != ".safetensors":
            shutil.copy(path, folder / path.name)
    elements = 2**40
    header = json.dumps({"weight": {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 4 * elements]}})
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header.encode())
    return folder


@pytest.mark.parametrize(
    "command, who",
    [
        (["prune", "--model", "MODEL", "--method", "magnitude", "--sparsity", "0.5", "--quiet"], "prune"),
        (["apply", "RECIPE", "--model", "MODEL", "--seqlen", "64", "--quiet"], "apply"),
        (["eval", "--model", "MODEL", "--data", "builtin", "--seqlen", "64", "--quiet"], "eval"),
        (["bench-eval", "--model", "MODEL", "--seqlen", "64", "--quiet"], "bench-eval"),
        (["search", "--model", "MODEL", "--calib", "builtin", "--seqlen", "64", "--sparsity", "0.5", "--workers", "1",
          "--out", "RUN", "--json"], "the search's driver"),
    ],
)  # fmt: skip
def test_a_model_larger_than_the_free_ram_is_refused_before_loading(
    huge_model_dir: Path, recipe_file: Path, tmp_path: Path, command: list[str], who: str
) -> None:
    named = {"MODEL": str(huge_model_dir), "RECIPE": str(recipe_file), "RUN": str(tmp_path / "run")}
    code, errors = _main(*[named.get(arg, arg) for arg in command])
    assert code == 2 and len(errors) == 1
    assert f"{who} needs ~4096.0 GiB of RAM for {huge_model_dir} in float32" in errors[0]
    assert "pass --dtype bfloat16" in errors[0]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="asks for a GPU where torch sees none")
@pytest.mark.parametrize(
    "command",
    [
        ["prune", "--model", "MODEL", "--method", "magnitude", "--sparsity", "0.5"],
        ["apply", "RECIPE", "--model", "MODEL", "--seqlen", "64"],
        ["eval", "--model", "MODEL", "--data", "builtin", "--seqlen", "64"],
        ["bench-eval", "--model", "MODEL", "--seqlen", "64"],
    ],
)
def test_device_cuda_without_a_gpu_stops_before_loading(model_dir: Path, recipe_file: Path, command: list[str]) -> None:
    named = {"MODEL": str(model_dir), "RECIPE": str(recipe_file)}
    code, errors = _main(*[named.get(arg, arg) for arg in command], "--device", "cuda", "--quiet")
    assert code == 2 and len(errors) == 1
    assert "--device cuda, but torch sees no GPU here" in errors[0]


@pytest.mark.parametrize(
    "device, fragment",
    [
        ("tpu", "unknown device 'tpu' for --driver-device: use auto, cpu, cuda"),
        pytest.param("cuda", "--driver-device cuda, but torch sees no GPU here", marks=pytest.mark.skipif(
            __import__("torch").cuda.is_available(), reason="asks for a GPU where torch sees none")),
    ],
)  # fmt: skip
def test_a_driver_device_it_cannot_use_stops_the_search_in_one_line(
    model_dir: Path, tmp_path: Path, device: str, fragment: str
) -> None:
    code, errors = _main("search", "--model", str(model_dir), "--calib", "builtin", "--seqlen", "64",
                         "--sparsity", "0.5", "--driver-device", device, "--out", str(tmp_path / "run"), "--quiet")  # fmt: skip
    assert code == 2 and len(errors) == 1 and fragment in errors[0]
    assert not (tmp_path / "run").exists()  # refused before anything was written
