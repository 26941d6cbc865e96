"""The evaluator's memory estimate against what a real evaluator holds, and the peak it reports."""

from __future__ import annotations

import pytest
import torch

from paretoprune.evaluators.fitness import CandidateEvaluator
from paretoprune.evaluators.memory import (
    COMMAND_RUNTIME_BYTES,
    DRIVER_RUNTIME_BYTES,
    RUNTIME_BYTES,
    MemoryEstimate,
    driver_memory,
    evaluator_memory,
    format_bytes,
    peak_memory_bytes,
    pruning_memory,
    tensors_of,
)
from paretoprune.evaluators.placement import loading_bytes
from paretoprune.evaluators.stats import collect_stats
from paretoprune.metrics.scores import KNOWN_METRICS
from paretoprune.models import find_layout
from paretoprune.testing import save_tiny_model, tiny_model


def _bytes(tensors) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


@pytest.fixture(scope="module")
def setup():
    model = tiny_model("llama", layers=2)
    layout = find_layout(model)
    tokens = torch.randint(0, model.config.vocab_size - 1, (3, 32), generator=torch.Generator().manual_seed(0))
    stats = collect_stats(model, layout, tokens)
    return model, layout, tokens, stats


@pytest.mark.parametrize("objectives", [("kl",), ("kl", "hidden_mse"), ("logits_mse",)])
def test_the_rank_cache_and_targets_are_what_a_real_evaluator_keeps(setup, objectives) -> None:
    model, layout, tokens, stats = setup
    evaluator = CandidateEvaluator(model, layout, stats, tokens, objectives=objectives, rank_metric=KNOWN_METRICS["wanda"])
    estimate = evaluator_memory(model, layout, dtype=torch.float32, fitness_tokens=tokens.numel(),
                                objectives=objectives, ranked=True, shared=tensors_of([stats, tokens]))  # fmt: skip
    assert estimate.weights == _bytes(model.parameters())
    assert estimate.rank_cache == _bytes(evaluator._ranks.values())
    targets = [t for reference in evaluator._references.values() for t in reference.targets.values()]
    assert estimate.targets == _bytes(targets)
    assert estimate.inputs == _bytes(tensors_of([stats])) + _bytes([tokens])


def test_half_precision_keeps_half_the_probabilities_and_no_rank_cache_when_the_rule_moves(setup) -> None:
    model, layout, tokens, _ = setup
    common = dict(fitness_tokens=tokens.numel(), objectives=("kl",))
    full = evaluator_memory(model, layout, dtype=torch.float32, ranked=True, **common)
    half = evaluator_memory(model, layout, dtype=torch.bfloat16, ranked=False, **common)
    vocab_cells = tokens.numel() * model.config.vocab_size
    assert half.weights * 2 == full.weights
    assert full.targets - half.targets == vocab_cells * 2
    assert half.rank_cache == 0 < full.rank_cache
    assert full.runtime == RUNTIME_BYTES


def test_building_the_targets_is_the_working_peak_on_a_large_vocabulary(setup) -> None:
    model, layout, tokens, _ = setup
    estimate = evaluator_memory(model, layout, dtype=torch.float32, fitness_tokens=4096, objectives=("kl",),
                                ranked=True)  # fmt: skip
    assert estimate.working >= 3 * 4096 * model.config.vocab_size * 4


def test_loading_counts_in_the_peak_only_when_it_outweighs_what_comes_after() -> None:
    after = dict(weights=100, rank_cache=20, targets=10, inputs=1, working=5, runtime=50)
    assert MemoryEstimate(**after).total == 186
    assert MemoryEstimate(**after, loading=30).total == 186  # gone before the rank cache is built
    assert MemoryEstimate(**after, loading=80).total == 231
    assert "while loading, 80 B" not in MemoryEstimate(**after, loading=80).describe()
    assert "while loading" in MemoryEstimate(**after, loading=80).describe()


def test_a_gpu_peak_is_set_against_the_gpus_part_a_cpu_peak_against_the_whole() -> None:
    estimate = MemoryEstimate(weights=100, rank_cache=20, targets=10, inputs=1, working=5, runtime=50, loading=80)
    assert estimate.on_device == 136  # the runtime and the files stay in RAM
    assert estimate.bound(on_gpu=True) == 136
    assert estimate.bound(on_gpu=False) == estimate.total == 231


def test_loading_bytes_are_the_files_only_when_they_are_converted(tmp_path) -> None:
    model = tiny_model("llama", layers=2)
    folder = tmp_path / "bf16"
    save_tiny_model(folder, model.to(torch.bfloat16))
    files = sum(path.stat().st_size for path in folder.glob("*.safetensors"))
    assert loading_bytes(str(folder), torch.float32) == files > 0
    assert loading_bytes(str(folder), torch.bfloat16) == 0


def test_describe_names_the_parts_and_the_total() -> None:
    estimate = MemoryEstimate(weights=2**30, rank_cache=2**29, targets=0, inputs=3 * 2**20, working=2**20, runtime=0)
    assert estimate.total == 2**30 + 2**29 + 4 * 2**20
    assert estimate.describe() == ("about 1.5 GiB (weights 1.0 GiB, rank cache 512.0 MiB, inputs 3.0 MiB, "
                                   "working 1.0 MiB)")  # fmt: skip
    assert format_bytes(2**31) == "2.0 GiB"


def test_tensors_of_counts_a_shared_tensor_once() -> None:
    shared = torch.zeros(4)
    assert len(tensors_of({"a": shared, "b": [shared, (torch.ones(2),)]})) == 2


def test_the_peak_grows_with_what_the_process_holds() -> None:
    before = peak_memory_bytes()
    held = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    after = peak_memory_bytes()
    assert before > 0
    assert after >= before
    assert after >= held.numel() * 4


def test_the_driver_holds_its_model_copy_and_the_statistics_pass_not_an_evaluators_caches(setup) -> None:
    model, layout, tokens, stats = setup
    shared = tensors_of([stats, tokens])
    common = dict(dtype=torch.float32, batch_tokens=tokens.numel(), shared=shared, loading=3 * 2**20)
    driver = driver_memory(model, layout, stats_tokens=tokens.numel(), **common)
    assert driver.weights == sum(p.numel() for p in model.parameters()) * 4
    assert driver.rank_cache == driver.targets == 0 and driver.inputs == _bytes(shared)
    assert driver.runtime == DRIVER_RUNTIME_BYTES > RUNTIME_BYTES
    # The statistics pass keeps every token's block inputs and outputs: more windows, more memory.
    longer = driver_memory(model, layout, stats_tokens=4 * tokens.numel(), **common)
    hidden = model.config.hidden_size
    assert longer.working - driver.working == 2 * 3 * tokens.numel() * hidden * 4
    # Loading comes before the statistics: the peak counts the larger of the two, and says so.
    assert driver.total == driver.weights + driver.inputs + driver.runtime + max(driver.loading, driver.working)
    assert driver.describe().endswith("of files instead of the working)")


def test_pruning_holds_the_model_then_the_larger_of_its_calibration_walk_and_its_evaluation(setup) -> None:
    model, layout, tokens, _ = setup
    common = dict(dtype=torch.float32, batch_tokens=tokens.numel())
    masks_only = pruning_memory(model, layout, calib_tokens=0, hessian=False, **common)
    assert masks_only.working == 0 and masks_only.runtime == COMMAND_RUNTIME_BYTES
    assert masks_only.total == masks_only.weights + COMMAND_RUNTIME_BYTES
    walk = pruning_memory(model, layout, calib_tokens=tokens.numel(), hessian=False, **common)
    solved = pruning_memory(model, layout, calib_tokens=tokens.numel(), hessian=True, **common)
    # A solver adds the Gram matrices of the block with the widest inputs, one block at a time.
    grams = max(sum(linear.in_features**2 for linear in layout.linears_of_block(block.index))
                for block in layout.blocks) * 4  # fmt: skip
    assert solved.working - walk.working == grams
    # The evaluation holds a batch's logits and one window's log-probabilities: with a large
    # enough batch it, not the walk, is the working peak.
    vocab, seqlen = model.config.vocab_size, 32
    one = pruning_memory(model, layout, calib_tokens=0, hessian=False, eval_windows=1, eval_seqlen=seqlen, **common)
    nine = pruning_memory(model, layout, calib_tokens=0, hessian=False, eval_windows=9, eval_seqlen=seqlen, **common)
    assert nine.working - one.working > 8 * seqlen * vocab * 4  # eight more windows' logits, and their activations
    both = pruning_memory(model, layout, calib_tokens=tokens.numel(), hessian=True, eval_windows=9, eval_seqlen=seqlen,
                          **common)  # fmt: skip
    assert both.working == max(solved.working, nine.working)


def test_a_process_started_from_a_large_one_reports_its_own_peak() -> None:
    import subprocess
    import sys

    held = torch.ones(256 * 2**20 // 4)  # this process holds 256 MiB more than the child will
    code = "from paretoprune.evaluators.memory import peak_memory_bytes; print(peak_memory_bytes())"
    child = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 0 < child < peak_memory_bytes() - held.numel() * 4 // 2
