"""What paretoprune costs at a real model size, measured side by side in one run on a GPU.

The check builds a model of Llama-2-7B's shape with random weights (nothing is downloaded), in
bf16 on the GPU, and measures in one process:

- a dense forward pass over the fitness tokens, 16 x 256 and 16 x 2048;
- beside it, a layerwise candidate (Wanda at new block sparsities, served by the rank cache) and
  a metric candidate (a new point of the metric family, whose scores are computed afresh);
- the activation statistics of the 16 x 256 windows;
- SparseGPT on one block: its Hessians, then the solve of each of its linears;
- the candidate evaluator's extra GPU memory over the weights;
- a small search of a few generations, driven here (no Ray: NSGA-III from pymoo when pymoo and
  optuna are installed, else random genomes, and the page says which);
- last, since it changes the weights: the whole model pruned as ``prune --device cuda`` prunes
  it (Wanda at 50 %, one-shot: the statistics walk, then every linear's mask);
- the commands' own path on the device, on a tiny model saved to disk: ``prune`` (Wanda with
  SparseGPT's update, perplexity, save) and ``eval`` of the saved model, which must agree,
  ``bench-eval`` there, the masks of UniPruning, LRP and TPLO's allocation set against the
  CPU's, and a search driver's statistics computed on the device (``--driver-device``) against
  the CPU's.

It writes README.md and gpu_check.json into ``--out`` (default results/gpu), each whole or not
at all. On a machine with a GPU::

    python scripts/gpu_check.py

It starts no step once ``--budget-s`` seconds (420) are spent, and falls back to the 1B shape
(TinyLlama-1.1B's) when the 7B shape cannot fit the GPU or the budget, saying so on the page.
Without a GPU it runs a tiny shape on the CPU in seconds: the smoke run the tests make, which
the page calls what it is. It imports torch, transformers, numpy, psutil and paretoprune's library,
never Ray, and runs from a bare checkout as well as from an installed paretoprune.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def _import_paretoprune() -> None:
    """Make ``paretoprune`` importable from this checkout when it is not installed.

    The installed package maps the checkout's metrics/, evaluators/ and search/ folders into
    its namespace; a bare checkout (a GPU machine without network, say) gets the same by
    adding the repository root to the package's own search path.
    """
    try:
        import paretoprune.metrics  # noqa: F401
    except ModuleNotFoundError:
        sys.path.insert(0, str(REPO_ROOT))
        import paretoprune

        paretoprune.__path__.append(str(REPO_ROOT))


_import_paretoprune()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from paretoprune.candidate import Candidate  # noqa: E402
from paretoprune.evaluators.cost import median_seconds, random_candidate  # noqa: E402
from paretoprune.evaluators.fitness import CandidateEvaluator, objective_direction  # noqa: E402
from paretoprune.evaluators.memory import evaluator_memory  # noqa: E402
from paretoprune.evaluators.stats import ChannelStats, collect_stats, walk_blocks  # noqa: E402
from paretoprune.io import atomic_write_text  # noqa: E402
from paretoprune.metrics.scores import SCORING_RULES  # noqa: E402
from paretoprune.metrics.sparsegpt import sparsegpt_prune  # noqa: E402
from paretoprune.models import ModelLayout, find_layout, model_bytes  # noqa: E402
from paretoprune.pruning import prune_model, uniform_sparsities  # noqa: E402
from paretoprune.search.space import SearchSpace, SpaceConfig  # noqa: E402

FORMAT = "paretoprune.gpu_check/v1"
JSON_FILE = "gpu_check.json"
README_FILE = "README.md"
DTYPE = torch.bfloat16
OBJECTIVES = ("kl", "sparsity")
SPARSITY = 0.6  # the mean sparsity of the timed candidates (as bench-eval's)
SPARSEGPT_SPARSITY = 0.5
SEARCH_RANGE = (0.4, 0.7)  # the search trades kl against a target sparsity in this range, as the demo
# Seconds kept back for writing the page once the steps are done.
WRITING_RESERVE_S = 5.0
# (step, its seconds) compared with the dense forward of the first token set on the page.
RATIOS_TO_FIRST_FORWARD = (
    ("statistics", "statistics_s"),
    ("sparsegpt_block", "hessian_s"),
    ("sparsegpt_block", "solve_s"),
    ("search", "per_evaluation_s"),
    ("prune", "prune_s"),
)


# ------------------------------------------------------------------------------------------------
# Model shapes


@dataclass(frozen=True)
class Shape:
    """A Llama-family shape, and how much the check runs at it."""

    key: str  # what --shape names it
    name: str  # whose shape it is
    hidden: int
    blocks: int
    intermediate: int
    vocabulary: int
    heads: int
    kv_heads: int
    # Fitness token sets, (sequences, length) each; the first also feeds the statistics,
    # SparseGPT's Hessians and the search.
    token_sets: tuple[tuple[int, int], ...]
    pop: int  # the search's candidates per generation
    generations: int
    repeats: int  # timed rounds of forward, layerwise and metric candidate

    def config(self) -> Any:
        from transformers import LlamaConfig

        return LlamaConfig(
            hidden_size=self.hidden, num_hidden_layers=self.blocks, intermediate_size=self.intermediate,
            vocab_size=self.vocabulary, num_attention_heads=self.heads, num_key_value_heads=self.kv_heads,
            max_position_embeddings=max(length for _, length in self.token_sets), tie_word_embeddings=False,
        )  # fmt: skip

    @property
    def prunable_parameters(self) -> int:
        """Weights of the blocks' linears: attention (q, k, v, o) and MLP (gate, up, down)."""
        kv_width = self.hidden // self.heads * self.kv_heads
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * kv_width
        return self.blocks * (attention + 3 * self.hidden * self.intermediate)

    @property
    def parameters(self) -> int:
        """All parameters: the linears, the embeddings and the output head, and the norms."""
        return self.prunable_parameters + 2 * self.vocabulary * self.hidden + (2 * self.blocks + 1) * self.hidden

    def describe(self) -> str:
        return (f"hidden {self.hidden}, {self.blocks} blocks, intermediate {self.intermediate}, "
                f"vocabulary {self.vocabulary}")  # fmt: skip


SHAPES = {
    "7b": Shape("7b", "Llama-2-7B", 4096, 32, 11008, 32000, 32, 32, ((16, 256), (16, 2048)), 12, 4, 3),
    "1b": Shape("1b", "TinyLlama-1.1B", 2048, 22, 5632, 32000, 32, 4, ((16, 256), (16, 2048)), 12, 4, 3),
    "tiny": Shape("tiny", "a tiny Llama", 64, 2, 128, 320, 4, 2, ((4, 32), (4, 128)), 4, 2, 2),
}
FALLBACK = "1b"


def memory_needed(shape: Shape) -> int:
    """A rough peak of the run in bytes: bf16 weights, the rank cache (2 bytes a prunable
    weight), and for the longest token set the four [tokens x vocabulary] fp32 tensors alive
    while the evaluator builds its targets (logits, log-probabilities, probabilities, their
    product)."""
    tokens = max(sequences * length for sequences, length in shape.token_sets)
    return 2 * shape.parameters + 2 * shape.prunable_parameters + 4 * 4 * tokens * shape.vocabulary


def forwards_planned(shape: Shape) -> float:
    """Roughly how many dense forwards over the first token set the whole check costs.

    An evaluation round is about a forward, a layerwise candidate (1.5) and a metric candidate
    (3); a longer token set costs its share of tokens, a quarter more for attention. The
    statistics, SparseGPT's block and the pruning of the whole model add about nine.
    """
    (sequences, length), *longer = shape.token_sets
    per_set = 3 + shape.repeats * 5.5
    scale = sum(1.25 * s * n / (sequences * length) for s, n in longer)
    return per_set * (1 + scale) + 1.5 * shape.pop * shape.generations + 9


def short_of_memory(shape: Shape, free_bytes: int | None) -> str | None:
    """Why ``shape`` cannot run in ``free_bytes`` of GPU memory; None when it can, or on a CPU
    (None free bytes), or when it is already the smallest fallback."""
    needed = memory_needed(shape)
    if free_bytes is None or shape.key in (FALLBACK, "tiny") or needed <= free_bytes:
        return None
    return f"{shape.name}'s shape needs about {_gib(needed)} of GPU memory and {_gib(free_bytes)} is free"


def short_of_time(shape: Shape, elapsed_s: float, forward_s: float, budget_s: float) -> str | None:
    """Why the whole check at ``shape`` would overrun the budget, given one dense forward's
    seconds; None when it would not."""
    projected = elapsed_s + forward_s * forwards_planned(shape)
    if shape.key in (FALLBACK, "tiny") or projected <= budget_s:
        return None
    return f"{shape.name}'s shape would take about {projected:.0f} s of a {budget_s:.0f} s budget"


# ------------------------------------------------------------------------------------------------
# Time and memory


@dataclass
class Clock:
    started: float = field(default_factory=time.monotonic)
    budget_s: float = 420.0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.budget_s - WRITING_RESERVE_S - self.elapsed()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, action: Callable[[], Any]) -> tuple[Any, float]:
    """What ``action`` returns, and the seconds it took with the device's queue drained."""
    synchronize(device)
    started = time.perf_counter()
    value = action()
    synchronize(device)
    return value, time.perf_counter() - started


class DeviceMemory:
    """Bytes allocated on a GPU, and the peak since the last reset; None on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.overall_peak = 0

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    def allocated(self) -> int | None:
        return torch.cuda.memory_allocated(self.device) if self.on_gpu else None

    def peak(self) -> int | None:
        return torch.cuda.max_memory_allocated(self.device) if self.on_gpu else None

    def reset_peak(self) -> None:
        if self.on_gpu:
            self.overall_peak = max(self.overall_peak, torch.cuda.max_memory_allocated(self.device))
            torch.cuda.reset_peak_memory_stats(self.device)

    def free(self) -> int | None:
        return torch.cuda.mem_get_info(self.device)[0] if self.on_gpu else None

    def release(self) -> None:
        gc.collect()
        if self.on_gpu:
            torch.cuda.empty_cache()


def _difference(after: int | None, before: int | None) -> int | None:
    return None if after is None or before is None else after - before


# ------------------------------------------------------------------------------------------------
# The model and its tokens


def build_model(shape: Shape, device: torch.device) -> nn.Module:
    """Random weights of ``shape`` in bf16, created on ``device`` itself (no fp32 copy on the host)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with device:
        model = AutoModelForCausalLM.from_config(shape.config(), dtype=DTYPE)
    if next(model.parameters()).dtype != DTYPE:  # transformers before 4.56 read torch_dtype, not dtype
        model.to(DTYPE)
    return model.eval()


def random_tokens(shape: Shape, sequences: int, length: int, device: torch.device) -> torch.Tensor:
    """Token ids drawn uniformly: random weights make any text as good as another."""
    generator = torch.Generator().manual_seed(sequences * 100_003 + length)
    return torch.randint(0, shape.vocabulary, (sequences, length), generator=generator).to(device)


# The ways to prune whose scores or allocation come from the whole model rather than one
# linear's statistics (gradients, relevance, truth probes): their device paths are checked apart,
# each as ``prune --method ... [--allocation ...]``.
WHOLE_MODEL_PATHS: dict[str, dict[str, str]] = {
    "unipruning": {"method": "unipruning"},
    "lrp": {"method": "lrp"},
    "tplo": {"method": "wanda", "allocation": "tplo"},
}


@contextlib.contextmanager
def cache_folder(folder: Path) -> Iterator[None]:
    """paretoprune's cache (``PARETOPRUNE_CACHE``) in ``folder`` for the duration."""
    before = os.environ.get("PARETOPRUNE_CACHE")
    os.environ["PARETOPRUNE_CACHE"] = str(folder)
    try:
        yield
    finally:
        if before is None:
            del os.environ["PARETOPRUNE_CACHE"]
        else:
            os.environ["PARETOPRUNE_CACHE"] = before


def mask_agreement(model_dir: Path, out: Path, options: dict[str, str], device: str) -> float:
    """The share of prunable weights that ``prune`` with ``options`` keeps or drops alike on
    ``device`` and on the CPU, from a model on disk (1.0 on the CPU itself). Each run has a score
    cache of its own, so that the CPU's run computes its scores rather than read the device's."""
    from paretoprune.models import load_model
    from paretoprune.testing import write_statement_sets
    from paretoprune.workflows import AfterPruning, CalibrationOptions, PruneConfig, prune

    truth_dir = str(write_statement_sets(out / "statements")) if options.get("allocation") == "tplo" else None

    def kept_on(where: str, folder: Path) -> dict[str, torch.Tensor]:
        with cache_folder(folder.with_name(folder.name + "-cache")):
            prune(PruneConfig(model=str(model_dir), sparsity=0.5, device=where, progress=False, truth_dir=truth_dir,
                              calibration=CalibrationOptions(calib="builtin", nsamples=4, seqlen=64),
                              after=AfterPruning(save=folder), **options))  # fmt: skip
        pruned = load_model(str(folder), dtype="float32").model
        return {linear.name: linear.module.weight != 0 for linear in find_layout(pruned).linears}

    here, on_cpu = kept_on(device, out / "device"), kept_on("cpu", out / "cpu")
    same = sum(int((here[name] == kept).sum()) for name, kept in on_cpu.items())
    return same / sum(kept.numel() for kept in on_cpu.values())


def set_label(tokens: torch.Tensor) -> str:
    return f"{tokens.shape[0]}x{tokens.shape[1]}"


# ------------------------------------------------------------------------------------------------
# The check


@dataclass
class CheckOptions:
    device: torch.device
    shape: str  # a key of SHAPES
    budget_s: float
    out: Path
    command: str  # as the user ran it, for the page


class GpuCheck:
    """Builds the model, runs each step while the budget lasts, and collects the report."""

    def __init__(self, options: CheckOptions) -> None:
        self.options, self.device = options, options.device
        self.clock = Clock(budget_s=options.budget_s)
        self.memory = DeviceMemory(self.device)
        self.measurements: dict[str, dict[str, Any]] = {}
        self.skipped: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self.stats: dict[str, ChannelStats] | None = None
        self.evaluator: CandidateEvaluator | None = None
        self.rng = np.random.default_rng(0)
        self.shape, self.fallback = self._fitting_shape(SHAPES[options.shape])
        self.model, self.build_s = self._build(self.shape)
        self._fall_back_if_too_slow()
        self.layout: ModelLayout = find_layout(self.model)
        self.token_sets = [random_tokens(self.shape, s, n, self.device) for s, n in self.shape.token_sets]

    # -- choosing the shape -----------------------------------------------------------------

    def _fitting_shape(self, asked: Shape) -> tuple[Shape, str | None]:
        """``asked``, or the fallback shape with the reason when the GPU has too little memory."""
        reason = short_of_memory(asked, self.memory.free())
        return (asked, None) if reason is None else (SHAPES[FALLBACK], reason)

    def _build(self, shape: Shape) -> tuple[nn.Module, float]:
        model, seconds = timed(self.device, lambda: build_model(shape, self.device))
        return model, seconds

    def _fall_back_if_too_slow(self) -> None:
        """Time one dense forward; when the plan would overrun the budget, rebuild at the 1B shape."""
        if self.shape.key in (FALLBACK, "tiny"):
            return
        sequences, length = self.shape.token_sets[0]
        tokens = random_tokens(self.shape, sequences, length, self.device)
        self._forward(tokens)  # the first call pays for kernel choices
        _, seconds = timed(self.device, lambda: self._forward(tokens))
        reason = short_of_time(self.shape, self.clock.elapsed(), seconds, self.options.budget_s)
        if reason is None:
            return
        self.fallback = reason
        del self.model
        self.memory.release()
        self.shape = SHAPES[FALLBACK]
        self.model, self.build_s = self._build(self.shape)

    # -- running ----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Every step in order, each only while the budget lasts; the report as plain data."""
        first, *longer = self.token_sets
        self._step("statistics", lambda: self.measure_statistics(first))
        self._step(f"evaluation_{set_label(first)}", lambda: self.measure_evaluation(first, keep=True))
        self._step("search", self.measure_search)
        self._close_evaluator()
        for tokens in longer:
            self._step(f"evaluation_{set_label(tokens)}", lambda tokens=tokens: self.measure_evaluation(tokens))
            self._close_evaluator()
        self._step("sparsegpt_block", lambda: self.measure_sparsegpt_block(first))
        self._step("prune", lambda: self.measure_prune(first))  # last: it prunes the model
        self._step("commands", self.measure_commands)
        return self.report()

    def _step(self, name: str, action: Callable[[], dict[str, Any]]) -> None:
        """Run one measurement; a spent budget skips it, and a failure is recorded, not raised,
        so that one out-of-memory step still leaves a page with the others."""
        if self.clock.left() <= 0:
            self.skipped[name] = f"the {self.options.budget_s:.0f} s budget was spent"
            return
        self.memory.reset_peak()
        try:
            measured = action()
        except (RuntimeError, ValueError) as error:  # torch's out-of-memory error is a RuntimeError
            self.errors[name] = f"{type(error).__name__}: {_first_line(error)}"
            self._close_evaluator()
            return
        measured["peak_device_bytes"] = self.memory.peak()
        self.measurements[name] = measured

    def _forward(self, tokens: torch.Tensor) -> None:
        with torch.inference_mode():
            self.model(input_ids=tokens, use_cache=False)

    def _close_evaluator(self) -> None:
        if self.evaluator is not None:
            self.evaluator.close()
            self.evaluator = None
        self.memory.release()

    # -- the measurements -------------------------------------------------------------------

    def measure_statistics(self, tokens: torch.Tensor) -> dict[str, Any]:
        """The pruning statistics of the first token set, as a search gathers them once."""
        self.stats, seconds = timed(self.device, lambda: collect_stats(self.model, self.layout, tokens))
        return {"tokens": int(tokens.numel()), "statistics_s": seconds}

    def measure_evaluation(self, tokens: torch.Tensor, keep: bool = False) -> dict[str, Any]:
        """Build an evaluator on ``tokens``, measure its memory, then time a dense forward, a
        layerwise and a metric candidate round-robin (medians). ``keep`` leaves the evaluator
        for the search."""
        if self.stats is None:
            raise RuntimeError("the statistics step did not run: no evaluator can be built")
        before = self.memory.allocated()
        self.evaluator, build_s = timed(self.device, lambda: CandidateEvaluator(
            self.model, self.layout, self.stats, tokens, objectives=OBJECTIVES, rank_metric=SCORING_RULES["wanda"],
        ))  # fmt: skip
        resident, build_peak = self.memory.allocated(), self.memory.peak()
        self.memory.reset_peak()
        for kind in ("layerwise", "metric"):  # one of each, also the warm-up of the timing
            self.evaluator.evaluate(self._candidate(kind))
        evaluate_peak = self.memory.peak()
        evaluator = self.evaluator
        calls = {
            "forward": lambda: self._forward(tokens),
            "layerwise": lambda: evaluator.evaluate(self._candidate("layerwise")),
            "metric": lambda: evaluator.evaluate(self._candidate("metric")),
        }
        medians = median_seconds(calls, self.shape.repeats, warm_up=("forward",), device=self.device)
        measured = {
            "tokens": int(tokens.numel()), "forward_s": medians["forward"], "layerwise_s": medians["layerwise"],
            "metric_s": medians["metric"], "layerwise_ratio": medians["layerwise"] / medians["forward"],
            "metric_ratio": medians["metric"] / medians["forward"], "evaluator_build_s": build_s,
            "evaluator_resident_bytes": evaluator.resident_bytes(),
            "device_resident_bytes": _difference(resident, before),
            "device_build_peak_bytes": _difference(build_peak, before),
            "device_evaluate_peak_bytes": _difference(evaluate_peak, before),
            "estimated_extra_bytes": self._estimated_extra(tokens),
        }  # fmt: skip
        if not keep:
            self._close_evaluator()
        return measured

    def _estimated_extra(self, tokens: torch.Tensor) -> int:
        """What a search's memory check estimates an evaluator needs beyond the weights on the
        GPU: the rank cache, the dense targets and the larger of their build and a candidate."""
        estimate = evaluator_memory(self.model, self.layout, dtype=DTYPE, fitness_tokens=int(tokens.numel()),
                                    objectives=OBJECTIVES, ranked=True)  # fmt: skip
        return estimate.rank_cache + estimate.targets + estimate.working

    def _candidate(self, kind: str) -> Candidate:
        return random_candidate(self.layout, kind, SPARSITY, self.rng)

    def measure_search(self) -> dict[str, Any]:
        """A few generations of a layerwise search over a sparsity range, on the first token
        set's evaluator, driven here: ask, decode, evaluate, tell."""
        if self.evaluator is None:
            raise RuntimeError("the first evaluation step did not run: the search has no evaluator")
        evaluator = self.evaluator
        space = SearchSpace(self.layout, SpaceConfig(mode="layerwise", sparsity=None, sparsity_range=SEARCH_RANGE))
        algorithm, name = search_algorithm(space, self.shape)
        results: list[dict[str, float]] = []
        started = time.perf_counter()
        for _ in range(self.shape.generations):
            if self.clock.left() <= 0:
                break
            genomes = algorithm.ask()
            scored = [evaluator.evaluate(space.decode(genome)) for genome in genomes]
            algorithm.tell(genomes, minimised(scored))
            results += scored
        seconds = time.perf_counter() - started
        return {
            "algorithm": name, "pop": self.shape.pop, "generations": algorithm.generation,
            "evaluations": len(results), "search_s": seconds, "per_evaluation_s": seconds / max(len(results), 1),
            "best_kl": min(result["kl"] for result in results) if results else None,
            "front_members": int(non_dominated(minimised(results)).sum()) if results else 0,
        }  # fmt: skip

    def measure_sparsegpt_block(self, tokens: torch.Tensor) -> dict[str, Any]:
        """Block 0's Hessians on the first token set, then SparseGPT's solve of each of its
        linears (the results are dropped: the model stays dense)."""
        steps = walk_blocks(self.model, self.layout, tokens, hessian=True, propagate="dense")
        step, hessian_s = timed(self.device, lambda: next(steps))
        steps.close()
        solves = [
            timed(self.device, lambda linear=linear: sparsegpt_prune(
                linear.weight_matrix().float(), step.stats[linear.name].hessian(), SPARSEGPT_SPARSITY))[1]
            for linear in step.linears
        ]  # fmt: skip
        return {
            "block": step.block.index, "linears": len(step.linears), "hessian_s": hessian_s,
            "solve_s": sum(solves), "slowest_linear_s": max(solves),
        }  # fmt: skip

    def measure_prune(self, tokens: torch.Tensor) -> dict[str, Any]:
        """The whole model pruned in place on the first token set, as ``prune --method wanda
        --sparsity 0.5 --device cuda`` prunes it: the statistics walk, then every linear's mask."""
        candidate = Candidate(metric=SCORING_RULES["wanda"],
                              sparsities=uniform_sparsities(self.layout, SPARSEGPT_SPARSITY))  # fmt: skip
        report, seconds = timed(self.device, lambda: prune_model(self.model, self.layout, candidate, tokens,
                                                                 progress=False))  # fmt: skip
        return {"tokens": int(tokens.numel()), "prune_s": seconds, "sparsity": report.sparsity}

    def measure_commands(self) -> dict[str, Any]:
        """``prune``, ``eval`` and ``bench-eval`` through the code the commands call, with
        ``--device`` set to this device: loading from disk, placing, calibrating, solving, scoring
        and saving there. A tiny model, so that it costs seconds: it checks the path, it measures
        nothing at scale."""
        from paretoprune.evaluators.cost import BenchEvalConfig, bench_eval
        from paretoprune.testing import save_tiny_model, tiny_model
        from paretoprune.workflows import AfterPruning, CalibrationOptions, EvalConfig, PruneConfig, evaluate, prune

        device = "cuda" if self.device.type == "cuda" else "cpu"
        with tempfile.TemporaryDirectory() as folder:
            model_dir, saved = save_tiny_model(Path(folder) / "tiny", tiny_model("llama")), Path(folder) / "pruned"
            config = PruneConfig(
                model=str(model_dir), method="wanda", update=True, sparsity=0.5, device=device, progress=False,
                calibration=CalibrationOptions(calib="builtin", nsamples=4, seqlen=64),
                after=AfterPruning(eval="builtin", max_windows=4, save=saved),
            )  # fmt: skip
            self.memory.reset_peak()
            before = self.memory.allocated()  # the big model may still be there: count what prune adds
            pruned, prune_s = timed(self.device, lambda: prune(config))
            prune_gpu_bytes = _difference(self.memory.peak(), before)
            again = evaluate(EvalConfig(model=str(saved), data="builtin", seqlen=64, max_windows=4, device=device,
                                        progress=False))  # fmt: skip
            cost = bench_eval(BenchEvalConfig(model=str(model_dir), nsamples=2, seqlen=64, candidates=1,
                                              device=device, progress=False))  # fmt: skip
            difference = self._driver_statistics_difference(str(model_dir))
            agreement = {name: mask_agreement(model_dir, Path(folder) / name, options, device)
                         for name, options in WHOLE_MODEL_PATHS.items()}  # fmt: skip
        return {"device": device, "prune_s": prune_s, "sparsity": pruned.sparsity, "perplexity": pruned.perplexity,
                "reloaded_perplexity": again.perplexity, "bench_eval_device": cost.device,
                "prune_gpu_bytes": prune_gpu_bytes,
                "prune_gpu_estimate": pruned.memory["bound"] if self.memory.on_gpu else None,
                "driver_statistics_difference": difference, "mask_agreement": agreement}  # fmt: skip

    def _driver_statistics_difference(self, model_dir: str) -> float:
        """The largest relative difference of a channel's input norm between the statistics a
        search driver computes on this device (its copy in RAM, each block visiting the device)
        and those it computes on the CPU."""
        from paretoprune.data import calibration_windows
        from paretoprune.models import load_model

        loaded = load_model(model_dir, dtype="float32")
        layout = find_layout(loaded.model)
        tokens = calibration_windows(loaded.tokenizer, "builtin", 4, 64, 0)
        on_cpu = collect_stats(loaded.model, layout, tokens)
        here = collect_stats(loaded.model, layout, tokens, compute_device=self.device)
        return max(float(((here[name].act_norm - stat.act_norm).abs() / stat.act_norm.clamp_min(1e-12)).max())
                   for name, stat in on_cpu.items())  # fmt: skip

    # -- the report -------------------------------------------------------------------------

    def _add_ratios(self) -> None:
        """Each step's seconds over the dense forward of the first token set, the tokens the
        statistics, the Hessians and the search read (the evaluations carry their own)."""
        first = self.measurements.get(f"evaluation_{set_label(self.token_sets[0])}")
        if first is None:
            return
        for name, key in RATIOS_TO_FIRST_FORWARD:
            measured = self.measurements.get(name)
            if measured is not None:
                measured[key.removesuffix("_s") + "_ratio"] = measured[key] / first["forward_s"]

    def report(self) -> dict[str, Any]:
        self.memory.reset_peak()  # folds the last step's peak into the overall one
        self._add_ratios()
        return {
            "format": FORMAT,
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": self.options.command,
            "device": describe_device(self.device),
            "shape": {"asked": self.options.shape, "used": self.shape.key, "name": self.shape.name,
                      "described": self.shape.describe(), "fallback": self.fallback},  # fmt: skip
            "dtype": str(DTYPE).removeprefix("torch."),
            "model": {"parameters": sum(p.numel() for p in self.model.parameters()),
                      "weight_bytes": model_bytes(self.model), "build_s": self.build_s},  # fmt: skip
            "budget_s": self.options.budget_s,
            "elapsed_s": self.clock.elapsed(),
            "peak_device_bytes": self.memory.overall_peak if self.memory.on_gpu else None,
            "measurements": self.measurements,
            "skipped": self.skipped,
            "errors": self.errors,
        }


# ------------------------------------------------------------------------------------------------
# The search's pieces


class RandomGenomes:
    """The search's stand-in where pymoo or optuna is missing: the space's baselines first,
    then uniform genomes in its box, repaired. It learns nothing; it costs what a search costs."""

    def __init__(self, space: SearchSpace, pop: int, seed: int = 0) -> None:
        self.space, self.pop = space, pop
        self.rng = np.random.default_rng(seed)
        self.generation = 0

    def ask(self) -> np.ndarray:
        lower, upper = self.space.bounds
        genomes = self.rng.uniform(lower, upper, size=(self.pop, len(lower)))
        if self.generation == 0:
            baselines = list(self.space.baselines().values())[: self.pop]
            genomes[: len(baselines)] = baselines
        return self.space.repair(genomes)

    def tell(self, genomes: np.ndarray, objectives: np.ndarray) -> None:
        self.generation += 1


def search_algorithm(space: SearchSpace, shape: Shape) -> tuple[Any, str]:
    """pymoo's NSGA-III as the search runs it, or random genomes where its libraries are missing."""
    try:
        from paretoprune.search.algorithms import make_algorithm
    except ImportError as error:  # the algorithms import pymoo and optuna
        return RandomGenomes(space, shape.pop), f"random genomes ({error.name} is not installed)"
    lower, upper = space.bounds
    algorithm = make_algorithm(
        "pymoo", n_var=space.n_var, xl=lower, xu=upper, n_obj=len(OBJECTIVES), pop_size=shape.pop,
        repair=space.repair, initial=np.stack(list(space.baselines().values())),
    )  # fmt: skip
    return algorithm, "pymoo NSGA-III"


def minimised(results: list[dict[str, float]]) -> np.ndarray:
    """Objective values as an algorithm minimises them: maximised ones change sign."""
    signs = np.array([-1.0 if objective_direction(name) == "maximize" else 1.0 for name in OBJECTIVES])
    return np.array([[result[name] for name in OBJECTIVES] for result in results], dtype=float) * signs


def non_dominated(values: np.ndarray) -> np.ndarray:
    """Which rows no other row dominates (all values minimised)."""
    dominated = [bool(np.any(np.all(values <= row, axis=1) & np.any(values < row, axis=1))) for row in values]
    return ~np.array(dominated, dtype=bool)


# ------------------------------------------------------------------------------------------------
# The page


def describe_device(device: torch.device) -> dict[str, Any]:
    import transformers

    described: dict[str, Any] = {
        "kind": device.type, "torch": torch.__version__, "transformers": transformers.__version__,
        "threads": torch.get_num_threads(), "fp32_matmul_precision": torch.get_float32_matmul_precision(),
    }  # fmt: skip
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        described |= {"name": properties.name, "memory_bytes": properties.total_memory, "cuda": torch.version.cuda}
    else:
        described |= {"name": platform.processor() or platform.machine(), "memory_bytes": None, "cuda": None}
    return described


def readme(report: dict[str, Any]) -> str:
    """The page for people: what ran where, each measurement beside the dense forward."""
    device, shape = report["device"], report["shape"]
    lines = [f"# GPU check: paretoprune at {shape['name']}'s shape", ""]
    if device["kind"] != "cuda":
        lines += ["**CPU smoke run, not a GPU result**: it shows that the check runs, not what a GPU costs.", ""]
    if shape["fallback"]:
        lines += [f"**Fell back from the {shape['asked']} shape to {shape['name']}'s**: {shape['fallback']}.", ""]
    lines += [
        f"Run on {device['name']} ({_device_line(device)}) on {report['when']}, "
        f"in {report['elapsed_s']:.0f} s of a {report['budget_s']:.0f} s budget:",
        "",
        "```",
        report["command"],
        "```",
        "",
        f"Model: random weights of {shape['name']}'s shape ({shape['described']}), "
        f"{_count(report['model']['parameters'])} parameters in {report['dtype']}, "
        f"{_gib(report['model']['weight_bytes'])}, built in {report['model']['build_s']:.1f} s.",
        "",
        *_timing_table(report["measurements"]),
        "",
        *_memory_table(report),
        *_left_out(report),
    ]
    return "\n".join(lines) + "\n"


def _device_line(device: dict[str, Any]) -> str:
    parts = [f"torch {device['torch']}", f"transformers {device['transformers']}"]
    if device["cuda"]:
        parts.insert(0, f"{_gib(device['memory_bytes'])}, CUDA {device['cuda']}")
    else:
        parts.append(f"{device['threads']} threads")
    return ", ".join(parts)


def _timing_table(measurements: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| measurement | seconds | x dense forward of the same tokens |", "|---|---:|---:|"]
    for name, measured in measurements.items():
        lines += [f"| {label} | {seconds:.4g} | {_ratio(ratio)} |" for label, seconds, ratio in _rows(name, measured)]
    return lines


def _rows(name: str, measured: dict[str, Any]) -> Iterator[tuple[str, float, float | None]]:
    """(label, seconds, ratio to the dense forward of the same tokens) of one measurement."""
    if name.startswith("evaluation_"):
        tokens = name.removeprefix("evaluation_").replace("x", " x ")
        yield f"dense forward, {tokens} tokens", measured["forward_s"], 1.0
        yield f"layerwise candidate, {tokens}", measured["layerwise_s"], measured["layerwise_ratio"]
        yield f"metric candidate, {tokens}", measured["metric_s"], measured["metric_ratio"]
        yield f"evaluator set-up (dense targets, rank cache), {tokens}", measured["evaluator_build_s"], None
    elif name == "statistics":
        label = f"statistics collection, {measured['tokens']} tokens"
        yield label, measured["statistics_s"], measured.get("statistics_ratio")
    elif name == "sparsegpt_block":
        yield f"SparseGPT Hessians of block {measured['block']}", measured["hessian_s"], measured.get("hessian_ratio")
        yield (f"SparseGPT solve of block {measured['block']} ({measured['linears']} linears)",
               measured["solve_s"], measured.get("solve_ratio"))  # fmt: skip
    elif name == "prune":
        label = f"prune the whole model, Wanda at {measured['sparsity']:.0%}, {measured['tokens']} calibration tokens"
        yield label, measured["prune_s"], measured.get("prune_ratio")
    elif name == "commands":
        label = (f"prune --device {measured['device']} (tiny model from disk; perplexity {measured['perplexity']:.4g}, "
                 f"{measured['reloaded_perplexity']:.4g} by eval of the saved model; bench-eval ran on "
                 f"{measured.get('bench_eval_device', 'an unrecorded device')}; driver statistics on the "
                 f"device within {measured['driver_statistics_difference']:.1e} of the CPU's"
                 f"{_agreement_text(measured.get('mask_agreement', {}))}"
                 f"{_prune_memory_text(measured)})")  # fmt: skip
        yield label, measured["prune_s"], None
    elif name == "search":
        yield (f"search, per evaluation ({measured['evaluations']} evaluations: pop {measured['pop']} x "
               f"{measured['generations']} generations, {measured['algorithm']})",
               measured["per_evaluation_s"], measured.get("per_evaluation_ratio"))  # fmt: skip


def _agreement_text(agreement: dict[str, float]) -> str:
    """``; masks of unipruning, lrp as the CPU's on 99.8%, 100.0% of the weights`` (nothing when not measured)."""
    if not agreement:
        return ""
    shares = ", ".join(f"{share:.1%}" for share in agreement.values())
    return f"; masks of {', '.join(agreement)} as the CPU's on {shares} of the weights"


def _prune_memory_text(measured: dict[str, Any]) -> str:
    """``; prune's GPU peak 12.0 MiB, estimated 20.0 MiB`` (nothing on a CPU: its peak is the process's)."""
    peak, estimate = measured.get("prune_gpu_bytes"), measured.get("prune_gpu_estimate")
    if peak is None or estimate is None:
        return ""
    return f"; prune's GPU peak {_gib(peak)}, estimated {_gib(estimate)}"


def _memory_table(report: dict[str, Any]) -> list[str]:
    weights = f"| weights ({report['dtype']}) | {_gib(report['model']['weight_bytes'])} |"
    lines = ["| memory | size |", "|---|---:|", weights]
    for name, measured in report["measurements"].items():
        if not name.startswith("evaluation_"):
            continue
        tokens = name.removeprefix("evaluation_").replace("x", " x ")
        lines.append(f"| evaluator's own tensors (targets, rank cache, norms), {tokens} | "
                     f"{_gib(measured['evaluator_resident_bytes'])} |")  # fmt: skip
        for key, label in (("device_resident_bytes", "GPU memory the evaluator holds beyond the weights"),
                           ("device_build_peak_bytes", "peak beyond the weights while it is built"),
                           ("device_evaluate_peak_bytes", "peak beyond the weights while it scores"),
                           ("estimated_extra_bytes", "the memory check's estimate beyond the weights")):  # fmt: skip
            if measured.get(key) is not None:
                lines.append(f"| {label}, {tokens} | {_gib(measured[key])} |")
    if report["peak_device_bytes"] is not None:
        peak = _gib(report["peak_device_bytes"])
        lines.append(f"| peak allocated over the run (torch.cuda.max_memory_allocated) | {peak} |")
    return lines


def _left_out(report: dict[str, Any]) -> list[str]:
    lines = []
    for name, reason in report["skipped"].items():
        lines.append(f"- {name} skipped: {reason}")
    for name, error in report["errors"].items():
        lines.append(f"- {name} failed: {error}")
    return ["", "Not measured:", "", *lines] if lines else []


def _count(number: int) -> str:
    for scale, suffix in ((1e9, " B"), (1e6, " M"), (1e3, " k")):
        if number >= scale:
            return f"{number / scale:.2f}{suffix}"
    return str(number)


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _gib(size: int | None) -> str:
    if size is None:
        return "n/a"
    return f"{size / 2**30:.2f} GiB" if abs(size) >= 2**30 else f"{size / 2**20:.1f} MiB"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def write_report(report: dict[str, Any], out: Path) -> None:
    atomic_write_text(out / JSON_FILE, json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / README_FILE, readme(report))


# ------------------------------------------------------------------------------------------------
# The command


def parse_options(argv: list[str]) -> CheckOptions:
    has_gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if has_gpu else "cpu")
    parser.add_argument("--shape", choices=tuple(SHAPES), help="default: 7b on a GPU, tiny on a CPU")
    parser.add_argument("--budget-s", type=float, default=420.0, help="no step starts after this many seconds")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "gpu", help="folder for the page")
    parsed = parser.parse_args(argv)
    if parsed.device == "cuda" and not has_gpu:
        parser.error("--device cuda: no GPU is visible to torch")
    shape = parsed.shape or ("7b" if parsed.device == "cuda" else "tiny")
    command = shlex.join(["python", "scripts/gpu_check.py", "--device", parsed.device, "--shape", shape,
                          "--budget-s", f"{parsed.budget_s:g}", "--out", _shown(parsed.out)])  # fmt: skip
    return CheckOptions(torch.device(parsed.device), shape, parsed.budget_s, parsed.out, command)


def _shown(path: Path) -> str:
    """A path as the page shows it: relative to the checkout when inside it, so that the page
    names no machine's folders."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    """Run the check and write the page; 1 when a step failed (the page says which)."""
    options = parse_options(sys.argv[1:] if argv is None else argv)
    report = GpuCheck(options).run()
    write_report(report, options.out)
    print(f"wrote {options.out / README_FILE} and {options.out / JSON_FILE} "
          f"({report['shape']['name']} on {report['device']['name']}, {report['elapsed_s']:.0f} s)")  # fmt: skip
    for name, error in report["errors"].items():
        print(f"{name} failed: {error}", file=sys.stderr)
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
