"""scripts/gpu_check.py on the CPU with the tiny shape: the smoke run of the GPU check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "gpu_check.py"

# Runs the script as __main__, then fails if it imported Ray: the GPU machines have none.
_RUN_WITHOUT_RAY = """
import runpy, sys
sys.argv = [sys.argv[1], *sys.argv[2:]]
code = 0
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as done:
    code = done.code
if "ray" in sys.modules:
    sys.exit("gpu_check imported ray")
sys.exit(code)
"""

TOP_LEVEL = {"format", "when", "command", "device", "shape", "dtype", "model", "budget_s", "elapsed_s",
             "peak_device_bytes", "measurements", "skipped", "errors"}  # fmt: skip
MEASURED = {
    "statistics": {"tokens", "statistics_s", "statistics_ratio"},
    "evaluation_4x32": {"tokens", "forward_s", "layerwise_s", "metric_s", "layerwise_ratio", "metric_ratio",
                        "evaluator_build_s", "evaluator_resident_bytes", "device_resident_bytes"},
    "search": {"algorithm", "pop", "generations", "evaluations", "search_s", "per_evaluation_s", "best_kl",
               "front_members", "per_evaluation_ratio"},
    "evaluation_4x128": {"tokens", "forward_s", "layerwise_s", "metric_s", "layerwise_ratio", "metric_ratio"},
    "sparsegpt_block": {"block", "linears", "hessian_s", "solve_s", "slowest_linear_s", "hessian_ratio",
                        "solve_ratio"},
    "prune": {"tokens", "prune_s", "sparsity", "prune_ratio"},
    "commands": {"device", "prune_s", "sparsity", "perplexity", "reloaded_perplexity", "bench_eval_device",
                 "driver_statistics_difference", "mask_agreement", "prune_gpu_bytes", "prune_gpu_estimate"},
}  # fmt: skip


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gpu-check")
    done = subprocess.run(
        [sys.executable, "-c", _RUN_WITHOUT_RAY, str(SCRIPT), "--device", "cpu", "--shape", "tiny", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_the_smoke_run_measures_every_step_with_positive_timings(smoke_run: Path) -> None:
    report = json.loads((smoke_run / "gpu_check.json").read_text())
    assert set(report) == TOP_LEVEL
    assert report["format"] == "paretoprune.gpu_check/v1" and report["dtype"] == "bfloat16"
    assert report["shape"]["used"] == "tiny" and report["shape"]["fallback"] is None
    assert report["skipped"] == {} and report["errors"] == {}
    assert list(report["measurements"]) == list(MEASURED)  # in the order they ran
    for name, keys in MEASURED.items():
        measured = report["measurements"][name]
        assert keys <= set(measured), name
        timings = {key: value for key, value in measured.items() if key.endswith("_s")}
        assert timings and all(value > 0 for value in timings.values()), (name, timings)
    assert report["measurements"]["search"]["evaluations"] == 4 * 2  # pop x generations of the tiny shape
    assert report["measurements"]["prune"]["sparsity"] == pytest.approx(0.5, abs=0.01)  # the model was pruned
    commands = report["measurements"]["commands"]  # prune and eval on this device agree on the saved model
    assert commands["device"] == "cpu" and commands["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert commands["bench_eval_device"] == "cpu"
    assert commands["prune_gpu_bytes"] is None and commands["prune_gpu_estimate"] is None  # a GPU's only
    assert commands["mask_agreement"] == {"unipruning": 1.0, "lrp": 1.0, "tplo": 1.0}  # the CPU against itself
    assert commands["reloaded_perplexity"] == pytest.approx(commands["perplexity"], rel=1e-5)
    assert commands["driver_statistics_difference"] == 0.0  # on the CPU, the same arithmetic
    assert report["model"]["weight_bytes"] == 2 * report["model"]["parameters"]  # bf16
    # The memory check's estimate covers the evaluator's own tensors (its rank cache and targets;
    # the norms are the statistics', counted apart), and the page shows it.
    for name in ("evaluation_4x32", "evaluation_4x128"):
        measured = report["measurements"][name]
        assert measured["estimated_extra_bytes"] >= measured["evaluator_resident_bytes"] > 0


def test_the_smoke_page_says_it_is_no_gpu_result(smoke_run: Path) -> None:
    page = (smoke_run / "README.md").read_text()
    assert "CPU smoke run, not a GPU result" in page
    assert "python scripts/gpu_check.py --device cpu --shape tiny" in page
    assert "| dense forward, 4 x 128 tokens |" in page and "SparseGPT solve of block 0 (7 linears)" in page
    assert "| prune the whole model, Wanda at 50%, 128 calibration tokens |" in page
    assert "bench-eval ran on cpu" in page
    assert "masks of unipruning, lrp, tplo as the CPU's on 100.0%, 100.0%, 100.0% of the weights" in page
    assert "| the memory check's estimate beyond the weights, 4 x 128 |" in page


# --------------------------------------------------------------------------------------------
# Its decisions, without a GPU


@pytest.fixture(scope="module")
def gpu_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("key", ["7b", "1b"])
def test_the_shapes_count_the_parameters_transformers_builds(gpu_check, key: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    shape = gpu_check.SHAPES[key]
    with torch.device("meta"):  # shapes only, no memory
        model = AutoModelForCausalLM.from_config(shape.config())
    assert shape.parameters == sum(p.numel() for p in model.parameters())
    assert shape.prunable_parameters == sum(m.weight.numel() for m in model.model.layers.modules()
                                            if isinstance(m, torch.nn.Linear))  # fmt: skip


def test_the_7b_shape_falls_back_to_1b_when_memory_or_time_is_short(gpu_check) -> None:
    shape, gib = gpu_check.SHAPES["7b"], 2**30
    assert gpu_check.short_of_memory(shape, 80 * gib) is None
    assert "needs about 40.24 GiB of GPU memory and 24.00 GiB is free" in gpu_check.short_of_memory(shape, 24 * gib)
    assert gpu_check.short_of_memory(shape, None) is None  # a CPU run is never refused for memory
    assert gpu_check.short_of_memory(gpu_check.SHAPES["1b"], gib) is None  # the fallback itself runs as it can
    assert gpu_check.short_of_time(shape, elapsed_s=30, forward_s=0.2, budget_s=420) is None
    assert "would take about" in gpu_check.short_of_time(shape, elapsed_s=30, forward_s=2.0, budget_s=420)


def test_without_pymoo_the_search_asks_the_baselines_then_random_repaired_genomes(gpu_check) -> None:
    import numpy as np

    from paretoprune.models import find_layout
    from paretoprune.search.space import SearchSpace, SpaceConfig
    from paretoprune.testing import tiny_model

    layout = find_layout(tiny_model("llama", layers=3))
    space = SearchSpace(layout, SpaceConfig(sparsity=None, sparsity_range=(0.4, 0.7)))
    search = gpu_check.RandomGenomes(space, pop=5)
    first = search.ask()
    baselines = np.stack(list(space.baselines().values()))
    assert first.shape == (5, space.n_var) and np.allclose(first[: len(baselines)], baselines)
    search.tell(first, np.zeros((5, 2)))
    again = search.ask()
    lower, upper = space.bounds
    assert np.allclose(again, space.repair(again)) and (again >= lower - 1e-12).all() and (again <= upper + 1e-12).all()


def test_the_front_is_the_rows_no_other_row_dominates(gpu_check) -> None:
    import numpy as np

    values = np.array([[1.0, 3.0], [2.0, 2.0], [2.0, 3.0], [3.0, 1.0], [1.0, 3.0]])
    assert gpu_check.non_dominated(values).tolist() == [True, True, False, True, True]


def test_the_commands_line_gives_prunes_gpu_peak_and_the_masks_agreement(gpu_check) -> None:
    on_gpu = {"prune_gpu_bytes": 12 * 2**20, "prune_gpu_estimate": 20 * 2**20}
    assert gpu_check._prune_memory_text(on_gpu) == "; prune's GPU peak 12.0 MiB, estimated 20.0 MiB"
    assert gpu_check._prune_memory_text({"prune_gpu_bytes": None, "prune_gpu_estimate": None}) == ""
    agreement = gpu_check._agreement_text({"unipruning": 0.9981, "lrp": 1.0})
    assert agreement == "; masks of unipruning, lrp as the CPU's on 99.8%, 100.0% of the weights"
    assert gpu_check._agreement_text({}) == ""


def test_each_run_of_the_mask_agreement_has_its_own_score_cache(gpu_check, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PARETOPRUNE_CACHE", "before")
    with gpu_check.cache_folder(tmp_path / "own"):
        from paretoprune.models import cache_dir

        assert cache_dir() == tmp_path / "own"
    assert os.environ["PARETOPRUNE_CACHE"] == "before"
