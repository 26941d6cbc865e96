"""The search driver: generations of ask, evaluate, tell and checkpoint, never losing work.

One generation is: ask the algorithm for genomes, decode each into a candidate once, score the
candidates on the pool of Ray evaluators (each result is appended to the archive the moment it
arrives), tell the algorithm, and checkpoint. A run folder therefore always holds every
finished evaluation and the state of the last finished generation; ``resume`` drops the rows
of an unfinished generation and replays it, which gives the same archive as a run that was
never interrupted.

After the last generation, a search with ``finalists`` scores its best candidates again on more
tokens and as they will be applied (:mod:`paretoprune.search.finalists`), with the first
population's baselines beside them on the same validation windows, and judges its best recipe
against the best baseline there (:mod:`paretoprune.search.validation`); :func:`rescore` does the
same for a run folder that already exists.

What the generations need is prepared beforehand (:mod:`paretoprune.search.inputs`), and what
they leave is written afterwards (:mod:`paretoprune.search.export`); the run folder's layout
belongs to :mod:`paretoprune.search.run`.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.evaluators.fitness import check_objectives
from paretoprune.evaluators.memory import format_bytes, peak_memory_bytes
from paretoprune.evaluators.placement import resolve_device
from paretoprune.evaluators.ray_pool import EvaluatorPool, Outcome
from paretoprune.evaluators.remote import RemoteEvaluator
from paretoprune.io import atomic_write_text
from paretoprune.models import check_context, check_dtype, read_config
from paretoprune.pruning import owl_sparsities
from paretoprune.search.algorithms import SearchAlgorithm, make_algorithm
from paretoprune.search.archive import Archive, candidate_of
from paretoprune.search.baselines import against_uniform, baseline_table
from paretoprune.search.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from paretoprune.search.config import SearchConfig, load_config
from paretoprune.search.export import export_front, front_table, plot_front
from paretoprune.search.fidelity import BASE
from paretoprune.search.finalists import FinalistPlan, StageReport, score_finalists
from paretoprune.search.inputs import SearchInputs, prepare
from paretoprune.search.pareto import Objectives
from paretoprune.search.progress import FrontProgress
from paretoprune.search.run import MEMORY_FILE, Run, stage_folder
from paretoprune.search.space import SearchSpace, check_space_config
from paretoprune.search.validation import Verdict, choose

# SearchConfig, load_config and candidate_of are defined elsewhere; they stay importable from here.
__all__ = ["SearchConfig", "SearchResult", "candidate_of", "load_config", "rescore", "resume", "run_search"]

logger = logging.getLogger(__name__)


@dataclass
class SearchResult:
    run_dir: Path  # where the front lives (a staged search's last stage)
    evaluations: int
    front: pd.DataFrame
    recipes: list[Path] = field(default_factory=list)
    interrupted: bool = False
    objectives: tuple[str, ...] = ()
    finalists: list[StageReport] = field(default_factory=list)  # what each finalist stage did
    validation: Verdict | None = None  # the best recipe on the first objective against the baselines
    # The front against uniform Wanda on the fitness, at two levels (see search.baselines.against_uniform).
    uniform: list[dict[str, Any]] = field(default_factory=list)
    # Each evaluator's estimated needs and the peaks its actors reported (memory.json), or {}.
    memory: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# Starting and resuming


def run_search(config: SearchConfig, progress: bool = True) -> SearchResult:
    """Start a new search in ``config.out`` (which must not hold a run yet)."""
    config = config.with_objectives()
    _check(config)  # fail before writing anything or loading the model
    run = Run.create(config)
    if config.stages:
        return _run_stages(run, progress)
    return _search(run, progress)


def resume(run_dir: str | Path, generations: int | None = None, progress: bool = True) -> SearchResult:
    """Continue the search in ``run_dir`` from its last finished generation."""
    run = Run.open(run_dir)
    if generations is not None:
        run.save_config(replace(run.config, generations=generations))
    if run.config.stages:
        return _run_stages(run, progress)
    return _search(run, progress)


def _check(config: SearchConfig) -> None:
    check_objectives(config.objective_names)
    check_dtype(config.dtype)
    resolve_device(config.driver_device, "--driver-device")
    check_space_config(config.space_config())
    _check_stages(config)
    _check_windows_fit(config)
    FinalistPlan.of(config)


def _check_windows_fit(config: SearchConfig) -> None:
    """Refuse windows longer than the model's context from its config alone, before a run
    folder is written that a user would then have to delete."""
    check_context(read_config(config.model), {"--seqlen": config.seqlen, "--stats-seqlen": config.stats_seqlen})


def _check_stages(config: SearchConfig) -> None:
    if not config.stages:
        return
    if tuple(config.stages) != ("metric", "layerwise"):
        raise InputError(f"--stages {','.join(config.stages)} is not supported: use --stages metric,layerwise")
    if config.sparsity is None:
        raise InputError("--stages metric,layerwise needs a fixed --sparsity S")


def _run_stages(run: Run, progress: bool) -> SearchResult:
    """Run (or resume) each stage in turn; a finished stage is not run again."""
    config = run.config
    result: SearchResult | None = None
    base_metric: str | dict[str, Any] = config.base_metric
    for index, mode in enumerate(config.stages or ()):
        stage_dir = run.folder / stage_folder(index, mode)
        if Run.holds_search(stage_dir):
            result = resume(stage_dir, generations=config.generations, progress=progress)
        else:
            # Only the stage whose front is the search's scores finalists.
            last = index == len(config.stages or ()) - 1
            stage = replace(config, mode=mode, out=str(stage_dir), stages=None, base_metric=base_metric,
                            finalists=config.finalists if last else None)  # fmt: skip
            result = run_search(stage, progress=progress)
        if result.interrupted:
            return result
        if mode == "metric":
            base_metric = _best_metric(Run.open(stage_dir))
            logger.info("stage %d: best metric %s", index + 1, base_metric)
    assert result is not None
    return result


def _best_metric(run: Run) -> dict[str, Any]:
    """The metric of a metric stage's best evaluation on its first objective."""
    frame = run.evaluations()
    ok = frame[(frame["status"] == "ok") & (frame["fidelity"] == BASE)]
    objectives = run.objectives
    best = (ok[objectives.first] * objectives.signs[0]).idxmin()
    return candidate_of(ok.loc[best]).metric.to_dict()


# ------------------------------------------------------------------------------------------------
# One search: prepare, loop over the generations, write what was found


def _search(run: Run, progress: bool) -> SearchResult:
    config, objectives = run.config, run.objectives
    state = load_checkpoint(run.folder) if has_checkpoint(run.folder) else None
    start = state["generation"] if state else 0
    inputs = prepare(config)
    _write_memory(run, inputs, peaks=[])  # before any actor starts: a worker that runs out can be read against it
    if progress:
        tqdm.write(f"memory check: each evaluator needs {inputs.memory.describe()}", file=sys.stderr)
        tqdm.write(f"memory check: the driver needs {inputs.driver_memory.describe()}", file=sys.stderr)
    algorithm = _algorithm(config, objectives, inputs.space)
    if state is not None:
        algorithm.load_state_dict(state["algorithm"])
    archive = Archive(run.folder, objectives.names)
    dropped = archive.discard_after(start - 1)
    if dropped:
        logger.info("dropped %d evaluations of the unfinished generation %d", dropped, start)
    interrupted = False
    with _fitness_pool(config, inputs, config.workers) as pool:
        generations = _Generations(run, objectives, inputs.space, algorithm, archive, pool)
        try:
            generations.run_from(start, progress)
        except KeyboardInterrupt:
            interrupted = True
            logger.warning("interrupted: every finished evaluation is saved; resume with --resume %s", run.folder)
        # The uniform curves' missing points are scored while the actors are still up.
        table = _baselines(run, inputs, archive.frame(), interrupted, pool)
        memory = _memory_report(run, inputs, pool)
    return replace(_finish(run, inputs, interrupted, progress, table), memory=memory)


def _write_memory(run: Run, inputs: SearchInputs, peaks: list[int], driver_peak: int = 0,
                  on_gpus: bool = False) -> dict[str, Any]:  # fmt: skip
    """memory.json: the estimate of what each actor needs and the peaks the actors reported,
    with the ``bound`` those peaks are set against (an actor on a GPU reports torch's
    allocation there, so the GPU's part of the estimate); the driver's estimate and, at the end,
    its own peak (0 before)."""
    report = {"estimate": inputs.memory.to_dict(), "peaks": peaks, "bound": inputs.memory.bound(on_gpus),
              "on_gpus": on_gpus,
              "driver": {"estimate": inputs.driver_memory.to_dict(), "peak": driver_peak}}  # fmt: skip
    atomic_write_text(run.folder / MEMORY_FILE, json.dumps(report, indent=2) + "\n")
    return report


def _memory_report(run: Run, inputs: SearchInputs, pool: EvaluatorPool[Candidate]) -> dict[str, Any]:
    """The actors' and the driver's peak memory beside the estimates written before the actors
    started. The driver's peak is this process's: in a session that did other work before the
    search, it counts that work too."""
    estimate, peaks, driver_peak = inputs.memory, pool.peak_memory(), peak_memory_bytes()
    report = _write_memory(run, inputs, peaks, driver_peak, on_gpus=pool.gpus_per_worker > 0)
    if peaks:
        logger.info("evaluator peak memory %s; estimated %s", format_bytes(max(peaks)), estimate.describe())
    if peaks and max(peaks) > report["bound"]:
        logger.warning("an evaluator used %s, more than the %s estimated: leave more memory per worker than the "
                       "estimate says", format_bytes(max(peaks)), format_bytes(report["bound"]))  # fmt: skip
    logger.info("driver peak memory %s; estimated %s", format_bytes(driver_peak), inputs.driver_memory.describe())
    return report


def _fitness_pool(config: SearchConfig, inputs: SearchInputs, workers: int) -> EvaluatorPool[Candidate]:
    """Evaluator actors that score candidates with the search's fitness."""
    return EvaluatorPool(
        RemoteEvaluator, (inputs.evaluator,), workers=workers, threads_per_worker=config.threads_per_worker,
        gpus_per_worker=config.gpus_per_worker, ray_address=config.ray_address,
    )  # fmt: skip


def _algorithm(config: SearchConfig, objectives: Objectives, space: SearchSpace) -> SearchAlgorithm:
    lower, upper = space.bounds
    baselines = space.baselines()
    logger.info("first population includes the baselines %s", ", ".join(baselines))
    return make_algorithm(
        config.algorithm, n_var=space.n_var, xl=lower, xu=upper, n_obj=len(objectives),
        pop_size=config.pop, seed=config.seed, repair=space.repair,
        initial=np.stack(list(baselines.values())), storage=config.storage,
        mutation=config.mutation, options=config.algorithm_options,
    )  # fmt: skip


class _Generations:
    """The loop: ask, decode, evaluate (archiving each result as it lands), tell, checkpoint."""

    def __init__(self, run: Run, objectives: Objectives, space: SearchSpace, algorithm: SearchAlgorithm,
                 archive: Archive, pool: EvaluatorPool[Candidate]) -> None:  # fmt: skip
        self.run, self.objectives, self.space = run, objectives, space
        self.algorithm, self.archive, self.pool = algorithm, archive, pool
        self.tally = _Tally.of(archive.frame(), objectives)  # read once; then kept up to date
        self.front = FrontProgress.of(archive.frame(), objectives)  # front size and hypervolume, likewise

    def run_from(self, start: int, progress: bool) -> None:
        """Generations ``start`` to the configured total, with a progress bar."""
        total = self.run.config.generations
        bar = tqdm(total=total, initial=start, desc="search", unit="gen", disable=not progress)
        for generation in range(start, total):
            if not self.one(generation):
                logger.info("the algorithm has nothing new to propose: stopping")
                break
            bar.update(1)
            status = ", ".join(text for text in (self.tally.text(), self.front.text()) if text)
            bar.set_postfix_str(status)
            logger.info("generation %d of %d: %s", generation + 1, total, status)
        bar.close()

    def one(self, generation: int) -> bool:
        """Run one generation; False when the algorithm has nothing left to ask."""
        genomes = self.algorithm.ask()
        if len(genomes) == 0:
            return False
        candidates = [self.space.decode(genome) for genome in genomes]
        first_id = self.archive.next_eval_id

        def record(outcome: Outcome) -> None:
            self.archive.append(
                eval_id=first_id + outcome.index, generation=generation,
                genome=[float(v) for v in genomes[outcome.index]], candidate=candidates[outcome.index].to_dict(),
                objectives=outcome.objectives, worker=outcome.worker, node_id=outcome.node_id,
                seconds=outcome.seconds, status=outcome.status, error=outcome.error,
            )  # fmt: skip
            self.tally.add(outcome)

        outcomes = self.pool.evaluate(candidates, on_result=record)
        values = self.objectives.minimised_results([o.objectives if o.ok else None for o in outcomes])
        self.algorithm.tell(genomes, values)
        self.front.add(values)
        save_checkpoint(self.run.folder, {"generation": generation + 1, "algorithm": self.algorithm.state_dict()})
        return True


@dataclass
class _Tally:
    """What the progress bar shows: the best value of the first objective, and the counts."""

    objectives: Objectives
    best: float | None = None
    ok: int = 0
    failed: int = 0

    @classmethod
    def of(cls, frame: pd.DataFrame, objectives: Objectives) -> _Tally:
        tally = cls(objectives)
        frame = frame[frame["fidelity"] == BASE]  # the search's own rows: finalists are scored otherwise
        ok = frame[frame["status"] == "ok"]
        tally.ok, tally.failed = len(ok), len(frame) - len(ok)
        for value in ok[objectives.first]:
            tally._offer(float(value))
        return tally

    def add(self, outcome: Outcome) -> None:
        if outcome.ok and outcome.objectives:
            self.ok += 1
            self._offer(outcome.objectives[self.objectives.first])
        else:
            self.failed += 1

    def _offer(self, value: float) -> None:
        if self.best is None or self.objectives.is_better(value, self.best):
            self.best = value

    def text(self) -> str:
        first = self.objectives.first
        if self.best is None:
            return f"{first}=n/a"
        return f"best {first}={self.best:.4g} ({self.ok} ok, {self.failed} failed)"


def rescore(run_dir: str | Path, finalists: tuple[int, ...], tokens: tuple[int, ...] | None = None,
            solver: str | None = None, progress: bool = True) -> SearchResult:  # fmt: skip
    """Score the finalists of the search in ``run_dir`` (its last stage), then write its front again.

    The finalist settings are stored with the run's settings, so that a later ``--resume``
    keeps them. Finalists an earlier call scored at the same fidelity are skipped. Run it on a
    search that is not running: the archive has one writer.
    """
    run = Run.open(run_dir).final_stage
    config = replace(run.config, finalists=tuple(finalists), finalist_tokens=tuple(tokens) if tokens else None,
                     finalist_solver=solver)  # fmt: skip
    FinalistPlan.of(config)  # one line for bad settings, before the model loads
    run.save_config(config)
    return _finish(run, prepare(config), interrupted=False, progress=progress)


def _finish(run: Run, inputs: SearchInputs, interrupted: bool, progress: bool = True,
            table: pd.DataFrame | None = None) -> SearchResult:  # fmt: skip
    """Compact the archive, score the finalists, then write the front's recipes (unless
    interrupted), table and plot. ``table``: the baselines table, when the search made it."""
    objectives = run.objectives
    # Reopened from disk: an evaluation written just as Ctrl-C struck counts too.
    archive = Archive(run.folder, objectives.names)
    archive.compact()  # a user reading evaluations.parquet alone finds every row
    if table is None:
        table = _baselines(run, inputs, archive.frame(), interrupted)
    baselines = {str(name): int(i) for name, i in zip(table["name"], table["eval_id"]) if not pd.isna(i)}
    plan = FinalistPlan.of(run.config)
    reports: list[StageReport] = []
    if plan is not None and not interrupted:
        try:
            reports = score_finalists(run.config, archive, plan, progress, baselines=list(baselines.values()))
        except KeyboardInterrupt:
            interrupted = True
            logger.warning("interrupted: every scored finalist is saved; finish with --resume %s", run.folder)
        archive.compact()
    frame = archive.frame()
    front = objectives.front(frame)
    recipes = [] if interrupted else export_front(run, front, inputs.model, inputs.provenance, objectives)
    run.save_front_table(front_table(front, objectives, inputs.layout, recipes))
    plot_front(frame, front, objectives, run.front_plot_path, curves=table)
    verdict = None if front.empty else choose(frame, front, objectives, f"best:{objectives.first}", baselines,
                                              ranged=run.config.sparsity_range is not None).verdict  # fmt: skip
    if verdict is not None:
        logger.info("%s", verdict.line())
    return SearchResult(run.folder, len(archive), front, recipes, interrupted, objectives.names, reports, verdict,
                        against_uniform(frame, front, objectives, table))  # fmt: skip


def _baselines(run: Run, inputs: SearchInputs, frame: pd.DataFrame, interrupted: bool,
               pool: EvaluatorPool[Candidate] | None = None) -> pd.DataFrame:  # fmt: skip
    """The run's baselines table (search.baselines), written to the run folder: the curve points
    no earlier call kept are scored now, with the search's fitness (not after Ctrl-C), on
    ``pool`` when the search's actors are still up, else on a pool of their own."""
    config = run.config
    structured = inputs.space.config.structure != "unstructured"
    owl = None if structured else (lambda level: owl_sparsities(inputs.layout, inputs.evaluator.stats, level))

    def evaluate(on: EvaluatorPool[Candidate], candidates: list[Candidate]) -> list[dict[str, float] | None]:
        return [outcome.objectives if outcome.ok else None for outcome in on.evaluate(candidates)]

    def score(candidates: list[Candidate]) -> list[dict[str, float] | None]:
        if pool is not None:
            return evaluate(pool, candidates)
        with _fitness_pool(config, inputs, min(config.workers, len(candidates))) as own:
            return evaluate(own, candidates)

    table = baseline_table(frame, inputs.space, run.objectives, owl, run.baselines(),
                           score=None if interrupted else score)  # fmt: skip
    run.save_baselines(table)
    return table
