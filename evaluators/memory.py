"""How much memory one evaluator actor needs, estimated before it starts, and what it used.

The check before loading (:mod:`paretoprune.evaluators.placement`) counts the weights alone:
failing it is certain failure. An evaluator needs more than its weights. This module adds up
the rest from what the driver already knows once it has loaded the model and gathered the
inputs, so that a search can say, before any actor starts, how much each will take::

    estimate = evaluator_memory(model, layout, inputs, dtype=torch.bfloat16)
    logger.info("each evaluator needs %s", estimate.describe())

and, at the end, set it beside what the actors really used (:func:`peak_memory_bytes`, asked
inside each actor).

What the estimate counts, part by part (the names of :class:`MemoryEstimate`'s fields):

- ``weights``: every parameter in the dtype the actor runs in. The dense weights exist once:
  candidates are masks applied through parametrizations, never copies of the model.
- ``rank_cache``: in layerwise mode, each prunable weight's rank within its row under the
  fixed rule (int16 when a row has at most 32,768 weights, else int32).
- ``targets``: the dense model's outputs the objectives compare against. ``kl`` keeps the
  next-token probabilities (tokens x vocabulary, in half precision for a half-precision model)
  and ``logits_mse`` the logits (fp32); ``hidden_mse`` the final hidden states.
- ``inputs``: what travels from the driver: activation statistics (Hessians and regional
  gradients included, when a search asks for them), global score maps and the tokens.
- ``working``: the largest transient of a candidate or of start-up. Building the targets holds
  three [tokens x vocabulary] fp32 tensors at once (logits, log-probabilities, probabilities); a
  candidate holds one forward's activations, a chunk of logits with its scratch, and the
  largest linear's masked weight, scores and ranks.
- ``runtime``: Python, torch and the Ray worker themselves, a constant measured on CPU actors.
- ``loading``: while a checkpoint stored in another dtype (bf16 files run in fp32, say) is
  converted, its files are mapped beside the converted weights. That moment comes before the
  rank cache, the targets and the working memory exist, so the peak counts the larger of the two.

On a CPU actor the total is compared with its peak resident memory, on a GPU with torch's peak
allocation (which leaves out the runtime and the CUDA context).
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

import torch
from torch import nn

from paretoprune.evaluators.fitness import OBJECTIVES, split_objective
from paretoprune.models import ModelLayout

__all__ = ["COMMAND_RUNTIME_BYTES", "DRIVER_RUNTIME_BYTES", "MemoryEstimate", "RUNTIME_BYTES", "driver_memory",
           "evaluator_memory", "format_bytes", "peak_memory_bytes", "pruning_memory", "tensors_of"]

# Resident memory of an idle CPU evaluator actor before it loads a model: the Python
# interpreter, torch, transformers and Ray's worker (about 0.45 GiB measured on Linux, with
# torch 2.13 and Ray 2.5x); rounded up.
RUNTIME_BYTES = 640 * 2**20
# The same for a search's driver, which also imports pymoo, pandas and matplotlib and runs Ray's
# driver: about 0.6 GiB measured with a tiny model; rounded up as the actor's is.
DRIVER_RUNTIME_BYTES = 832 * 2**20
# The same for ``prune`` and ``apply``, one process without Ray: a tiny model's prune with
# SparseGPT's update, a perplexity and a save peaks at about 0.52 GiB, and at 0.65 GiB on the
# first run from a fresh checkout (which compiles the package's bytecode); rounded up.
COMMAND_RUNTIME_BYTES = 832 * 2**20
# The fitness forward's live activations per token, in multiples of one [token x width] fp32
# row: the residual stream and the block's input and attention output (hidden), the MLP's gate,
# up and activated product (intermediate), the query/key/value projections (hidden again).
_HIDDEN_ROWS_PER_TOKEN = 6
_INTERMEDIATE_ROWS_PER_TOKEN = 3
FP32 = 4


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one evaluator actor needs, part by part (see the module's docstring)."""

    weights: int
    rank_cache: int
    targets: int
    inputs: int
    working: int
    runtime: int
    loading: int = 0  # the checkpoint's files, held for a moment while they are converted to the run's dtype

    @property
    def total(self) -> int:
        """The peak: loading comes and goes before the rank cache, targets and working exist."""
        after_loading = self.rank_cache + self.targets + self.working
        return self.weights + self.inputs + self.runtime + max(self.loading, after_loading)

    @property
    def on_device(self) -> int:
        """The part a GPU holds, in torch's allocator: everything but the process's runtime and the
        checkpoint's files, which stay in RAM. The bound for a peak from ``torch.cuda``."""
        return self.weights + self.inputs + self.rank_cache + self.targets + self.working

    def bound(self, on_gpu: bool) -> int:
        """What a peak (see :func:`peak_memory_bytes`) is set against: the GPU's part where it was
        measured on a GPU, else the process's whole estimate."""
        return self.on_device if on_gpu else self.total

    def describe(self) -> str:
        """``about 1.3 GiB (weights 513.0 MiB, rank cache 202.5 MiB, ...)``: the parts above 0."""
        shown = [part.name for part in fields(self) if getattr(self, part.name) > 0 and part.name != "loading"]
        parts = ", ".join(f"{name.replace('_', ' ')} {format_bytes(getattr(self, name))}" for name in shown)
        if self.loading:
            later = [name.replace("_", " ") for name in ("rank_cache", "targets", "working") if name in shown]
            instead = f" instead of the {_listed(later)}" if later else ""
            parts += f"; while loading, {format_bytes(self.loading)} of files{instead}"
        return f"about {format_bytes(self.total)} ({parts})"

    def to_dict(self) -> dict[str, int]:
        return {**{part.name: getattr(self, part.name) for part in fields(self)}, "total": self.total}


def _listed(words: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def format_bytes(size: float) -> str:
    """Bytes in GiB, or MiB below one GiB (so that small models do not read as 0.0 GiB)."""
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def evaluator_memory(
    model: nn.Module,
    layout: ModelLayout,
    *,
    dtype: torch.dtype,
    fitness_tokens: int,
    objectives: Iterable[str],
    ranked: bool,
    shared: Iterable[torch.Tensor] = (),
    loading: int = 0,
    token_chunk: int = 512,
    runtime: int = RUNTIME_BYTES,
) -> MemoryEstimate:
    """What one actor running ``model`` in ``dtype`` needs to score candidates on ``fitness_tokens``.

    ``model`` may be the driver's copy in another dtype: only its shapes are read. ``ranked``:
    the actor keeps a rank cache (layerwise mode). ``shared``: the tensors every actor
    receives (statistics, score maps, tokens), counted as they are. ``loading``: the bytes
    of checkpoint files held while the model loads (:func:`~paretoprune.evaluators.placement.loading_bytes`).
    """
    vocab = int(model.config.vocab_size)
    hidden, intermediate, widest = _widths(model, layout)
    rank_bytes = 2 if widest <= 2**15 else 4
    largest = max((linear.numel for linear in layout.linears), default=0)
    bases = {split_objective(name)[0] for name in objectives}
    wanted = {OBJECTIVES[base].target for base in bases if base in OBJECTIVES}
    chunk = min(token_chunk, fitness_tokens)
    target_bytes = _target_bytes(wanted, fitness_tokens, vocab, hidden, dtype)
    build = 3 * fitness_tokens * vocab * FP32 if wanted & {"probs", "logits"} else 0
    forward = fitness_tokens * (_HIDDEN_ROWS_PER_TOKEN * hidden + _INTERMEDIATE_ROWS_PER_TOKEN * intermediate) * FP32
    candidate = forward + 2 * chunk * vocab * FP32 + largest * (2 * dtype.itemsize + FP32 + rank_bytes)
    return MemoryEstimate(
        weights=_weight_bytes(model, dtype),
        rank_cache=layout.total_numel * rank_bytes if ranked else 0,
        targets=target_bytes,
        inputs=_tensor_bytes(shared),
        working=max(build, candidate),
        runtime=runtime,
        loading=loading,
    )


def driver_memory(
    model: nn.Module,
    layout: ModelLayout,
    *,
    dtype: torch.dtype,
    stats_tokens: int,
    batch_tokens: int,
    shared: Iterable[torch.Tensor] = (),
    loading: int = 0,
    runtime: int = DRIVER_RUNTIME_BYTES,
) -> MemoryEstimate:
    """What a search's driver needs: its own copy of the model in ``dtype``, the inputs it
    gathers and ships to the actors (``shared``), and the working memory of the statistics pass.

    That pass walks the blocks one at a time over all ``stats_tokens`` at once: it holds the
    block's inputs and its dense outputs for every token, plus one batch of ``batch_tokens``
    tokens' activations and the widest linear's inputs in fp32 (what the statistics are summed
    from). The driver keeps neither a rank cache nor dense targets: the actors do. ``loading``
    as in :func:`evaluator_memory`.
    """
    return MemoryEstimate(
        weights=_weight_bytes(model, dtype),
        rank_cache=0,
        targets=0,
        inputs=_tensor_bytes(shared),
        working=_statistics_pass(model, layout, dtype, stats_tokens, batch_tokens),
        runtime=runtime,
        loading=loading,
    )


def pruning_memory(
    model: nn.Module,
    layout: ModelLayout,
    *,
    dtype: torch.dtype,
    calib_tokens: int,
    batch_tokens: int,
    hessian: bool,
    eval_windows: int = 0,
    eval_seqlen: int = 0,
    loading: int = 0,
    runtime: int = COMMAND_RUNTIME_BYTES,
) -> MemoryEstimate:
    """What ``prune`` or ``apply`` needs: the model in ``dtype``, then the larger of its pruning
    pass and its evaluation.

    The pruning pass walks the blocks over all ``calib_tokens`` (0: a rule that reads no data),
    as the driver's statistics pass does, holding one block's statistics at a time: with
    ``hessian`` (SparseGPT, its update and the other solvers) the Gram matrices of the block whose
    linears' are largest, plus a solve's fp32 copy, scores and mask of the largest linear. The
    evaluation (``eval_windows`` windows of ``eval_seqlen`` tokens a forward; 0: none) holds the
    batch's logits in ``dtype``, one window's fp32 log-probabilities and one forward's activations.
    """
    hidden, intermediate, _ = _widths(model, layout)
    calibration = 0
    if calib_tokens:
        grams = max((sum(linear.in_features**2 for linear in layout.linears_of_block(block.index))
                     for block in layout.blocks), default=0) * FP32 if hessian else 0  # fmt: skip
        largest = max((linear.numel for linear in layout.linears), default=0)
        calibration = _statistics_pass(model, layout, dtype, calib_tokens, batch_tokens) + grams + 3 * largest * FP32
    evaluation = 0
    if eval_windows:
        vocab, tokens = int(model.config.vocab_size), eval_windows * eval_seqlen
        activations = tokens * (_HIDDEN_ROWS_PER_TOKEN * hidden + _INTERMEDIATE_ROWS_PER_TOKEN * intermediate) * FP32
        evaluation = tokens * vocab * dtype.itemsize + eval_seqlen * vocab * FP32 + activations
    return MemoryEstimate(
        weights=_weight_bytes(model, dtype),
        rank_cache=0,
        targets=0,
        inputs=calib_tokens * 8,  # the windows' token ids (int64)
        working=max(calibration, evaluation),
        runtime=runtime,
        loading=loading,
    )


def _statistics_pass(model: nn.Module, layout: ModelLayout, dtype: torch.dtype, tokens: int, batch_tokens: int) -> int:
    """A walk over the blocks on ``tokens`` tokens at once: every token's block inputs and dense
    outputs in ``dtype``, plus one batch's activations and the widest linear's inputs in fp32
    (what the statistics are summed from)."""
    hidden, intermediate, widest = _widths(model, layout)
    streams = 2 * tokens * hidden * dtype.itemsize
    batch = batch_tokens * (_HIDDEN_ROWS_PER_TOKEN * hidden + _INTERMEDIATE_ROWS_PER_TOKEN * intermediate + widest)
    return streams + batch * FP32


def _widths(model: nn.Module, layout: ModelLayout) -> tuple[int, int, int]:
    """The residual width, the MLP's width and the widest prunable linear's input."""
    hidden = int(model.config.hidden_size)
    intermediate = int(getattr(model.config, "intermediate_size", None) or 4 * hidden)
    widest = max((linear.in_features for linear in layout.linears), default=1)
    return hidden, intermediate, widest


def _weight_bytes(model: nn.Module, dtype: torch.dtype) -> int:
    return sum(parameter.numel() for parameter in model.parameters()) * dtype.itemsize


def _tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def _target_bytes(wanted: set[str], tokens: int, vocab: int, hidden: int, dtype: torch.dtype) -> int:
    """The dense targets the objectives keep (search/fitness.py's ``_Reference``)."""
    half = dtype if dtype in (torch.bfloat16, torch.float16) else torch.float32
    size = 0
    if "probs" in wanted:
        size += tokens * vocab * half.itemsize + tokens * FP32  # probabilities and neg-entropies
    if "logits" in wanted:
        size += tokens * vocab * FP32
    if "hidden" in wanted:
        size += tokens * hidden * FP32
    return size


def tensors_of(values: Mapping[str, object] | Iterable[object]) -> list[torch.Tensor]:
    """Every tensor inside a nest of mappings, sequences and dataclasses (each counted once)."""
    found: dict[int, torch.Tensor] = {}
    stack = [values]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            found.setdefault(id(item), item)
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif hasattr(item, "__dataclass_fields__"):
            stack.extend(getattr(item, name) for name in item.__dataclass_fields__)
    return list(found.values())


def peak_memory_bytes(device: torch.device | None = None) -> int:
    """The calling process's peak: torch's peak allocation on a GPU, else its peak resident set."""
    if device is not None and device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    high_water = _high_water_mark()
    if high_water is not None:
        return high_water
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def _high_water_mark() -> int | None:
    """Linux's peak resident set of this process image (VmHWM), or None elsewhere.

    ``ru_maxrss`` is not enough on Linux: it survives ``exec``, so a process started from a
    large one (a search launched by a test runner, a notebook) reports its parent's size at
    the fork. VmHWM starts again with the new image.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError):
        return None
    return None
