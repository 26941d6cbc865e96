"""The search driver: NSGA-III generations over a pool of Ray evaluators, never losing work.

One generation is: ask the algorithm for genomes, decode them into candidates, score them on the
pool (each result is appended to the archive the moment it arrives), tell the algorithm, and
checkpoint. A run folder therefore always holds every finished evaluation and the state of the
last finished generation; ``resume`` drops the rows of an unfinished generation and replays it,
which gives the same archive as a run that was never interrupted.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from tqdm.auto import tqdm

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.evaluators.fitness import (
    CandidateEvaluator,
    FitnessTokens,
    check_objectives,
    objective_direction,
    split_objective,
)
from paretoprune.evaluators.ray_pool import EvaluatorPool, Outcome
from paretoprune.evaluators.stats import ChannelStats, collect_stats
from paretoprune.search.algorithms import make_algorithm
from paretoprune.search.archive import Archive, non_dominated_mask
from paretoprune.search.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from paretoprune.search.space import SearchSpace, SpaceConfig, check_space_config

__all__ = ["SearchConfig", "SearchResult", "final_run_dir", "front_of", "load_config", "read_run_config", "resume",
           "run_search"]  # fmt: skip

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"


@dataclass
class SearchConfig:
    model: str  # alias, folder, .gguf file or hub id
    out: str  # the run folder
    calib: str = "builtin"  # calibration and fitness text
    nsamples: int = 16  # fitness windows (also the calibration of the statistics by default)
    seqlen: int = 256  # tokens per window
    # The pruning statistics (activation norms; OWL's outlier ratios) on their own windows of the
    # calibration text: give the calibration the recipe will be applied with (e.g. 128 x 2048),
    # so that candidates are scored with the masks they will really get. Default: the fitness
    # windows. Statistics are computed once per search, so more windows cost little.
    stats_nsamples: int | None = None
    stats_seqlen: int | None = None
    mode: str = "layerwise"  # layerwise | metric | joint
    sparsity: float | None = None  # target, weighted over the prunable parameters
    sparsity_range: tuple[float, float] | None = None  # or search the target in [lo, hi]
    structure: str = "unstructured"  # or N:M (metric mode)
    # What to minimise (or maximise); the first is the one progress reports. Default: kl, plus
    # sparsity when the target itself is searched (--sparsity-range).
    objectives: tuple[str, ...] | None = None
    pop: int = 16  # candidates per generation
    generations: int = 10  # generations in total (a resume may raise it)
    workers: int = 1  # evaluator actors (one per GPU where there are GPUs)
    threads_per_worker: int | None = None  # torch threads per actor (default: cores / workers)
    gpus_per_worker: float | None = None  # default: 1 where the cluster has GPUs, else 0
    ray_address: str | None = None  # join this cluster; None starts a local one
    # pymoo | optuna (NSGA-III) | swap (the naive (1 + pop) reference) | sensitivity (probe each
    # gene, fit a quadratic, step); swap and sensitivity optimise one objective
    algorithm: str = "pymoo"
    mutation: str = "polynomial"  # pymoo's children: polynomial mutation, or swap moves between genes
    # Settings of the swap search (step) or the sensitivity search (probe, radius, shrink,
    # two_sided_every); see search/algorithms/. None: their defaults.
    algorithm_options: dict[str, Any] | None = None
    storage: str | None = None  # optuna storage URL, e.g. sqlite:///run/optuna.db
    seed: int = 0
    granularity: str = "block"  # one sparsity gene per block, or per linear
    delta: float = 0.15  # how far a layer's sparsity may stray from the target
    base_metric: str | dict[str, Any] = "wanda"  # scoring rule of layerwise mode
    group: str = "row"  # comparison group of the scores
    # OptiShear's two-stage flow, e.g. ("metric", "layerwise"): each stage a full search in its
    # own sub-folder, a layerwise stage using the best metric found by the stage before it.
    stages: tuple[str, ...] | None = None
    # Objectives written name@TASK measure on a zero-shot task's calibration part: the task files'
    # folder, and the fraction of each task's examples set aside for calibration (split seeded
    # with ``seed``; evaluation should then use only the rest).
    task_dir: str | None = None
    task_calib_fraction: float = 0.5

    def space_config(self) -> SpaceConfig:
        return SpaceConfig(
            mode=self.mode, sparsity=self.sparsity, sparsity_range=self.sparsity_range,
            structure=self.structure, granularity=self.granularity, delta=self.delta,
            base_metric=self.base_metric, group=self.group,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["objectives"] = list(self.objectives) if self.objectives is not None else None  # None: the default
        data["sparsity_range"] = list(self.sparsity_range) if self.sparsity_range else None
        data["stages"] = list(self.stages) if self.stages else None
        return data


def load_config(data: Mapping[str, Any]) -> SearchConfig:
    known = {f.name for f in fields(SearchConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"unknown search setting {unknown[0]!r} in the config: known are {', '.join(sorted(known))}")
    values = dict(data)
    if values.get("sparsity_range") is not None:
        values["sparsity_range"] = tuple(float(v) for v in values["sparsity_range"])
    for key in ("objectives", "stages"):
        if values.get(key) is not None:
            values[key] = tuple(values[key])
    try:
        return SearchConfig(**values)
    except TypeError as error:
        raise InputError(f"search config is incomplete: {error}; give at least model and out") from error


@dataclass
class SearchResult:
    run_dir: Path
    evaluations: int
    front: pd.DataFrame
    recipes: list[Path] = field(default_factory=list)
    interrupted: bool = False


# ------------------------------------------------------------------------------------------------
# What runs inside each Ray actor


class RemoteEvaluator:
    """A CandidateEvaluator built inside a Ray actor from the model spec and shared inputs."""

    def __init__(
        self,
        model_spec: str,
        tokens: torch.Tensor,
        stats: dict[str, ChannelStats],
        objectives: Sequence[str],
        rank_metric: dict[str, Any] | None,
        sources: dict[str, FitnessTokens] | None = None,
    ) -> None:
        from paretoprune.evaluators.placement import check_model_fits, place_model, stats_to_devices
        from paretoprune.metrics.scores import MetricSpec
        from paretoprune.models import find_layout, load_model

        check_model_fits(model_spec)  # before loading: one clear line if it cannot fit this actor
        loaded = load_model(model_spec)
        layout = find_layout(loaded.model)
        device = place_model(loaded.model, layout)  # one GPU, its blocks over several GPUs, or the CPU
        metric = MetricSpec.from_dict(rank_metric) if rank_metric else None
        sources = {
            name: FitnessTokens(t.input_ids.to(device), None if t.attention_mask is None else t.attention_mask.to(device))
            for name, t in (sources or {}).items()
        }  # fmt: skip
        self._evaluator = CandidateEvaluator(
            loaded.model, layout, stats_to_devices(stats, layout), tokens.to(device),
            objectives=objectives, rank_metric=metric, sources=sources,
        )  # fmt: skip

    def evaluate(self, payload: Mapping[str, Any]) -> dict[str, float]:
        return self._evaluator.evaluate(Candidate.from_dict(payload))


# ------------------------------------------------------------------------------------------------
# Running a search


def run_search(config: SearchConfig, progress: bool = True) -> SearchResult:
    """Start a new search in ``config.out`` (which must not hold a run yet)."""
    run_dir = Path(config.out)
    if (run_dir / CONFIG_FILE).exists():
        raise InputError(f"{run_dir} already holds a search: resume it with --resume {run_dir} or pick a new --out")
    if config.objectives is None:
        config = replace(config, objectives=("kl", "sparsity") if config.sparsity_range else ("kl",))
    check_objectives(config.objectives)
    check_space_config(config.space_config())  # fail before writing anything or loading the model
    _check_stages(config)
    _check_windows_fit(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    if config.stages:
        return _run_stages(config, progress)
    return _Search(config, run_dir, progress).run(start_generation=0, state=None)


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The settings a run folder's config.yaml holds, as written; bad files give one line.

    A hand-edited or damaged config must not end in a YAML traceback: the message names the
    file and the line, so that it can be fixed or restored before anything else is touched.
    """
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise InputError(f"{run_dir} holds no search ({CONFIG_FILE} missing): check the folder")
    try:
        settings = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read {path} ({error}); fix its permissions or restore the file") from error
    except yaml.YAMLError as error:
        raise InputError(f"{path}{_yaml_where(error)} is not valid YAML ({_yaml_problem(error)}); "
                         "fix or restore the file") from error  # fmt: skip
    if not isinstance(settings, dict):
        raise InputError(f"{path} holds {type(settings).__name__}, not search settings (a YAML mapping); "
                         "fix or restore the file")  # fmt: skip
    return settings


def _yaml_where(error: yaml.YAMLError) -> str:
    """Where the parser stopped, as ' line N' (counted from 1); empty when it does not say."""
    mark = getattr(error, "problem_mark", None)
    return f" line {mark.line + 1}" if mark is not None else ""


def _yaml_problem(error: yaml.YAMLError) -> str:
    """What the parser found, and where the construct it was in began when that is elsewhere.

    An unclosed quote or bracket is found only at the end of the file: the line it opened on
    is the one to fix.
    """
    problem = str(getattr(error, "problem", None) or type(error).__name__)
    context, mark = getattr(error, "context", None), getattr(error, "context_mark", None)
    if context and mark is not None:
        problem += f" {context} opened on line {mark.line + 1}"
    return problem


def _check_windows_fit(config: SearchConfig) -> None:
    """Refuse windows longer than the model's context from its config alone, before a run
    folder is written that a user would then have to delete."""
    from paretoprune.models import check_context, read_config

    check_context(read_config(config.model), {"--seqlen": config.seqlen, "--stats-seqlen": config.stats_seqlen})


def resume(run_dir: str | Path, generations: int | None = None, progress: bool = True) -> SearchResult:
    """Continue the search in ``run_dir`` from its last finished generation."""
    run_dir = Path(run_dir)
    config = load_config(read_run_config(run_dir))
    if generations is not None:
        config.generations = generations
        (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    if config.stages:
        return _run_stages(config, progress)
    state = load_checkpoint(run_dir) if has_checkpoint(run_dir) else None
    start = state["generation"] if state else 0
    return _Search(config, run_dir, progress).run(start_generation=start, state=state)


def final_run_dir(run_dir: Path) -> Path:
    """Where a run's front lives: the folder itself, or its last stage's sub-folder."""
    config = load_config(read_run_config(run_dir))
    if not config.stages:
        return run_dir
    return run_dir / _stage_folder(len(config.stages) - 1, config.stages[-1])


def _stage_folder(index: int, mode: str) -> str:
    return f"stage{index + 1}-{mode}"


def _check_stages(config: SearchConfig) -> None:
    if not config.stages:
        return
    if tuple(config.stages) != ("metric", "layerwise"):
        raise InputError(f"--stages {','.join(config.stages)} is not supported: use --stages metric,layerwise")
    if config.sparsity is None:
        raise InputError("--stages metric,layerwise needs a fixed --sparsity S")


def _run_stages(config: SearchConfig, progress: bool) -> SearchResult:
    """Run (or resume) each stage in turn; a finished stage is not run again."""
    result: SearchResult | None = None
    base_metric: str | dict[str, Any] = config.base_metric
    for index, mode in enumerate(config.stages or ()):
        stage_dir = Path(config.out) / _stage_folder(index, mode)
        stage = replace(config, mode=mode, out=str(stage_dir), stages=None, base_metric=base_metric)
        if (stage_dir / CONFIG_FILE).exists():
            result = resume(stage_dir, generations=config.generations, progress=progress)
        else:
            result = run_search(stage, progress=progress)
        if result.interrupted:
            return result
        if mode == "metric":
            base_metric = _best_metric(result, config.objectives[0])
            logger.info("stage %d: best metric %s", index + 1, base_metric)
    assert result is not None
    return result


def _best_metric(result: SearchResult, objective: str) -> dict[str, Any]:
    """The metric of the best evaluation of a metric stage on the first objective."""
    frame = Archive.load(result.run_dir).frame()
    ok = frame[frame["status"] == "ok"]
    column = ok[objective]
    row = ok.loc[column.idxmax() if objective_direction(objective) == "maximize" else column.idxmin()]
    return json.loads(row["candidate"])["metric"]


class _Search:
    """One run: the model-side inputs, the space, the algorithm, the archive and the pool."""

    def __init__(self, config: SearchConfig, run_dir: Path, progress: bool) -> None:
        self.config, self.run_dir, self.progress = config, run_dir, progress
        self.objectives = list(config.objectives or ())
        self.signs = np.array([-1.0 if objective_direction(o) == "maximize" else 1.0 for o in self.objectives])

    def run(self, start_generation: int, state: dict[str, Any] | None) -> SearchResult:
        from paretoprune.data import calibration_windows, text_provenance
        from paretoprune.models import check_context, find_layout, fingerprint, load_model
        from paretoprune.pruning import owl_sparsities

        from paretoprune.evaluators.placement import check_model_fits

        config = self.config
        check_model_fits(config.model, gpus_per_worker=0)  # the driver keeps a CPU copy for statistics
        loaded = load_model(config.model)
        check_context(loaded.model.config, {"--seqlen": config.seqlen, "--stats-seqlen": config.stats_seqlen})
        layout = find_layout(loaded.model)
        tokens = calibration_windows(loaded.tokenizer, config.calib, config.nsamples, config.seqlen, config.seed)
        stats_nsamples, stats_seqlen = config.stats_nsamples or config.nsamples, config.stats_seqlen or config.seqlen
        stats_tokens = (
            tokens
            if (stats_nsamples, stats_seqlen) == (config.nsamples, config.seqlen)
            else calibration_windows(loaded.tokenizer, config.calib, stats_nsamples, stats_seqlen, config.seed)
        )
        stats = collect_stats(loaded.model, layout, stats_tokens)
        self.model_info = {
            "name": config.model, "fingerprint": fingerprint(loaded.model), "family": layout.family,
            "shapes": {l.name: (l.out_features, l.in_features) for l in layout.linears},
        }  # fmt: skip
        self.provenance = {
            "run": str(self.run_dir),
            "calibration": {
                "source": config.calib, "sha256": text_provenance(config.calib, "calibration")["sha256"],
                "nsamples": stats_nsamples, "seqlen": stats_seqlen, "seed": config.seed,
            },
        }  # fmt: skip
        owl = owl_sparsities(layout, stats, config.sparsity) if config.sparsity is not None else None
        space = SearchSpace(layout, config.space_config(), owl_sparsities=owl)
        algorithm = self._algorithm(space)
        if state is not None:
            algorithm.load_state_dict(state["algorithm"])
        archive = Archive(self.run_dir, self.objectives)
        dropped = archive.discard_after(start_generation - 1)
        if dropped:
            logger.info("dropped %d evaluations of the unfinished generation %d", dropped, start_generation)
        rank_metric = space.base_metric.to_dict() if not space.searches_metric else None
        sources = _fitness_sources(config, loaded.tokenizer)
        # The plain objectives' tokens, named apart from the statistics' windows (which may differ).
        plain = {"kind": "text", "sequences": config.nsamples, "seqlen": config.seqlen, "seed": config.seed}
        self.provenance["fitness"] = {"text": plain, **_describe_sources(config, sources)}
        factory_args = (config.model, tokens, stats, self.objectives, rank_metric, sources)
        del loaded  # each actor loads its own copy
        interrupted = False
        with EvaluatorPool(
            RemoteEvaluator, factory_args, workers=config.workers,
            threads_per_worker=config.threads_per_worker, gpus_per_worker=config.gpus_per_worker,
            ray_address=config.ray_address,
        ) as pool:  # fmt: skip
            try:
                self._generations(space, algorithm, archive, pool, start_generation)
            except KeyboardInterrupt:
                interrupted = True
                logger.warning("interrupted: every finished evaluation is saved; resume with --resume %s", self.run_dir)
        return self._finish(archive, space, interrupted)

    def _algorithm(self, space: SearchSpace):
        lower, upper = space.bounds
        baselines = space.baselines()
        logger.info("first population includes the baselines %s", ", ".join(baselines))
        return make_algorithm(
            self.config.algorithm, n_var=space.n_var, xl=lower, xu=upper, n_obj=len(self.objectives),
            pop_size=self.config.pop, seed=self.config.seed, repair=space.repair,
            initial=np.stack(list(baselines.values())), storage=self.config.storage,
            mutation=self.config.mutation, options=self.config.algorithm_options,
        )  # fmt: skip

    def _generations(self, space, algorithm, archive: Archive, pool: EvaluatorPool, start: int) -> None:
        bar = tqdm(total=self.config.generations, initial=start, desc="search", unit="gen", disable=not self.progress)
        for generation in range(start, self.config.generations):
            genomes = algorithm.ask()
            if len(genomes) == 0:
                logger.info("the algorithm has nothing new to propose: stopping")
                break
            candidates = [space.decode(genome) for genome in genomes]
            base = archive.next_eval_id

            def record(outcome: Outcome, generation: int = generation) -> None:
                archive.append(
                    eval_id=base + outcome.index, generation=generation,
                    genome=[float(v) for v in genomes[outcome.index]],
                    candidate=candidates[outcome.index].to_dict(), objectives=outcome.objectives,
                    worker=outcome.worker, node_id=outcome.node_id, seconds=outcome.seconds,
                    status=outcome.status, error=outcome.error,
                )  # fmt: skip

            outcomes = pool.evaluate([c.to_dict() for c in candidates], on_result=record)
            algorithm.tell(genomes, self._minimised(outcomes))
            save_checkpoint(self.run_dir, {"generation": generation + 1, "algorithm": algorithm.state_dict()})
            bar.update(1)
            bar.set_postfix_str(self._best_so_far(archive))
        bar.close()

    def _minimised(self, outcomes: Sequence[Outcome]) -> np.ndarray:
        rows = []
        for outcome in outcomes:
            if outcome.status != "ok" or not outcome.objectives:
                rows.append([math.inf] * len(self.objectives))
            else:
                rows.append([outcome.objectives[name] for name in self.objectives])
        return np.array(rows, dtype=float) * self.signs

    def _best_so_far(self, archive: Archive) -> str:
        frame = archive.frame()
        ok = frame[frame["status"] == "ok"]
        first = self.objectives[0]
        if ok.empty:
            return f"{first}=n/a"
        best = ok[first].min() if self.signs[0] > 0 else ok[first].max()
        return f"best {first}={best:.4g} ({len(ok)} ok, {len(frame) - len(ok)} failed)"

    def _finish(self, archive: Archive, space: SearchSpace, interrupted: bool) -> SearchResult:
        from paretoprune.search.export import export_front, plot_front

        front = front_of(archive.frame(), self.objectives)
        front.drop(columns=["genome"], errors="ignore").to_csv(self.run_dir / "pareto.csv.tmp", index=False)
        (self.run_dir / "pareto.csv.tmp").replace(self.run_dir / "pareto.csv")
        plot_front(archive.frame(), front, self.objectives, self.run_dir / "pareto.png")
        recipes = [] if interrupted else export_front(
            self.run_dir, front, self.model_info, self.provenance, self.objectives
        )
        return SearchResult(self.run_dir, len(archive), front, recipes, interrupted)


def _fitness_sources(config: SearchConfig, tokenizer: Any) -> dict[str, FitnessTokens]:
    """The tokens of every ``objective@source``: a zero-shot task's calibration part, or text."""
    from paretoprune.data import calibration_windows
    from paretoprune.evaluators.zeroshot_tasks import task_names

    sources: dict[str, FitnessTokens] = {}
    for name in config.objectives or ():
        source = split_objective(name)[1]
        if source is None or source in sources:
            continue
        if source in task_names():
            sources[source] = task_tokens(tokenizer, source, config)
        else:
            ids = calibration_windows(tokenizer, source, config.nsamples, config.seqlen, config.seed)
            sources[source] = FitnessTokens(ids)
    return sources


def _describe_sources(config: SearchConfig, sources: Mapping[str, FitnessTokens]) -> dict[str, dict[str, Any]]:
    from paretoprune.evaluators.zeroshot_tasks import task_names

    described: dict[str, dict[str, Any]] = {}
    for source, tokens in sources.items():
        entry: dict[str, Any] = {"sequences": int(tokens.input_ids.shape[0])}
        if source in task_names():
            entry |= {"kind": "task", "task_dir": config.task_dir, "calib_fraction": config.task_calib_fraction,
                      "split_seed": config.seed}  # fmt: skip
        else:
            entry |= {"kind": "text", "seqlen": config.seqlen, "seed": config.seed}
        described[source] = entry
    return described


def task_tokens(tokenizer: Any, task: str, config: SearchConfig) -> FitnessTokens:
    """Right answers of a task's calibration part, written out, padded into one batch."""
    from paretoprune.evaluators.zeroshot_tasks import example_text, load_task, split_indices

    if config.task_dir is None:
        raise InputError(f"objective @{task} needs the task files: pass --task-dir DIR")
    examples = load_task(task, Path(config.task_dir)).examples
    calibration, _ = split_indices(len(examples), config.task_calib_fraction, config.seed)
    texts = [example_text(examples[i]) for i in calibration[: config.nsamples]]
    if not texts:
        raise InputError(f"task {task} has no calibration examples: raise --task-calib-fraction")
    rows = [tokenizer(text, add_special_tokens=False).input_ids[: config.seqlen] for text in texts]
    width = max(len(row) for row in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    return FitnessTokens(ids, mask)


def front_of(frame: pd.DataFrame, objectives: Sequence[str]) -> pd.DataFrame:
    """The non-dominated successful evaluations, objectives taken in their own direction."""
    ok = frame[frame["status"] == "ok"]
    values = ok[list(objectives)].to_numpy(dtype=float)
    finite = np.isfinite(values).all(axis=1)
    ok, values = ok[finite], values[finite]
    signs = np.array([-1.0 if objective_direction(o) == "maximize" else 1.0 for o in objectives])
    mask = non_dominated_mask(values * signs, keep_duplicates=False) if len(ok) else np.zeros(0, bool)
    return ok[mask].sort_values([*objectives, "eval_id"], kind="stable").reset_index(drop=True)


def candidate_of(row: Mapping[str, Any]) -> Candidate:
    return Candidate.from_dict(json.loads(row["candidate"]))
