"""The ``paretoprune`` command: parse options, call a workflow, print the outcome.

Every command prints a human summary; with ``--json`` the last line of stdout is one JSON
object for scripts. Bad input (an :class:`InputError`) becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional

import typer

from paretoprune.errors import InputError
from paretoprune.evaluators.fitness import OBJECTIVES
from paretoprune.evaluators.memory import format_bytes
from paretoprune.evaluators.zeroshot_tasks import TASKS
from paretoprune.metrics.row_allocation import ROW_ALLOCATIONS
from paretoprune.metrics.solvers import SOLVERS
from paretoprune.pruning import LAYER_ALLOCATIONS
from paretoprune.truth import TPLO_TOPICS
from paretoprune.workflows import AfterPruning, CalibrationOptions, TaskOptions, apply_pruners, prune_methods

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Search, export and apply LLM pruning recipes (NSGA-III over metrics and layer sparsities).",
)

logger = logging.getLogger("paretoprune")

# Options shared by several commands.
ModelOpt = typer.Option(..., "--model", help="alias (smollm2-135m), folder, .gguf file or hub id")
JsonOpt = typer.Option(False, "--json", help="print one JSON object as the last line")
QuietOpt = typer.Option(False, "--quiet", "-q", help="no progress bars")
SeedOpt = typer.Option(0, "--seed", help="random seed")
DTYPE_HELP = "auto | bfloat16 | float16 | float32 (auto: the checkpoint's dtype on a GPU, float32 on a CPU)"
DtypeOpt = typer.Option("auto", "--dtype", help=DTYPE_HELP)
DEVICE_HELP = "auto | cpu | cuda (auto: every visible GPU when there are any, else the CPU)"
DeviceOpt = typer.Option("auto", "--device", help=DEVICE_HELP)
UpdateOpt = typer.Option(False, "--update", help="reconstruct the kept weights, as SparseGPT does (= --solver update)")
SolverOpt = typer.Option(None, "--solver", help=f"layer solvers after the mask, in order: comma list of {SOLVERS.choices(', ')}")
# The finalist stage of search and rescore.
FinalistsOpt = typer.Option(None, "--finalists", help="score the best N again after the search; N,M: in stages")
FinalistTokensOpt = typer.Option(None, "--finalist-tokens", help="tokens per finalist stage (default 16384)")
FinalistSolverOpt = typer.Option(
    None, "--finalist-solver", help="solvers finalists are applied with (default: their own, else update; none)"
)
# The calibration of prune and apply (CalibrationOptions).
CalibOpt = typer.Option("builtin", "--calib", help="calibration text: a file, builtin, wikitext2, c4, ptb")
NsamplesOpt = typer.Option(128, "--nsamples", help="calibration windows")
SeqlenOpt = typer.Option(2048, "--seqlen", help="tokens per window")
SequentialOpt = typer.Option(False, "--sequential", help="calibrate on pruned blocks' outputs")
# What prune and apply do with the pruned model (AfterPruning); eval reads some of them too.
EvalOpt = typer.Option(None, "--eval", help="text source for perplexity after pruning")
MaxWindowsOpt = typer.Option(None, "--max-windows", help="evaluate at most this many windows")
EvalTasksOpt = typer.Option(None, "--eval-tasks", help=f"tasks after pruning: {TASKS.choices(', ')}")
TaskDirOpt = typer.Option(None, "--task-dir", help="zero-shot task files (default $PARETOPRUNE_TASK_DIR)")
LimitOpt = typer.Option(None, "--limit", help="at most N examples per task (fixed seeded subset)")
SaveOpt = typer.Option(None, "--save", help="folder for the pruned model")
HeldOutOpt = typer.Option(
    None, "--held-out", help="FRACTION:SEED: score only what a task-aware search left out of calibration"
)
# UniPruning's calibration run (prune --method and apply --pruner unipruning, unipruning-static).
UniStepsOpt = typer.Option(None, "--unipruning-steps", help="UniPruning's calibration steps (default 64)")
UniSeqlenOpt = typer.Option(None, "--unipruning-seqlen", help="UniPruning's tokens per step (default 256)")


def _calibration_options(calib: str, nsamples: int, seqlen: int, seed: int, sequential: bool) -> CalibrationOptions:
    return CalibrationOptions(calib=calib, nsamples=nsamples, seqlen=seqlen, seed=seed, sequential=sequential)


def _after_pruning_options(
    save: Optional[Path], eval: Optional[str], max_windows: Optional[int], eval_tasks: Optional[str],
    task_dir: Optional[Path], limit: Optional[int],
) -> AfterPruning:  # fmt: skip
    return AfterPruning(eval=eval, max_windows=max_windows, tasks=_task_options(eval_tasks, task_dir, limit), save=save)


def _task_options(
    tasks: Optional[str], task_dir: Optional[Path], limit: Optional[int], held_out: Optional[str] = None
) -> TaskOptions:
    names = tuple(name.strip() for name in tasks.split(",") if name.strip()) if tasks else ()
    fraction, seed = 0.0, 0
    if held_out:
        text, _, seed_text = held_out.partition(":")
        try:
            fraction, seed = float(text), int(seed_text or 0)
        except ValueError:
            raise InputError(f"--held-out {held_out} is not understood: write FRACTION:SEED, e.g. 0.5:0") from None
    return TaskOptions(tasks=names, task_dir=task_dir, limit=limit, calib_fraction=fraction, split_seed=seed)


def _task_lines(tasks: Optional[dict]) -> list[str]:
    if not tasks:
        return []
    lines = []
    for name, metrics in tasks.get("tasks", {}).items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        lines.append(f"{name:<14} {shown}")
    if "mean_acc" in tasks:
        lines.append(f"{'mean acc':<14} {tasks['mean_acc']:.4f}")
    return lines


def _emit(summary: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    for line in lines:
        typer.echo(line)
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))


def _described(pruner: str, update: bool, solver: Optional[str]) -> str:
    """``wanda + fw,update``: the pruner and the solvers the user asked for."""
    steps = [name.strip() for name in (solver or "").split(",") if name.strip()]
    if update and "update" not in steps:
        steps.append("update")
    return pruner + (f" + {','.join(steps)}" if steps else "")


def _format_ppl(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@app.command()
def prune(
    model: str = ModelOpt,
    method: str = typer.Option("wanda", "--method", help=" | ".join(prune_methods())),
    update: bool = UpdateOpt,
    solver: Optional[str] = SolverOpt,
    rows: str = typer.Option("uniform", "--rows", help=f"row allocation: {ROW_ALLOCATIONS.choices()}"),
    sparsity: Optional[float] = typer.Option(None, "--sparsity", help="fraction pruned, e.g. 0.5"),
    structure: Optional[str] = typer.Option(None, "--structure", help="N:M, e.g. 2:4"),
    allocation: str = typer.Option("uniform", "--allocation", help=LAYER_ALLOCATIONS.choices()),
    truth_dir: Optional[Path] = typer.Option(
        None, "--truth-dir", help="true/false statement sets, for --allocation tplo (default $PARETOPRUNE_TRUTH_DIR)"
    ),
    calib: str = CalibOpt,
    nsamples: int = NsamplesOpt,
    seqlen: int = SeqlenOpt,
    seed: int = SeedOpt,
    sequential: bool = SequentialOpt,
    save: Optional[Path] = SaveOpt,
    eval: Optional[str] = EvalOpt,
    max_windows: Optional[int] = MaxWindowsOpt,
    eval_tasks: Optional[str] = EvalTasksOpt,
    task_dir: Optional[Path] = TaskDirOpt,
    limit: Optional[int] = LimitOpt,
    unipruning_steps: Optional[int] = UniStepsOpt,
    unipruning_seqlen: Optional[int] = UniSeqlenOpt,
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Prune a model with a known method and report the sparsity (and perplexity)."""
    from paretoprune.workflows import PruneConfig, prune as run

    config = PruneConfig(
        model=model, method=method, update=update, solver=solver, rows=rows, sparsity=sparsity, structure=structure,
        allocation=allocation, truth_dir=truth_dir,
        calibration=_calibration_options(calib, nsamples, seqlen, seed, sequential),
        after=_after_pruning_options(save, eval, max_windows, eval_tasks, task_dir, limit), dtype=dtype,
        device=device, progress=not quiet, unipruning_steps=unipruning_steps, unipruning_seqlen=unipruning_seqlen,
    )  # fmt: skip
    result = run(config)
    lines = [f"sparsity   {result.sparsity:.4f}  ({_described(method, update, solver)}, {structure or allocation})"]
    if result.perplexity is not None:
        lines.append(f"perplexity {_format_ppl(result.perplexity)}  ({result.tokens} tokens of {eval})")
    if result.saved:
        lines.append(f"saved      {result.saved}")
    _emit(result.summary(), as_json, lines + _task_lines(result.tasks) + _pruning_memory_lines(result.memory))


@app.command("eval")
def eval_command(
    model: str = ModelOpt,
    data: Optional[str] = typer.Option(None, "--data", help="text source for perplexity"),
    seqlen: int = SeqlenOpt,
    max_windows: Optional[int] = MaxWindowsOpt,
    tasks: Optional[str] = typer.Option(None, "--tasks", help=f"comma list of {TASKS.choices(', ')}, passkey"),
    task_dir: Optional[Path] = TaskDirOpt,
    limit: Optional[int] = LimitOpt,
    held_out: Optional[str] = HeldOutOpt,
    diagnostics: bool = typer.Option(False, "--diagnostics", help="ERank, top-k tau, energy against --reference"),
    reference: Optional[str] = typer.Option(
        None, "--reference", help="the dense model, for --diagnostics and --truth-probe"
    ),
    passkey_lengths: str = typer.Option("256,512,1024", "--passkey-lengths", help="passkey prompt lengths (tokens)"),
    passkey_depths: str = typer.Option("0,0.25,0.5,0.75,1", "--passkey-depths", help="key depths in [0, 1]"),
    passkey_trials: int = typer.Option(4, "--passkey-trials", help="prompts per length and depth"),
    passkey_filler: str = typer.Option("builtin", "--passkey-filler", help="text the key is hidden in"),
    passkey_plot: Optional[Path] = typer.Option(None, "--passkey-plot", help="heat map PNG of the passkey grid"),
    test_time_prune: Optional[float] = typer.Option(
        None, "--test-time-prune",
        help="RATIO in (0, 1]: masks per window from its first part, per question from its context (μ-MoE)",
    ),
    structured: bool = typer.Option(False, "--structured", help="test-time pruning keeps whole input channels"),
    context_fraction: float = typer.Option(0.5, "--context-fraction", help="part of a window the masks read"),
    truth_probe: bool = typer.Option(
        False, "--truth-probe", help="truth probes at the pivot block, on held-out topics and statements"
    ),
    truth_dir: Optional[Path] = typer.Option(
        None, "--truth-dir", help="true/false statement sets (default $PARETOPRUNE_TRUTH_DIR)"
    ),
    truth_topics: str = typer.Option(",".join(TPLO_TOPICS), "--truth-topics", help="statement sets the probes read"),
    truth_limit: int = typer.Option(256, "--truth-limit", help="statements per topic (seeded, balanced); 0: all"),
    dtype: str = typer.Option("auto", "--dtype", help=DTYPE_HELP + "; also of --reference"),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP + "; also of --reference"),
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Perplexity, zero-shot accuracy, passkey retrieval, diagnostics, test-time pruning and truth probes."""
    from paretoprune.capabilities import PasskeyOptions, TestTimeOptions, TruthProbeOptions
    from paretoprune.workflows import EvalConfig, evaluate

    passkey = PasskeyOptions(
        lengths=tuple(_numbers(passkey_lengths, "--passkey-lengths", int)),
        depths=tuple(_numbers(passkey_depths, "--passkey-depths", float)),
        trials=passkey_trials, filler=passkey_filler, plot=passkey_plot,
    )  # fmt: skip
    config = EvalConfig(
        model=model, data=data, seqlen=seqlen, max_windows=max_windows,
        tasks=_task_options(tasks, task_dir, limit, held_out), diagnostics=diagnostics, reference=reference,
        passkey=passkey, dtype=dtype, device=device, progress=not quiet,
        test_time=None if test_time_prune is None else TestTimeOptions(test_time_prune, structured, context_fraction),
        truth_probe=TruthProbeOptions(truth_dir, _names(truth_topics, "--truth-topics"), truth_limit or None)
        if truth_probe else None,
    )  # fmt: skip
    result = evaluate(config)
    lines = []
    if result.perplexity is not None:
        lines.append(f"perplexity {_format_ppl(result.perplexity)}  ({result.tokens} tokens, {result.windows} windows)")
    _emit(result.summary(), as_json, lines + _task_lines(result.tasks) + _capability_lines(result))


def _names(text: str, option: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise InputError(f"{option} is empty: give names separated by commas, e.g. cities,neg_cities")
    return names


def _numbers(text: str, option: str, kind: type) -> list[Any]:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(f"{option} {text} is not understood: write numbers separated by commas, e.g. 256,512") from None
    if not values:
        raise InputError(f"{option} is empty: give at least one number")
    return values


def _capability_lines(result: Any) -> list[str]:
    lines = []
    if result.diagnostics is not None:
        shown = ("diff_erank", "topk_tau_3", "topk_tau_10", "topk_tau_20", "energy_shift", "energy_w1")
        lines.append("diagnostics " + ", ".join(f"{key} {result.diagnostics[key]:.4f}" for key in shown))
    if result.passkey is not None:
        lines.append(f"passkey    {result.passkey['mean']:.3f} exact match over {len(result.passkey['lengths'])} "
                     f"lengths x {len(result.passkey['depths'])} depths")  # fmt: skip
    if result.test_time is not None:
        lines += _test_time_lines(result.test_time, result.tasks)
    if result.truth_probe is not None:
        lines += _truth_probe_lines(result.truth_probe)
    return lines


def _test_time_lines(tt: dict[str, Any], unpruned_tasks: dict[str, Any] | None) -> list[str]:
    lines = []
    if "perplexity" in tt:
        lines.append(f"test-time  ratio {tt['ratio']}: perplexity {_format_ppl(tt['perplexity'])} against "
                     f"{_format_ppl(tt['unpruned_perplexity'])} unpruned ({tt['scored_tokens']} scored tokens)")  # fmt: skip
    if "tasks" in tt:
        against = "" if unpruned_tasks is None else f" against {unpruned_tasks['mean_acc']:.4f} unpruned"
        lines.append(f"test-time  ratio {tt['ratio']}: zero-shot mean acc {tt['tasks']['mean_acc']:.4f}{against}")
    return lines


def _truth_probe_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"truth probe at block {report['pivot_block']} (peak separability of the "
             f"{'reference' if report['pivot_from'] == 'reference' else 'model'})"]  # fmt: skip
    for who in ("reference", "model"):
        if who in report:
            topics, statements = report[who]["topics"], report[who]["statements"]
            lines.append(f"  {who:<9}  held-out topics {topics['mean']:.3f}, held-out statements {statements['mean']:.3f}")
    return lines


@app.command("bench-eval")
def bench_eval_command(
    model: str = ModelOpt,
    calib: str = CalibOpt,
    nsamples: int = typer.Option(8, "--nsamples", help="fitness windows"),
    seqlen: int = typer.Option(256, "--seqlen", help="tokens per window"),
    candidates: int = typer.Option(5, "--candidates", help="timed evaluations of each kind"),
    seed: int = SeedOpt,
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Time candidate evaluations against a bare dense forward (medians, side by side)."""
    from paretoprune.evaluators.cost import BenchEvalConfig, bench_eval

    config = BenchEvalConfig(
        model=model, calib=calib, nsamples=nsamples, seqlen=seqlen, candidates=candidates,
        seed=seed, dtype=dtype, device=device, progress=not quiet,
    )  # fmt: skip
    cost = bench_eval(config)
    lines = [
        f"dense forward       {cost.forward_s:.3f} s  ({cost.tokens} tokens, {cost.dtype} on {cost.device})",
        f"layerwise candidate {cost.layerwise_s:.3f} s  ({cost.layerwise_ratio:.2f}x forward)",
        f"metric candidate    {cost.metric_s:.3f} s  ({cost.metric_ratio:.2f}x forward)",
        f"model weights       {cost.model_bytes / 2**20:.0f} MiB, evaluator extra "
        f"{cost.overhead_bytes / 2**20:.0f} MiB ({cost.overhead_bytes / cost.model_bytes:.2f}x)",
    ]
    _emit(cost.summary(), as_json, lines)


def _range(text: Optional[str]) -> Optional[tuple[float, float]]:
    if text is None:
        return None
    low, sep, high = text.partition(":")
    try:
        return (float(low), float(high)) if sep else _bad_range(text)
    except ValueError:
        return _bad_range(text)


def _bad_range(text: str) -> tuple[float, float]:
    raise InputError(f"--sparsity-range {text} is not understood: write LO:HI, e.g. 0.4:0.8")


@app.command()
def search(
    model: Optional[str] = typer.Option(None, "--model", help="alias, folder, .gguf file or hub id"),
    calib: Optional[str] = typer.Option(None, "--calib", help="calibration / fitness text"),
    nsamples: Optional[int] = typer.Option(None, "--nsamples", help="fitness windows (default 16)"),
    seqlen: Optional[int] = typer.Option(None, "--seqlen", help="tokens per window (default 256)"),
    stats_nsamples: Optional[int] = typer.Option(
        None, "--stats-nsamples", help="windows for the pruning statistics (default: --nsamples)"
    ),
    stats_seqlen: Optional[int] = typer.Option(None, "--stats-seqlen", help="their tokens (default: --seqlen)"),
    mode: Optional[str] = typer.Option(None, "--mode", help="layerwise | metric | joint"),
    base_metric: Optional[str] = typer.Option(
        None, "--base-metric",
        help="layerwise mode's scoring rule: a registered rule (default wanda) or a global rule (lrp, unipruning, ...)",
    ),  # fmt: skip
    sparsity: Optional[float] = typer.Option(None, "--sparsity", help="target sparsity"),
    sparsity_range: Optional[str] = typer.Option(None, "--sparsity-range", help="LO:HI, search the target"),
    structure: Optional[str] = typer.Option(None, "--structure", help="N:M (metric mode)"),
    objectives: Optional[str] = typer.Option(
        None, "--objectives",
        help=f"comma list of {OBJECTIVES.choices(', ')} (name@SOURCE: on other tokens); "
        "default kl, plus sparsity with --sparsity-range",
    ),  # fmt: skip
    pop: Optional[int] = typer.Option(None, "--pop", help="candidates per generation"),
    generations: Optional[int] = typer.Option(None, "--generations", help="generations in total"),
    workers: Optional[int] = typer.Option(None, "--workers", help="evaluator actors"),
    threads_per_worker: Optional[int] = typer.Option(None, "--threads-per-worker", help="torch threads each"),
    gpus_per_worker: Optional[float] = typer.Option(None, "--gpus-per-worker", help="GPUs per actor"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="join this Ray cluster (e.g. auto)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="random seed"),
    algorithm: Optional[str] = typer.Option(
        None, "--algorithm", help="pymoo | optuna | swap | sensitivity (these two: one objective) | memetic"
    ),
    mutation: Optional[str] = typer.Option(None, "--mutation", help="pymoo's children: polynomial | swap"),
    granularity: Optional[str] = typer.Option(None, "--granularity", help="layer genes: block | linear | block+kind"),
    delta: Optional[float] = typer.Option(None, "--delta", help="how far a layer may stray from the target (0.15)"),
    profile: Optional[str] = typer.Option(
        None, "--profile", help="layer genes over a --sparsity-range: fixed deviations, or scaled with the target"
    ),
    storage: Optional[str] = typer.Option(None, "--storage", help="optuna storage URL"),
    stages: Optional[str] = typer.Option(None, "--stages", help="metric,layerwise: two-stage search"),
    task_dir: Optional[str] = typer.Option(None, "--task-dir", help="task files, for objectives like kl@arc_easy"),
    task_calib_fraction: Optional[float] = typer.Option(
        None, "--task-calib-fraction", help="share of a task's examples kept for calibration (0.5)"
    ),
    truth_dir: Optional[str] = typer.Option(
        None, "--truth-dir", help="true/false statement sets, for the probe objective (default $PARETOPRUNE_TRUTH_DIR)"
    ),
    probe_split: Optional[str] = typer.Option(
        None, "--probe-split", help="the probe objective tests on held-out topics (default) or statements"
    ),
    dtype: Optional[str] = typer.Option(
        None, "--dtype", help=DTYPE_HELP + "; the driver's statistics copy is on a CPU"
    ),
    driver_device: Optional[str] = typer.Option(
        None, "--driver-device", help="cpu | cuda | auto: where the driver computes the statistics, block by block (cpu)"
    ),
    search_rows: bool = typer.Option(
        False, "--search-rows", help="the row allocation (uniform or trim) is a gene too; TRIM candidates cost more"
    ),
    search_gradient: bool = typer.Option(
        False, "--search-gradient", help="Wanda++'s gradient term is a metric gene too (metric and joint modes)"
    ),
    finalists: Optional[str] = FinalistsOpt,
    finalist_tokens: Optional[str] = FinalistTokensOpt,
    finalist_solver: Optional[str] = FinalistSolverOpt,
    config_file: Optional[Path] = typer.Option(None, "--config", help="YAML file with these settings"),
    out: Optional[str] = typer.Option(None, "--out", help="run folder"),
    resume_dir: Optional[Path] = typer.Option(None, "--resume", help="continue the run in this folder"),
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Search pruning recipes with NSGA-III; every non-dominated candidate becomes a recipe."""
    from paretoprune.search.config import load_config, read_settings
    from paretoprune.search.driver import resume, run_search

    if resume_dir is not None:
        result = resume(resume_dir, generations=generations, progress=not quiet)
    else:
        settings = read_settings(config_file) if config_file is not None else {}
        given = dict(
            model=model, calib=calib, nsamples=nsamples, seqlen=seqlen, stats_nsamples=stats_nsamples,
            stats_seqlen=stats_seqlen, mode=mode, base_metric=base_metric, sparsity=sparsity,
            sparsity_range=_range(sparsity_range), structure=structure,
            objectives=tuple(objectives.split(",")) if objectives else None, pop=pop,
            generations=generations, workers=workers, threads_per_worker=threads_per_worker,
            gpus_per_worker=gpus_per_worker, ray_address=ray_address, seed=seed, algorithm=algorithm,
            mutation=mutation, granularity=granularity, delta=delta, profile=profile, storage=storage, out=out,
            stages=tuple(stages.split(",")) if stages else None,
            task_dir=task_dir, task_calib_fraction=task_calib_fraction, truth_dir=truth_dir, probe_split=probe_split,
            dtype=dtype, driver_device=driver_device, search_rows=search_rows or None,
            search_gradient=search_gradient or None,
            finalists=_counts(finalists, "--finalists"), finalist_tokens=_counts(finalist_tokens, "--finalist-tokens"),
            finalist_solver=finalist_solver,
        )  # fmt: skip
        settings.update({key: value for key, value in given.items() if value is not None})
        result = run_search(load_config(settings), progress=not quiet)
    _print_search_result(result, as_json)


def _print_search_result(result: Any, as_json: bool) -> None:
    """The front of a search (or of its finalists), then exit 130 if it was interrupted."""
    verdict = result.validation
    validation = [verdict.line(advice=f"export --pick best:{verdict.objective}")] if verdict else []
    _print_front(result.front, result.run_dir, result.objectives, as_json, extra={
        "evaluations": result.evaluations, "recipes": [str(p) for p in result.recipes],
        "interrupted": result.interrupted, "finalists": [stage.to_dict() for stage in result.finalists],
        "validation": verdict.to_dict() if verdict else None, "against_uniform": result.uniform,
        "memory": result.memory,
    }, before=[*(_finalist_line(stage) for stage in result.finalists), *validation, *_memory_lines(result.memory)],
       after=[_uniform_line(point, result.objectives[0]) for point in result.uniform])  # fmt: skip
    if result.interrupted:
        raise typer.Exit(130)


def _pruning_memory_lines(memory: dict[str, Any] | None) -> list[str]:
    """``memory     peak 1.1 GiB, estimated 1.3 GiB`` after a prune or an apply."""
    if not memory:
        return []
    where = f" on {memory['device']}" if memory["device"] != "cpu" else ""
    return [f"memory     peak {format_bytes(memory['peak'])}{where}, estimated {format_bytes(memory['bound'])}"]


def _memory_lines(memory: dict[str, Any]) -> list[str]:
    """``evaluator memory: peak 1.1 GiB, estimated 1.3 GiB`` when the actors reported a peak,
    then the driver's line."""
    lines = []
    if memory.get("peaks"):
        peak, estimate = max(memory["peaks"]), memory.get("bound", memory["estimate"]["total"])
        where = " on its GPU" if memory.get("on_gpus") else ""
        lines.append(f"evaluator memory: peak {format_bytes(peak)}{where}, estimated {format_bytes(estimate)}")
    driver = memory.get("driver") or {}
    if driver.get("peak"):
        lines.append(f"driver memory: peak {format_bytes(driver['peak'])}, "
                     f"estimated {format_bytes(driver['estimate']['total'])}")  # fmt: skip
    return lines


def _uniform_line(point: dict[str, Any], first: str) -> str:
    """``sparsity 0.55: searched kl 0.41 (evaluation 37) vs uniform wanda 0.52 (fitness)``."""
    sparsity = f", sparsity {point['sparsity']:.3f}" if "sparsity" in point else ""
    return (f"sparsity {point['level']:.3g}: searched {first} {point[first]:.4g} (evaluation {point['eval_id']}"
            f"{sparsity}) vs {point['curve']} {point['uniform']:.4g} (fitness)")


def _finalist_line(stage: Any) -> str:
    best = ", ".join(f"{name} {value:.4g}" for name, value in stage.best.items() if name not in ("eval_id", "source_id"))
    beside = f" and {len(stage.baselines)} baselines" if stage.baselines else ""
    return (f"finalists at {stage.fidelity}: {len(stage.finalists)}{beside} ({stage.scored} scored, {stage.skipped} "
            f"already scored, {stage.failed} failed); best: evaluation {stage.best.get('source_id', 'n/a')}, "
            f"{best or 'n/a'}")


def _counts(text: Optional[str], option: str) -> Optional[tuple[int, ...]]:
    """``8,2`` -> (8, 2); one line for anything but whole numbers."""
    if text is None:
        return None
    return tuple(_numbers(text, option, int))


@app.command()
def rescore(
    run_dir: Path = typer.Argument(..., help="a search run folder"),
    finalists: str = typer.Option("8", "--finalists", help="finalists per stage, e.g. 8 or 8,2"),
    finalist_tokens: Optional[str] = FinalistTokensOpt,
    finalist_solver: Optional[str] = FinalistSolverOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Score a finished search's finalists again, on more tokens and as they will be applied."""
    from paretoprune.search.driver import rescore as run

    counts = _counts(finalists, "--finalists")
    assert counts is not None
    result = run(run_dir, counts, _counts(finalist_tokens, "--finalist-tokens"), finalist_solver, progress=not quiet)
    _print_search_result(result, as_json)


def _print_front(
    front: pd.DataFrame, run_dir: Path, objectives: Sequence[str], as_json: bool, extra: Optional[dict] = None,
    before: Sequence[str] = (), after: Sequence[str] = (),
) -> None:
    from paretoprune.search.run import FRONT_PLOT, FRONT_TABLE, RECIPES_FOLDER

    rescored = "fidelity" in front and bool((front["fidelity"] != "base").any())
    table = front[["eval_id", "generation", *objectives, *(["fidelity"] if rescored else [])]] if len(front) else front
    lines = [*before, table.to_string(index=True) if len(front) else "(empty front)"]
    lines.append(f"front: {len(front)} members; run folder {run_dir} ({FRONT_TABLE}, {FRONT_PLOT}, {RECIPES_FOLDER}/)")
    lines += after
    summary = {"run": str(run_dir), "front": table.to_dict(orient="records"), **(extra or {})}
    _emit(summary, as_json, lines)


@app.command()
def front(
    run_dir: Path = typer.Argument(..., help="a search run folder"),
    as_json: bool = JsonOpt,
) -> None:
    """Print the Pareto front of a search run (all its evaluations, not only the last generation)."""
    from paretoprune.search.run import Run

    run = Run.open(run_dir)
    _print_front(run.front(), run.final_stage.folder, run.objectives, as_json)


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="a search run folder"),
    fmt: str = typer.Option("yaml", "--format", help="yaml | json | llmcompressor | ratios"),
    how: str = typer.Option("knee", "--pick", help="knee | best:OBJ | sparsity:S | index:K"),
    out: Path = typer.Option(..., "--out", help="file to write"),
    pruner: Optional[str] = typer.Option(None, "--pruner", help="llmcompressor: sparsegpt | wanda"),
    force_pick: bool = typer.Option(
        False, "--force-pick", help="best:OBJ keeps the searched recipe even where a baseline beats it on validation"
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Export one front member of a search as a recipe file."""
    from paretoprune.workflows import export as run

    result = run(run_dir, fmt, how, out, pruner, force_pick=force_pick)
    verdict = result.choice.verdict
    summary = {"path": str(result.path), "format": fmt, "pick": how, "eval_id": result.eval_id,
               "fell_back": result.choice.fell_back, "validation": verdict.to_dict() if verdict else None}  # fmt: skip
    line = result.choice.line(forced=force_pick)
    _emit(summary, as_json, [*([line] if line else []), f"wrote {result.path} ({fmt}, {how})"])


@app.command()
def apply(
    recipe: Path = typer.Argument(..., help="a recipe file (YAML or JSON)"),
    model: str = ModelOpt,
    pruner: str = typer.Option("recipe", "--pruner", help=" | ".join(apply_pruners())),
    update: bool = UpdateOpt,
    solver: Optional[str] = typer.Option(
        None, "--solver", help=f"replace the recipe's solvers: comma list of {SOLVERS.choices(', ')}"
    ),
    rows: Optional[str] = typer.Option(None, "--rows", help=f"replace the recipe's rows: {ROW_ALLOCATIONS.choices()}"),
    force: bool = typer.Option(False, "--force", help="apply to another model by module name"),
    calib: str = CalibOpt,
    nsamples: int = NsamplesOpt,
    seqlen: int = SeqlenOpt,
    seed: int = SeedOpt,
    sequential: bool = SequentialOpt,
    save: Optional[Path] = SaveOpt,
    eval: Optional[str] = EvalOpt,
    max_windows: Optional[int] = MaxWindowsOpt,
    eval_tasks: Optional[str] = EvalTasksOpt,
    task_dir: Optional[Path] = TaskDirOpt,
    limit: Optional[int] = LimitOpt,
    unipruning_steps: Optional[int] = UniStepsOpt,
    unipruning_seqlen: Optional[int] = UniSeqlenOpt,
    dtype: str = DtypeOpt,
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Prune a model with a recipe's per-layer sparsities (its own metric, or another pruner)."""
    from paretoprune.workflows import ApplyConfig, apply as run

    config = ApplyConfig(
        recipe=recipe, model=model, pruner=pruner, update=update, solver=solver, rows=rows, force=force,
        calibration=_calibration_options(calib, nsamples, seqlen, seed, sequential),
        after=_after_pruning_options(save, eval, max_windows, eval_tasks, task_dir, limit), dtype=dtype,
        device=device, progress=not quiet, unipruning_steps=unipruning_steps, unipruning_seqlen=unipruning_seqlen,
    )  # fmt: skip
    result = run(config)
    lines = [f"sparsity   {result.sparsity:.4f}  ({recipe.name} with {_described(pruner, update, solver)})"]
    if result.perplexity is not None:
        lines.append(f"perplexity {_format_ppl(result.perplexity)}  ({result.tokens} tokens of {eval})")
    if result.saved:
        lines.append(f"saved      {result.saved}")
    _emit(result.summary(), as_json, lines + _task_lines(result.tasks) + _pruning_memory_lines(result.memory))


@app.command()
def blocks(
    as_markdown: bool = typer.Option(False, "--markdown", help="the README's tables, in Markdown"),
    as_json: bool = JsonOpt,
) -> None:
    """List the building blocks by kind: scoring rules, allocations, solvers, objectives, tasks."""
    from paretoprune.catalog import building_blocks, markdown

    if as_markdown:
        typer.echo(markdown())
        return
    lines = []
    for title, registry in building_blocks().items():
        lines.append(f"{title}:")
        lines += [f"  {entry.name:<14} {entry.summary}" for entry in registry.entries()]
    summary = {title: registry.names() for title, registry in building_blocks().items()}
    _emit(summary, as_json, lines)


def _configure_logging() -> None:
    level = os.environ.get("PARETOPRUNE_LOG", "WARNING").upper()
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # transformers and friends are chatty on stderr; keep their warnings, drop the info lines.
    for noisy in ("transformers", "accelerate", "ray"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def _usage_errors() -> tuple[type[Exception], ...]:
    """The exception classes of a usage error (unknown option, bad value).

    Newer typer releases ship their own copy of click and raise that copy's ``ClickException``;
    older ones raise click's. Both are caught, found through ``typer.BadParameter``'s bases so
    that no private typer module is imported by name.
    """
    import click

    copies = [cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException"]
    return tuple({click.exceptions.ClickException, *copies})


def _run(entry: Callable[[], Any]) -> int:
    """Run a command and map how it ended to an exit code."""
    import click

    try:
        returned = entry()
    except InputError as error:
        typer.echo(f"error: {error}", err=True)
        return 2
    except _usage_errors() as error:
        typer.echo(f"error: {error.format_message()}", err=True)  # type: ignore[attr-defined]
        return 2
    except (KeyboardInterrupt, click.exceptions.Abort, typer.Abort):
        typer.echo("interrupted", err=True)
        return 130
    return returned if isinstance(returned, int) else 0


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point."""
    _configure_logging()
    command = typer.main.get_command(app)
    sys.exit(_run(lambda: command.main(args=argv, prog_name="paretoprune", standalone_mode=False)))
