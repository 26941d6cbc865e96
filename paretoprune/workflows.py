"""End-to-end workflows behind the command line, usable from Python as they are.

Each workflow takes a small config dataclass, does the whole job (load, calibrate, prune,
evaluate, save) and returns a result dataclass; the command line only parses and prints.
``prune`` and ``apply`` share two parts of their configs: the calibration they prune with
(:class:`CalibrationOptions`) and what happens to the pruned model (:class:`AfterPruning`).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from paretoprune.candidate import Candidate
from paretoprune.data import calibration_windows, evaluation_windows
from paretoprune.errors import InputError
from paretoprune.evaluators.perplexity import perplexity
from paretoprune.evaluators.memory import MemoryEstimate, format_bytes, peak_memory_bytes, pruning_memory
from paretoprune.evaluators.placement import load_on_device, loading_bytes, resolve_device
from paretoprune.evaluators.stats import collect_stats
from paretoprune import capabilities
from paretoprune.capabilities import (
    GENERATED_TASKS,
    PASSKEY_TASK,
    PasskeyOptions,
    TestTimeOptions,
    TruthProbeOptions,
    check_truth_probe,
)
from paretoprune.evaluators.runtime_pruning import check_ratio, context_length
from paretoprune.evaluators.zeroshot_tasks import TASKS
from paretoprune.global_scores import GLOBAL_SCORES, cached_score_map, unipruning_settings
from paretoprune.metrics.masks import parse_structure
from paretoprune.metrics.row_allocation import ROW_ALLOCATIONS
from paretoprune.metrics.solvers import check_chain, parse_chain
from paretoprune.metrics.scores import SCORING_RULES, MetricSpec
from paretoprune.models import (
    LoadedModel,
    ModelLayout,
    check_context,
    check_dtype,
    find_layout,
    fingerprint,
    read_config,
)
from paretoprune.pruning import LAYER_ALLOCATIONS, PruneReport, layer_sparsities, prune_model
from paretoprune.recipe import Recipe, load_recipe, recipe_yaml

if TYPE_CHECKING:
    from paretoprune.search.validation import Choice

__all__ = [
    "AfterPruning",
    "ApplyConfig",
    "CalibrationOptions",
    "EvalConfig",
    "EvalResult",
    "ExportResult",
    "PruneConfig",
    "PruneResult",
    "TaskOptions",
    "apply",
    "apply_recipe",
    "evaluate",
    "export",
    "prune",
    "save_model",
]

logger = logging.getLogger(__name__)

# SparseGPT is no scoring rule: it chooses its masks while it updates the weights.
MASK_SOLVERS = ("sparsegpt",)


def prune_methods() -> tuple[str, ...]:
    """What ``prune --method`` accepts: every registered scoring rule, the global ones, then SparseGPT."""
    return (*SCORING_RULES.names(), *GLOBAL_SCORES.names(), *MASK_SOLVERS)


def apply_pruners() -> tuple[str, ...]:
    """What ``apply --pruner`` accepts: the recipe's own rule, or any pruning method."""
    return ("recipe", *prune_methods())


@dataclass
class TaskOptions:
    """Zero-shot accuracy after pruning (the lm-evaluation-harness protocol, local files)."""

    tasks: tuple[str, ...] = ()  # e.g. ("arc_easy", "piqa"); empty: no zero-shot evaluation
    task_dir: Path | None = None  # folder with the task files; default $PARETOPRUNE_TASK_DIR
    limit: int | None = None  # at most this many examples per task (a fixed, seeded subset)
    # Leave out the calibration part a task-aware search used (same fraction and split seed).
    calib_fraction: float = 0.0
    split_seed: int = 0


@dataclass
class CalibrationOptions:
    """The text a pruner calibrates on (activation norms, SparseGPT's Hessians, OWL's outliers)."""

    calib: str = "builtin"  # a file, builtin, wikitext2, c4 or ptb
    nsamples: int = 128  # calibration windows
    seqlen: int = 2048  # tokens per window (of calibration and of evaluation)
    seed: int = 0  # picks the calibration windows
    sequential: bool = False  # calibrate each block on the pruned blocks' outputs


@dataclass
class AfterPruning:
    """What happens to the pruned model: scores on text and tasks, and a saved copy."""

    eval: str | None = None  # text source for perplexity after pruning
    max_windows: int | None = None  # cap on evaluation windows (CPU budgets)
    tasks: TaskOptions = field(default_factory=TaskOptions)  # zero-shot accuracy after pruning
    save: Path | None = None  # folder for the pruned model (safetensors + tokenizer)


@dataclass
class PruneConfig:
    model: str  # alias, folder, .gguf file or hub id
    method: str = "wanda"  # a registered scoring rule (magnitude, wanda, ria, ...) or sparsegpt
    update: bool = False  # the same as adding "update" to the solvers (kept for older scripts)
    solver: str | None = None  # layer solvers after the mask, in order, e.g. "fw,update"
    rows: str = "uniform"  # a registered row allocation (uniform, trim)
    sparsity: float | None = None  # fraction of weights pruned (unstructured)
    structure: str | None = None  # "N:M" instead of a sparsity
    allocation: str = "uniform"  # a registered layer allocation (uniform, owl, tplo, ...)
    truth_dir: Path | None = None  # true/false statement sets for tplo (default $PARETOPRUNE_TRUTH_DIR)
    calibration: CalibrationOptions = field(default_factory=CalibrationOptions)
    after: AfterPruning = field(default_factory=AfterPruning)
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32 (auto: the checkpoint's on a GPU, fp32 on a CPU)
    device: str = "auto"  # auto | cpu | cuda (auto: every visible GPU when there are any, else the CPU)
    batch_size: int = 8  # windows per forward pass
    progress: bool = True
    # UniPruning's calibration steps and tokens per step (methods unipruning, unipruning-static);
    # None: the rule's defaults (64 and 256).
    unipruning_steps: int | None = None
    unipruning_seqlen: int | None = None


@dataclass
class PruneResult:
    sparsity: float  # achieved, weighted over the prunable parameters
    layers: dict[str, float]
    seconds: float  # the pruning itself: allocation, a global rule's scores, masks, solvers (no loading, no eval)
    perplexity: float | None = None
    tokens: int | None = None  # tokens scored by the perplexity evaluation
    saved: str | None = None
    tasks: dict[str, Any] | None = None  # zero-shot metrics per task, and their mean
    # The estimate printed before pruning (parts and total) and this process's peak, in bytes.
    memory: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sparsity": round(self.sparsity, 6), "seconds": round(self.seconds, 3)}
        if self.memory is not None:
            out["memory"] = self.memory
        if self.perplexity is not None:
            out |= {"perplexity": self.perplexity, "tokens": self.tokens}
        if self.tasks is not None:
            out["tasks"] = self.tasks
        if self.saved is not None:
            out["saved"] = self.saved
        return out


@dataclass
class EvalConfig:
    model: str
    data: str | None = None  # perplexity on this text source
    seqlen: int = 2048
    max_windows: int | None = None
    tasks: TaskOptions = field(default_factory=TaskOptions)  # "passkey" among them: see passkey
    # ACBench's diagnostics on the --data windows, against this dense reference model.
    diagnostics: bool = False
    reference: str | None = None
    passkey: PasskeyOptions = field(default_factory=PasskeyOptions)  # used when tasks name passkey
    # μ-MoE test-time pruning on the --data windows and on the zero-shot tasks
    test_time: TestTimeOptions | None = None
    truth_probe: TruthProbeOptions | None = None  # truth probes at the pivot block (dense: --reference)
    dtype: str = "auto"  # of --model and --reference (auto: the checkpoint's on a GPU, fp32 on a CPU)
    device: str = "auto"  # auto | cpu | cuda, for both models
    batch_size: int = 8
    progress: bool = True


@dataclass
class EvalResult:
    perplexity: float | None = None
    tokens: int | None = None
    windows: int | None = None
    tasks: dict[str, Any] | None = None
    diagnostics: dict[str, float] | None = None
    passkey: dict[str, Any] | None = None
    test_time: dict[str, Any] | None = None
    truth_probe: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.perplexity is not None:
            out |= {"perplexity": self.perplexity, "tokens": self.tokens, "windows": self.windows}
        for key in ("tasks", "diagnostics", "passkey", "test_time", "truth_probe"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def check_prune_config(config: PruneConfig) -> None:
    """Fail fast, before any model is loaded, on options that cannot work together."""
    if config.method not in prune_methods():
        raise InputError(f"unknown method {config.method!r} for --method: choose one of {', '.join(prune_methods())}")
    check_dtype(config.dtype)
    resolve_device(config.device)
    LAYER_ALLOCATIONS.lookup(config.allocation)
    if (config.sparsity is None) == (config.structure is None):
        raise InputError("give exactly one of --sparsity S (e.g. 0.5) or --structure N:M (e.g. 2:4)")
    if config.sparsity is not None and not 0.0 <= config.sparsity < 1.0:
        raise InputError(f"sparsity {config.sparsity} is out of range: use a value in [0, 1), e.g. 0.5")
    if config.structure is not None:
        parse_structure(config.structure)
    if config.calibration.nsamples <= 0 or config.calibration.seqlen <= 1:
        raise InputError("--nsamples must be positive and --seqlen at least 2")
    _check_update(solver_chain(config.update, config.solver), config.method)
    ROW_ALLOCATIONS.lookup(config.rows)
    unipruning_settings(config.method, config.unipruning_steps, config.unipruning_seqlen)
    if LAYER_ALLOCATIONS.lookup(config.allocation).needs_truth:
        from paretoprune.truth import load_statements, truth_dir

        load_statements(truth_dir(config.truth_dir))  # a missing or broken folder fails before the model loads


def solver_chain(update: bool, solver: str | None) -> tuple[str, ...]:
    """``--solver fw`` with ``--update`` -> ("fw", "update"): the update goes last."""
    chain = parse_chain(solver)
    return check_chain(chain + ("update",)) if update and "update" not in chain else chain


def _pruner_needs_data(method: str, chain: tuple[str, ...], rows: str, recipe_metric: MetricSpec | None = None) -> bool:
    """Whether pruning with ``method`` (or the recipe's own rule), its solvers and its row
    allocation reads calibration windows."""
    if method in MASK_SOLVERS or method in GLOBAL_SCORES or chain or ROW_ALLOCATIONS.lookup(rows).needs_inputs:
        return True
    metric = recipe_metric if method == "recipe" else SCORING_RULES.lookup(method)
    return metric is not None and metric.uses_activations


def _check_update(chain: tuple[str, ...], pruner: str) -> None:
    if chain and pruner in MASK_SOLVERS:
        raise InputError(f"--update and --solver go with a scoring rule (recipe, {', '.join(SCORING_RULES)}): "
                         "sparsegpt already updates the weights it keeps")  # fmt: skip


def prune(config: PruneConfig) -> PruneResult:
    check_prune_config(config)
    task_dir = _task_dir(config.after.tasks)
    chain = solver_chain(config.update, config.solver)
    needs_tokens = (
        _pruner_needs_data(config.method, chain, config.rows)
        or LAYER_ALLOCATIONS.lookup(config.allocation).reads_calibration
    )
    if needs_tokens or config.after.eval is not None:
        _check_seqlen(config.model, config.calibration.seqlen)
    loaded = load_on_device(config.model, config.dtype, config.device, "prune")
    model, layout = loaded.model, find_layout(loaded.model)
    tokens = _calibration_windows(loaded, config.calibration) if needs_tokens else None
    estimate = _pruning_memory(loaded, config, tokens, hessian=config.method in MASK_SOLVERS or bool(chain),
                               doing="prune")  # fmt: skip
    started = time.perf_counter()  # the allocation and a global rule's scores count as pruning
    candidate = replace(_candidate(config, layout, model, tokens, loaded.tokenizer), rows=config.rows, solvers=chain)
    scores = _global_scores(config, loaded, layout, tokens)
    report = prune_model(
        model,
        layout,
        candidate,
        tokens,
        method="sparsegpt" if config.method in MASK_SOLVERS else "metric",
        sequential=config.calibration.sequential,
        batch_size=config.batch_size,
        progress=config.progress,
        scores=scores,
    )
    report = replace(report, seconds=time.perf_counter() - started)
    return _after_pruning(loaded, report, config, task_dir, estimate=estimate)


def _global_scores(
    config: PruneConfig, loaded: LoadedModel, layout: ModelLayout, tokens: torch.Tensor | None
) -> dict[str, torch.Tensor] | None:
    """The score map of a global scoring rule (UniPruning, LRP) on the dense model, else None."""
    settings = unipruning_settings(config.method, config.unipruning_steps, config.unipruning_seqlen)
    return _global_score_map(config.method, loaded.model, layout, tokens, config.model, config.calibration.seed,
                             config.progress, settings)  # fmt: skip


def _global_score_map(
    method: str | None, model: torch.nn.Module, layout: ModelLayout, tokens: torch.Tensor | None, model_id: str,
    seed: int, progress: bool, settings: dict[str, int] | None = None,
) -> dict[str, torch.Tensor] | None:  # fmt: skip
    """``prune --method`` and ``apply --pruner`` alike: a global rule's scores (cached under the
    user's cache folder, keyed on its ``settings`` too), computed before any weight changes; None
    for every other pruner."""
    if method not in GLOBAL_SCORES:
        return None
    if tokens is None:
        raise InputError(f"{method} scores the model on calibration windows: pass calibration tokens (--calib SRC)")
    return cached_score_map(method, model, layout, tokens, model_id=model_id, seed=seed, progress=progress,
                            settings=settings)  # fmt: skip


def _calibration_windows(loaded: LoadedModel, options: CalibrationOptions) -> torch.Tensor:
    return calibration_windows(loaded.tokenizer, options.calib, options.nsamples, options.seqlen, options.seed)


def _check_seqlen(model: str, seqlen: int) -> None:
    """Refuse, before the weights load, windows longer than the model's context.

    Called only where the windows are really built: a magnitude pruning without evaluation
    never uses ``--seqlen``, so its default must not stop a model with a short context.
    """
    check_context(read_config(model), {"--seqlen": seqlen})


def _after_pruning(
    loaded: LoadedModel,
    report: PruneReport,
    config: PruneConfig | ApplyConfig,
    task_dir: Path | None,
    extra_files: dict[str, str] | None = None,
    estimate: MemoryEstimate | None = None,
) -> PruneResult:
    """Evaluate (perplexity, zero-shot tasks) and save a freshly pruned model, as asked; then
    set this process's peak memory beside the ``estimate`` printed before pruning."""
    after = config.after
    result = PruneResult(sparsity=report.sparsity, layers=report.layers, seconds=report.seconds)
    if after.eval is not None:
        scored = _perplexity(loaded, after.eval, config.calibration.seqlen, after.max_windows,
                             config.batch_size, config.progress)  # fmt: skip
        result.perplexity, result.tokens = scored.perplexity, scored.tokens
    result.tasks = _zero_shot(loaded, after.tasks, task_dir, config.batch_size, config.progress)
    if after.save is not None:
        result.saved = str(save_model(loaded, after.save, extra_files))
    if estimate is not None:
        result.memory = _memory_record(estimate, next(loaded.model.parameters()).device)
    return result


def _pruning_memory(loaded: LoadedModel, config: PruneConfig | ApplyConfig, tokens: torch.Tensor | None,
                    hessian: bool, doing: str) -> MemoryEstimate:  # fmt: skip
    """What pruning and evaluating ``loaded`` will need, printed before it starts."""
    model = loaded.model
    dtype = next(model.parameters()).dtype
    window = config.calibration.seqlen
    estimate = pruning_memory(
        model, find_layout(model), dtype=dtype, calib_tokens=0 if tokens is None else tokens.numel(),
        batch_tokens=min(config.batch_size, config.calibration.nsamples) * window, hessian=hessian,
        eval_windows=config.batch_size if config.after.eval is not None else 0, eval_seqlen=window,
        loading=loading_bytes(config.model, dtype),
    )  # fmt: skip
    if config.progress:
        tqdm.write(f"memory check: {doing} needs {estimate.describe()}", file=sys.stderr)
    return estimate


def _memory_record(estimate: MemoryEstimate, device: torch.device) -> dict[str, Any]:
    """The estimate beside this process's peak: its resident set on a CPU, set against the whole
    estimate; torch's allocation on a GPU, set against the GPU's part (``bound``). A peak above
    its bound is logged, so that the estimate can be corrected."""
    peak, bound = peak_memory_bytes(device), estimate.bound(on_gpu=device.type == "cuda")
    if peak > bound:
        logger.warning("memory: peak %s on %s is above the estimated %s", format_bytes(peak), device,
                       format_bytes(bound))  # fmt: skip
    return {"estimate": estimate.to_dict(), "peak": peak, "device": str(device), "bound": bound}


def _candidate(
    config: PruneConfig, layout: ModelLayout, model: torch.nn.Module, tokens: torch.Tensor | None, tokenizer: Any = None
) -> Candidate:
    # A mask solver or a global rule brings its own scores; the metric is then only a label.
    metric = SCORING_RULES.get(config.method, SCORING_RULES["magnitude"])
    if config.structure is not None:
        nm = parse_structure(config.structure)
        assert nm is not None
        sparsities = {name: 1.0 - nm[0] / nm[1] for name in layout.names}
        return Candidate(metric=metric, sparsities=sparsities, structure=config.structure)
    assert config.sparsity is not None
    stats = None
    if LAYER_ALLOCATIONS.lookup(config.allocation).needs_stats:
        assert tokens is not None
        stats = collect_stats(model, layout, tokens, batch_size=config.batch_size)
    sparsities = layer_sparsities(layout, config.sparsity, config.allocation, stats, model=model,
                                  tokenizer=tokenizer, truth_dir=config.truth_dir, tokens=tokens)  # fmt: skip
    return Candidate(metric=metric, sparsities=sparsities)


def evaluate(config: EvalConfig) -> EvalResult:
    _check_eval_config(config)
    zero_shot = replace(config.tasks, tasks=tuple(t for t in config.tasks.tasks if t != PASSKEY_TASK))
    task_dir = _task_dir(zero_shot)
    if config.data is not None:  # zero-shot tasks read whole examples, not --seqlen windows
        _check_seqlen(config.model, config.seqlen)
    compared = config.reference is not None and (config.diagnostics or config.truth_probe is not None)
    beside = [config.reference] if compared and config.reference is not None else []
    loaded = load_on_device(config.model, config.dtype, config.device, "eval", beside=beside)
    reference = _reference(config) if compared else None
    result = EvalResult()
    if config.data is not None:
        result = _perplexity(loaded, config.data, config.seqlen, config.max_windows, config.batch_size,
                             config.progress)  # fmt: skip
        windows = evaluation_windows(loaded.tokenizer, config.data, config.seqlen, config.max_windows)
        if config.diagnostics:
            assert reference is not None
            result.diagnostics = capabilities.diagnostics(reference, loaded, windows)
        if config.test_time is not None:
            result.test_time = capabilities.test_time(loaded, windows, config.test_time)
    result.tasks = _zero_shot(loaded, zero_shot, task_dir, config.batch_size, config.progress)
    if config.test_time is not None and task_dir is not None:
        tasks = capabilities.test_time_tasks(loaded, zero_shot, task_dir, config.test_time, config.batch_size,
                                             config.progress)  # fmt: skip
        result.test_time = {**(result.test_time or capabilities.test_time_header(config.test_time)), "tasks": tasks}
    if PASSKEY_TASK in config.tasks.tasks:
        result.passkey = capabilities.passkey(loaded, config.passkey, config.progress)
    if config.truth_probe is not None:
        result.truth_probe = capabilities.truth_probe(loaded, config.truth_probe, reference)
    return result


def _check_eval_config(config: EvalConfig) -> None:
    """Fail before loading anything on options that cannot work together."""
    if config.seqlen <= 1:
        raise InputError("--seqlen must be at least 2")
    check_dtype(config.dtype)
    resolve_device(config.device)
    if config.data is None and not config.tasks.tasks and config.truth_probe is None:
        raise InputError("nothing to evaluate: give --data SRC for perplexity, --tasks T1,T2 and/or --truth-probe")
    if config.diagnostics and config.data is None:
        raise InputError("--diagnostics scores text windows: add --data SRC (e.g. --data builtin)")
    if config.diagnostics and config.reference is None:
        raise InputError("--diagnostics compares against the dense model: add --reference M (the unpruned model)")
    if config.test_time is not None:
        _check_test_time(config)
    if config.truth_probe is not None:
        check_truth_probe(config.truth_probe)
    unknown = [t for t in config.tasks.tasks if t not in GENERATED_TASKS and t not in TASKS]
    if unknown:
        raise InputError(f"unknown evaluation task {unknown[0]!r} for --tasks: choose one of "
                         f"{', '.join((*TASKS, *GENERATED_TASKS))}")  # fmt: skip


def _check_test_time(config: EvalConfig) -> None:
    """Test-time pruning scores text windows or zero-shot tasks; its ratio is in (0, 1]."""
    assert config.test_time is not None
    zero_shot = [task for task in config.tasks.tasks if task in TASKS]
    if config.data is None and not zero_shot:
        raise InputError("--test-time-prune scores text windows or zero-shot tasks: add --data SRC or --tasks T1,T2")
    check_ratio(config.test_time.ratio)
    if config.data is not None:
        context_length(config.seqlen, config.test_time.context_fraction)


def _reference(config: EvalConfig) -> LoadedModel:
    assert config.reference is not None
    return load_on_device(config.reference, config.dtype, config.device, "eval")


def _task_dir(options: TaskOptions) -> Path | None:
    if not options.tasks:
        return None
    folder = options.task_dir or os.environ.get("PARETOPRUNE_TASK_DIR")
    if folder is None:
        raise InputError("zero-shot tasks need their files: pass --task-dir DIR (or set PARETOPRUNE_TASK_DIR)")
    return Path(folder)


def _zero_shot(
    loaded: LoadedModel, options: TaskOptions, task_dir: Path | None, batch_size: int, progress: bool
) -> dict[str, Any] | None:
    if not options.tasks or task_dir is None:
        return None
    from paretoprune.evaluators.zeroshot import evaluate_tasks

    return evaluate_tasks(
        loaded.model, loaded.tokenizer, list(options.tasks), task_dir, limit=options.limit,
        batch_size=batch_size, progress=progress,
        calib_fraction=options.calib_fraction, split_seed=options.split_seed,
    )  # fmt: skip


def _perplexity(
    loaded: LoadedModel, source: str, seqlen: int, max_windows: int | None, batch_size: int, progress: bool
) -> EvalResult:
    windows = evaluation_windows(loaded.tokenizer, source, seqlen, max_windows)
    scored = perplexity(loaded.model, windows, batch_size=batch_size, progress=progress)
    return EvalResult(perplexity=scored.perplexity, tokens=scored.tokens, windows=scored.windows)


def save_model(loaded: LoadedModel, folder: Path, extra_files: dict[str, str] | None = None) -> Path:
    """save_pretrained (safetensors) and the tokenizer, written atomically into ``folder``."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise InputError(f"--save folder {folder} is not empty: choose a new folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        loaded.model.save_pretrained(staging, safe_serialization=True)
        loaded.tokenizer.save_pretrained(staging)
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text)
        if folder.exists():
            folder.rmdir()
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("saved pruned model to %s", folder)
    return folder



# ------------------------------------------------------------------------------------------------
# Recipes

def _check_pruner(pruner: str) -> None:
    if pruner not in apply_pruners():
        raise InputError(f"unknown pruner {pruner!r} for --pruner: choose one of {', '.join(apply_pruners())}")


def apply_recipe(
    model: torch.nn.Module,
    recipe: Recipe,
    calib_tokens: torch.Tensor | None = None,
    *,
    pruner: str = "recipe",
    update: bool = False,
    solver: str | None = None,
    rows: str | None = None,
    sequential: bool = False,
    force: bool = False,
    progress: bool = True,
    model_id: str = "",
    seed: int = 0,
    rule_settings: dict[str, int] | None = None,
) -> PruneReport:
    """Prune a live model in place with a recipe's per-layer sparsities; returns a PruneReport.

    ``pruner="recipe"`` uses the recipe's own rule; ``magnitude``, ``wanda`` or ``ria`` swap in
    that metric; ``sparsegpt`` reconstructs the surviving weights with SparseGPT; a global rule
    (``unipruning``, or the recipe's own ``global_rule``) scores the dense model on
    ``calib_tokens`` first (``model_id``, ``seed`` and ``rule_settings``, e.g. ``{"steps": 8}``,
    key its cache). The recipe's own row allocation and solvers apply unless ``rows`` or
    ``solver`` (a chain such as ``"fw,update"``) replace them; ``update`` appends SparseGPT's
    update to the solvers.
    """
    _check_pruner(pruner)
    started = time.perf_counter()  # a global rule's scores count as pruning
    layout = find_layout(model)
    shapes = {linear.name: (linear.out_features, linear.in_features) for linear in layout.linears}
    match = recipe.check_model(fingerprint(model), shapes, force=force)
    candidate = _applied_candidate(recipe, pruner, solver_chain(update, solver) if solver else None, rows)
    candidate = replace(candidate, sparsities=match.sparsities)
    scores = _global_score_map(candidate.global_rule, model, layout, calib_tokens, model_id, seed, progress,
                               rule_settings)  # fmt: skip
    report = prune_model(
        model, layout, candidate, calib_tokens,
        method="sparsegpt" if pruner in MASK_SOLVERS else "metric",
        update=update and not solver, sequential=sequential, progress=progress, scores=scores,
    )  # fmt: skip
    return replace(report, seconds=time.perf_counter() - started)


def _applied_candidate(recipe: Recipe, pruner: str, chain: tuple[str, ...] | None, rows: str | None) -> Candidate:
    """The recipe's candidate with the user's choices in place of its own, where given; a
    SparseGPT pruner keeps neither the recipe's solvers nor its rows (it chooses its own). Any
    pruner but the recipe's own replaces the recipe's global rule too (a global pruner by itself)."""
    candidate = recipe.to_candidate()
    if pruner != "recipe":
        candidate = replace(candidate, global_rule=pruner if pruner in GLOBAL_SCORES else None)
    if pruner in SCORING_RULES:
        candidate = replace(candidate, metric=SCORING_RULES[pruner])
    if pruner in MASK_SOLVERS:
        return replace(candidate, solvers=(), rows="uniform")
    return replace(candidate, solvers=candidate.solvers if chain is None else chain, rows=rows or candidate.rows)


@dataclass
class ApplyConfig:
    recipe: Path  # a recipe file (YAML or JSON)
    model: str  # alias, folder, .gguf file or hub id
    pruner: str = "recipe"  # the recipe's own rule, a registered scoring rule, or sparsegpt
    update: bool = False  # append SparseGPT's update to the solvers
    solver: str | None = None  # replace the recipe's solvers with this chain, e.g. "fw,update"
    rows: str | None = None  # replace the recipe's row allocation (uniform, trim)
    force: bool = False  # apply by module name to a model of another fingerprint
    calibration: CalibrationOptions = field(default_factory=CalibrationOptions)
    after: AfterPruning = field(default_factory=AfterPruning)
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32 (auto: the checkpoint's on a GPU, fp32 on a CPU)
    device: str = "auto"  # auto | cpu | cuda (auto: every visible GPU when there are any, else the CPU)
    batch_size: int = 8  # windows per forward pass
    progress: bool = True
    unipruning_steps: int | None = None  # as in PruneConfig, for --pruner unipruning(-static)
    unipruning_seqlen: int | None = None


def apply(config: ApplyConfig) -> PruneResult:
    """Load a recipe and a model, prune, evaluate and save (the saved folder keeps the recipe)."""
    recipe = load_recipe(config.recipe)
    if recipe.test_time is not None:
        return _apply_test_time(config, recipe)
    _check_pruner(config.pruner)
    check_dtype(config.dtype)
    resolve_device(config.device)
    chain = solver_chain(config.update, config.solver) if (config.solver or config.update) else None
    candidate = _applied_candidate(recipe, config.pruner, chain, config.rows)
    # The rule that scores the model: --pruner, or the recipe's own global rule.
    rule = candidate.global_rule or config.pruner
    settings = unipruning_settings(rule, config.unipruning_steps, config.unipruning_seqlen)
    if config.pruner in MASK_SOLVERS:
        _check_update(chain or (), config.pruner)
    save = config.after.save
    if save is not None and save.exists() and any(save.iterdir()):
        raise InputError(f"--save folder {save} is not empty: choose a new folder")
    task_dir = _task_dir(config.after.tasks)
    needs_tokens = _pruner_needs_data(rule, candidate.solvers, candidate.rows, recipe_metric=candidate.metric)
    if needs_tokens or config.after.eval is not None:
        _check_seqlen(config.model, config.calibration.seqlen)
    loaded = load_on_device(config.model, config.dtype, config.device, "apply")
    tokens = _calibration_windows(loaded, config.calibration) if needs_tokens else None
    hessian = config.pruner in MASK_SOLVERS or bool(candidate.solvers) or config.update
    estimate = _pruning_memory(loaded, config, tokens, hessian=hessian, doing="apply")
    report = apply_recipe(
        loaded.model, recipe, tokens, pruner=config.pruner, update=config.update, solver=config.solver,
        rows=config.rows, sequential=config.calibration.sequential, force=config.force, progress=config.progress,
        model_id=config.model, seed=config.calibration.seed, rule_settings=settings,
    )  # fmt: skip
    return _after_pruning(loaded, report, config, task_dir, {"recipe.yaml": recipe_yaml(recipe)}, estimate)


def _pruning_options(config: ApplyConfig) -> list[str]:
    """The options given that shape a pruning once and for all (pruner, solvers, rows,
    sequential calibration), by their command-line names."""
    given = {"--pruner": config.pruner != "recipe", "--solver": config.solver is not None,
             "--update": config.update, "--rows": config.rows is not None,
             "--sequential": config.calibration.sequential}  # fmt: skip
    return [option for option, set_ in given.items() if set_]


def _them(options: list[str]) -> str:
    return "it" if len(options) == 1 else "them"


def _apply_test_time(config: ApplyConfig, recipe: Recipe) -> PruneResult:
    """Evaluate a test-time recipe: its masks are made per prompt on the dense model, so there is
    nothing to prune once and nothing to save, only scores with the recipe's ratio."""
    runtime = recipe.test_time
    assert runtime is not None and runtime.ratio is not None
    if config.after.save is not None:
        raise InputError("recipe runtime.mode is test-time: its masks change with every prompt, so there is no "
                         "pruned model to save; drop --save (use --eval SRC or --eval-tasks to score it)")  # fmt: skip
    if config.after.eval is None and not config.after.tasks.tasks:
        raise InputError("a test-time recipe is evaluated, not applied: add --eval SRC and/or --eval-tasks T1,T2")
    ignored = _pruning_options(config)
    if ignored:
        raise InputError(f"recipe runtime.mode is test-time: each prompt's masks come from the recipe's own rule "
                         f"on that prompt, so {', '.join(ignored)} cannot apply; drop {_them(ignored)}")  # fmt: skip
    check_dtype(config.dtype)
    task_dir = _task_dir(config.after.tasks)
    options = TestTimeOptions(runtime.ratio, runtime.structured)
    if config.after.eval is not None:
        _check_seqlen(config.model, config.calibration.seqlen)
        context_length(config.calibration.seqlen, options.context_fraction)
    loaded = load_on_device(config.model, config.dtype, config.device, "apply")
    layout = find_layout(loaded.model)
    shapes = {linear.name: (linear.out_features, linear.in_features) for linear in layout.linears}
    recipe.check_model(fingerprint(loaded.model), shapes, force=config.force)
    result = PruneResult(sparsity=1.0 - runtime.ratio, layers={}, seconds=0.0)
    if config.after.eval is not None:
        windows = evaluation_windows(loaded.tokenizer, config.after.eval, config.calibration.seqlen,
                                     config.after.max_windows)  # fmt: skip
        scored = capabilities.test_time(loaded, windows, options)
        result.perplexity, result.tokens = scored["perplexity"], scored["scored_tokens"]
    if task_dir is not None:
        result.tasks = capabilities.test_time_tasks(loaded, config.after.tasks, task_dir, options,
                                                    config.batch_size, config.progress)  # fmt: skip
    return result


@dataclass
class ExportResult:
    path: Path
    eval_id: int  # the archive row written
    choice: Choice  # the row and how it fared against the baselines on validation


def export(run_dir: Path, fmt: str, how: str, out: Path, pruner: str | None = None,
           force_pick: bool = False) -> ExportResult:  # fmt: skip
    """Write the front member chosen by ``how`` (knee, best:OBJ, sparsity:S, index:K) as ``fmt``.

    Where the run scored its baselines on validation windows, ``best:OBJ`` exports the baseline
    instead of a searched recipe that does not beat it, unless ``force_pick``
    (see ``paretoprune.search.validation``).
    """
    from paretoprune.exporters import export_recipe
    from paretoprune.search.export import recipe_for
    from paretoprune.search.validation import choose
    from paretoprune.search.run import Run

    run = Run.open(run_dir)
    final = run.final_stage
    choice = choose(run.evaluations(), run.front(), run.objectives, how, run.baseline_ids(),
                    ranged=final.config.sparsity_range is not None, force=force_pick)  # fmt: skip
    written = export_recipe(recipe_for(run, choice.row), out, fmt, pruner=pruner)
    return ExportResult(written, int(choice.row["eval_id"]), choice)
