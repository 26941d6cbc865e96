"""Where an evaluator's model goes, and whether it fits there, decided before loading it.

A search on a large model fails in the worst way when a worker runs out of memory: minutes
into start-up, deep inside torch, on a remote node. This module answers the question first,
from what is on disk (safetensors headers, a GGUF tensor table, a config), so that a model
that cannot fit a worker fails at once with one line that says what to change.

It also places a loaded model on the GPUs Ray gave an actor: the whole model on one GPU, or,
with ``--gpus-per-worker`` above 1, its decoder blocks spread over them (the embeddings, the
final norm and the output head stay on the first GPU, so inputs and outputs live there).

Sizes are those of the model as paretoprune loads it: every parameter in the dtype it runs in
(``--dtype``; see :func:`paretoprune.models.model_dtype`), whatever dtype its files hold.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from dataclasses import replace
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from paretoprune.errors import InputError
from paretoprune.evaluators.memory import format_bytes
from paretoprune.evaluators.stats import ChannelStats
from paretoprune.models import (
    LoadedModel,
    ModelLayout,
    checkpoint_dtype,
    find_layout,
    load_model,
    model_dtype,
    model_source,
)

__all__ = [
    "GiB",
    "assigned_gpus",
    "block_devices",
    "check_fits",
    "check_model_fits",
    "check_gpus_fit",
    "check_ram_fits",
    "count_parameters",
    "estimate_model_bytes",
    "gpu_share_bytes",
    "load_on_device",
    "loading_bytes",
    "place_model",
    "resolve_device",
    "spread_device_map",
    "stats_to_devices",
    "worker_device",
    "worker_memory_bytes",
]

logger = logging.getLogger(__name__)

GiB = 2**30
FP32_BYTES = 4

# Used only when a GGUF's tensor table cannot be read. Its files hold 0.5 (Q4) to 2 (F16) bytes
# per weight, so a file holds at least half as many weights as it has bytes (exactly half for
# F16, more when quantized): counted so, the memory check stays a floor (only a rare F32 GGUF
# would be overestimated).
_GGUF_WEIGHTS_PER_BYTE = 0.5


# ---------------------------------------------------------------------------------------------
# How big the model is, without loading it
# ---------------------------------------------------------------------------------------------


def estimate_model_bytes(model_spec: str, dtype: torch.dtype = torch.float32) -> int | None:
    """Bytes the model's parameters take once loaded in ``dtype``, or None when nothing local tells.

    ``model_spec`` is what ``--model`` takes: an alias, a folder, a .gguf file or a hub id
    (counted only if it is already in the Hugging Face cache: this never downloads).
    """
    count = count_parameters(model_spec)
    if count is None:
        source = model_source(model_spec)
        if not source.is_gguf:
            return None
        count = int(source.location.stat().st_size * _GGUF_WEIGHTS_PER_BYTE)
    return count * dtype.itemsize


def count_parameters(model_spec: str) -> int | None:
    """The number of parameters of a model spec, read from files on this machine."""
    source = model_source(model_spec)  # the model adapter owns what a spec means; ask it
    if source.is_gguf:
        converted = source.converted  # a safetensors copy an earlier load made, if there is one
        if converted is not None and (converted / "config.json").exists():
            return _count_in_folder(converted)
        return _count_in_gguf(source.location)
    folder = source.location if source.is_local else _hub_cache_folder(str(source.location))
    return _count_in_folder(folder) if folder is not None else None


def loading_bytes(model_spec: str, dtype: torch.dtype) -> int:
    """Bytes of checkpoint files a process holds for a moment while it loads ``model_spec`` in ``dtype``.

    Safetensors files in the same dtype are mapped, not copied: nothing beyond the weights. In
    another dtype (bf16 files run in fp32) each tensor is converted out of the mapped files, which
    stay resident until loading ends. Pickled ``.bin`` files are read whole either way. Nothing
    local to read (a hub id not yet downloaded, a GGUF not yet converted): 0.
    """
    source = model_source(model_spec)
    folder = source.converted if source.is_gguf else (source.location if source.is_local else
                                                          _hub_cache_folder(str(source.location)))  # fmt: skip
    if folder is None or not folder.is_dir():
        return 0
    bins = sum(path.stat().st_size for path in folder.glob("*.bin"))
    converted = checkpoint_dtype(str(folder)) != dtype
    shards = sum(path.stat().st_size for path in folder.glob("*.safetensors")) if converted else 0
    return bins + shards


def _hub_cache_folder(repo_id: str) -> Path | None:
    """The snapshot folder of a hub model already in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # not a valid repo id, or no hub library: nothing local to read
        return None
    return Path(found).parent if isinstance(found, str) else None


def _count_in_folder(folder: Path) -> int | None:
    """Parameters in a save_pretrained folder: exact from safetensors headers, else from sizes."""
    shards = sorted(folder.glob("*.safetensors"))
    if shards:
        return sum(_count_in_safetensors(shard) for shard in shards)
    bins = sorted(folder.glob("*.bin"))
    if bins:
        return sum(path.stat().st_size for path in bins) // _config_dtype_bytes(folder)
    return None


def _count_in_safetensors(path: Path) -> int:
    """Elements of every tensor in a safetensors file, from its JSON header alone.

    The format starts with a little-endian u64, the header's length, then the header: a JSON
    object mapping each tensor name to its dtype, shape and offsets.
    """
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return sum(math.prod(entry["shape"]) for name, entry in header.items() if name != "__metadata__")


def _config_dtype_bytes(folder: Path) -> int:
    """Bytes per weight of the dtype a folder's config.json says its files hold (default fp32)."""
    sizes = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return FP32_BYTES
    return sizes.get(str(config.get("torch_dtype") or config.get("dtype")), FP32_BYTES)


def _count_in_gguf(path: Path) -> int | None:
    """Elements of every tensor listed in a GGUF file (memory-mapped, nothing dequantized)."""
    try:
        from gguf import GGUFReader

        return sum(int(tensor.n_elements) for tensor in GGUFReader(path).tensors)
    except Exception as error:  # an unreadable or newer file: fall back to its size
        logger.info("cannot list the tensors of %s (%s); estimating from its size", path.name, error)
        return None


# ---------------------------------------------------------------------------------------------
# How much memory a worker has
# ---------------------------------------------------------------------------------------------


def assigned_gpus() -> float:
    """The GPUs Ray gave the calling actor (0.5 for half a GPU); 0 outside a Ray actor."""
    try:
        import ray

        if not ray.is_initialized():
            return 0.0
        return float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))
    except Exception:  # not inside a Ray worker
        return 0.0


def worker_memory_bytes(gpus_per_worker: float) -> int:
    """Memory a worker can fill: its share of the visible GPUs, or the free RAM on CPU.

    Inside a Ray actor only the GPUs Ray assigned are visible (CUDA_VISIBLE_DEVICES).
    """
    if gpus_per_worker > 0 and torch.cuda.is_available():
        devices = range(torch.cuda.device_count())
        free = [torch.cuda.mem_get_info(device)[0] for device in devices]
        total = [torch.cuda.get_device_properties(device).total_memory for device in devices]
        return gpu_share_bytes(free, total, gpus_per_worker)
    import psutil

    return int(psutil.virtual_memory().available)


def gpu_share_bytes(free: Sequence[int], total: Sequence[int], gpus_per_worker: float) -> int:
    """A worker's memory on its GPUs.

    With whole GPUs it is their free memory summed. With a fraction of one GPU (workers that
    share it) it is that fraction of the GPU's total, or less if less is free.
    """
    if not free:
        return 0
    if gpus_per_worker >= 1:
        return int(sum(free))
    return int(min(free[0], total[0] * gpus_per_worker))


def check_fits(model_bytes: int, gpus_per_worker: float, available_bytes: int) -> None:
    """Raise InputError when a model's weights alone exceed a worker's memory.

    The evaluator needs more than the weights (in layerwise mode a rank cache of 2 bytes per
    prunable weight, half the fp32 weights and as much as bf16 ones; the dense targets; one
    forward's activations): passing this check is necessary, not sufficient. Failing it is certain failure, so it is
    refused before anything loads.
    """
    if model_bytes <= available_bytes:
        return
    needed, has = format_bytes(model_bytes), format_bytes(available_bytes)
    if gpus_per_worker <= 0:
        raise InputError(
            f"model needs ~{needed} but a worker has {has} of free RAM: run fewer --workers per "
            "machine, or use a machine with more RAM or GPUs (--gpus-per-worker 1)"
        )
    if gpus_per_worker < 1:
        advice = "give each worker a whole GPU (--gpus-per-worker 1 or more)"
    else:
        advice = f"raise --gpus-per-worker to {_gpus_needed(model_bytes, gpus_per_worker, available_bytes)}"
    raise InputError(
        f"model needs ~{needed} but a worker has {has} ({gpus_per_worker:g} GPU): {advice} or use a larger GPU"
    )


def _gpus_needed(model_bytes: int, gpus_per_worker: float, available_bytes: int) -> int:
    """Whole GPUs like the worker's that would hold ``model_bytes``."""
    per_gpu = available_bytes / gpus_per_worker
    return math.ceil(model_bytes / per_gpu) if per_gpu > 0 else math.floor(gpus_per_worker) + 1


def check_model_fits(
    model_spec: str, gpus_per_worker: float | None = None, dtype: torch.dtype = torch.float32
) -> int | None:
    """Check, before loading, that ``model_spec`` in ``dtype`` can fit this worker; its estimated bytes.

    ``gpus_per_worker=None`` asks Ray what the calling actor was given. Unknown sizes (a hub
    id not yet downloaded) pass, with a log line.
    """
    gpus = assigned_gpus() if gpus_per_worker is None else gpus_per_worker
    model_bytes = _known_size(model_spec, dtype)
    if model_bytes is None:
        return None
    check_fits(model_bytes, gpus, worker_memory_bytes(gpus))
    return model_bytes


def _known_size(model_spec: str, dtype: torch.dtype) -> int | None:
    """:func:`estimate_model_bytes`, saying in the log when a check has nothing to go on."""
    size = estimate_model_bytes(model_spec, dtype)
    if size is None:
        logger.info("size of %s unknown before loading it: memory check skipped", model_spec)
    return size


def check_ram_fits(model_specs: Sequence[str], dtype: torch.dtype, doing: str,
                   available_bytes: int | None = None) -> int | None:  # fmt: skip
    """Check, before loading, that this process's RAM holds ``model_specs`` in ``dtype``; the bytes needed.

    For the commands that load models into their own process (``prune``, ``apply``, ``eval``, a
    search's driver). The models stay loaded together; each one, while it loads, also holds the
    checkpoint files it converts (:func:`loading_bytes`), so the peak is every model's weights
    plus the largest such moment. Like :func:`check_model_fits` it is a floor: the pruning and
    the evaluation need their working memory on top. Models of unknown size pass, with a log line.
    ``doing`` names the command in the message; ``available_bytes`` defaults to the free RAM.
    """
    weights, loading = 0, 0
    for spec in model_specs:
        size = _known_size(spec, dtype)
        if size is None:
            return None
        weights, loading = weights + size, max(loading, loading_bytes(spec, dtype))
    if available_bytes is None:
        import psutil

        available_bytes = int(psutil.virtual_memory().available)
    if weights + loading <= available_bytes:
        return weights + loading
    parts = f"{format_bytes(weights)} of weights" + (f", {format_bytes(loading)} of files while they convert"
                                                     if loading else "")  # fmt: skip
    advice = "pass --dtype bfloat16 (half the bytes), free memory" if dtype.itemsize > 2 else "free memory"
    raise InputError(
        f"{doing} needs ~{format_bytes(weights + loading)} of RAM for {', '.join(model_specs)} in "
        f"{_dtype_name(dtype)} ({parts}) but {format_bytes(available_bytes)} is free: "
        f"{advice} or use a machine with more RAM"
    )


def check_gpus_fit(model_spec: str, dtype: torch.dtype, doing: str) -> int | None:
    """Check, before loading, that the visible GPUs' free memory holds ``model_spec``'s weights in
    ``dtype`` (:func:`place_model` spreads them over all of them); the bytes, None when unknown."""
    weights = _known_size(model_spec, dtype)
    if weights is None:
        return None
    count = _visible_gpus()
    free = sum(torch.cuda.mem_get_info(device)[0] for device in range(count))
    if weights <= free:
        return weights
    advice = "pass --dtype bfloat16, " if dtype.itemsize > 2 else ""
    raise InputError(
        f"{doing} needs ~{format_bytes(weights)} of GPU memory for {model_spec} in {_dtype_name(dtype)} "
        f"but the {count} visible GPU(s) have {format_bytes(free)} free: {advice}make more GPUs visible "
        "(CUDA_VISIBLE_DEVICES) or use --device cpu"
    )


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ---------------------------------------------------------------------------------------------
# Putting a loaded model on the actor's GPUs
# ---------------------------------------------------------------------------------------------


def block_devices(block_bytes: Sequence[int], devices: int) -> list[int]:
    """A device for each decoder block: contiguous runs of about equal bytes per device.

    Contiguous, so a forward pass hops between GPUs only ``devices - 1`` times. A block goes
    to the device in whose share of the running total its middle falls.
    """
    if devices < 1:
        raise ValueError(f"devices must be at least 1, got {devices}")
    total = float(sum(block_bytes)) or 1.0
    placed, running = [], 0.0
    for size in block_bytes:
        middle = running + size / 2.0
        placed.append(min(devices - 1, int(middle / total * devices)))
        running += size
    return placed


def spread_device_map(model: nn.Module, layout: ModelLayout, devices: int) -> dict[str, int]:
    """An accelerate device map: blocks spread over ``devices`` GPUs, everything else on GPU 0.

    Keys are the blocks and each module outside them that owns a tensor (parameters, buffers,
    tied weights included), so the map covers the whole state of the model.
    """
    sizes = [sum(p.numel() * p.element_size() for p in block.module.parameters()) for block in layout.blocks]
    device_map = {block.name: device for block, device in zip(layout.blocks, block_devices(sizes, devices))}
    tensor_names = [*model.state_dict(keep_vars=True), *(name for name, _ in model.named_buffers())]
    for tensor in tensor_names:
        if not any(tensor.startswith(name + ".") for name in device_map):
            device_map.setdefault(tensor.rpartition(".")[0], 0)
    return device_map


def worker_device() -> torch.device:
    """Where :func:`place_model` will put a model: the first visible GPU, else the CPU.

    Known before loading, so that ``--dtype auto`` can be resolved for it.
    """
    return torch.device("cuda", 0) if _visible_gpus() > 0 else torch.device("cpu")


def _visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str, option: str = "--device") -> torch.device:
    """Where ``--device name`` runs a model in this process: ``cuda`` (every visible GPU, through
    :func:`place_model`), ``cpu``, or ``auto``, the GPUs when there are any. One line, naming
    ``option``, when the name is unknown or asks for GPUs that torch does not see."""
    if name not in DEVICE_CHOICES:
        raise InputError(f"unknown device {name!r} for {option}: use {', '.join(DEVICE_CHOICES)}")
    if name == "cuda" and _visible_gpus() == 0:
        raise InputError(f"{option} cuda, but torch sees no GPU here (torch.cuda.is_available() is False): "
                         f"use {option} cpu, or install a CUDA build of torch")  # fmt: skip
    if name == "auto":
        return worker_device()
    return torch.device("cuda", 0) if name == "cuda" else torch.device("cpu")


def place_model(model: nn.Module, layout: ModelLayout) -> torch.device:
    """Move the model onto the visible GPUs (spread over several if there are); the input device.

    Without a GPU the model stays where it is.
    """
    count = _visible_gpus()
    if count == 0:
        return torch.device("cpu")
    if count == 1:
        model.cuda()
        return torch.device("cuda", 0)
    from accelerate import dispatch_model

    device_map = spread_device_map(model, layout, count)
    skip = getattr(model, "_skip_keys_device_placement", None)
    dispatch_model(model, device_map=device_map, main_device=torch.device("cuda", 0), skip_keys=skip)
    logger.info("model spread over %d GPUs", count)
    return torch.device("cuda", 0)


def load_on_device(spec: str, dtype: str, device: str, doing: str, beside: Sequence[str] = ()) -> LoadedModel:
    """Load ``spec`` for the command ``doing`` on ``--device``, once it is known to fit.

    A model loads through the RAM, then moves to the GPUs (spread over all that are visible).
    On the CPU, the models of ``beside`` (``eval``'s reference, loaded next) will stay loaded
    beside it, so the RAM check counts them too: a pair that cannot fit fails before either loads.
    """
    target = resolve_device(device)
    resolved = model_dtype(spec, dtype, target)
    on_gpu = target.type == "cuda"
    check_ram_fits([spec] if on_gpu else [spec, *beside], resolved, doing)
    if on_gpu:
        check_gpus_fit(spec, resolved, doing)
    loaded = load_model(spec, dtype=resolved)
    if on_gpu:
        place_model(loaded.model, find_layout(loaded.model))
    return loaded


def stats_to_devices(stats: Mapping[str, ChannelStats], layout: ModelLayout) -> dict[str, ChannelStats]:
    """Each linear's activation statistics on the device of that linear's weight.

    The Gram matrix is left behind: the candidate evaluator does not use it. Last-token inputs
    (TRIM) and regional gradients (Wanda++'s term) travel when the statistics hold them.
    """
    devices = {linear.name: linear.module.weight.device for linear in layout.linears}
    return {name: _stats_on(stat, devices.get(name, stat.sq_sum.device)) for name, stat in stats.items()}


def _stats_on(stat: ChannelStats, device: torch.device) -> ChannelStats:
    return replace(stat, gram=None).to(device)  # the Gram matrix stays behind, never copied
