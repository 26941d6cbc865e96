"""A search's settings: one dataclass, its defaults commented, read from YAML or flags.

The command line, a ``--config`` file and a run folder's saved settings all end up as a
:class:`SearchConfig`; :func:`load_config` refuses unknown keys, and :func:`read_settings`
turns a damaged YAML file into one line that names the file and the line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from paretoprune.errors import InputError
from paretoprune.search.space import SpaceConfig

__all__ = ["SearchConfig", "default_objectives", "load_config", "read_settings"]


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
    # gene, fit a quadratic, step); swap and sensitivity optimise one objective | memetic (pymoo's
    # NSGA-III with sensitivity rounds at a few levels of a --sparsity-range)
    algorithm: str = "pymoo"
    mutation: str = "polynomial"  # pymoo's children: polynomial mutation, or swap moves between genes
    # Settings of the swap search (step), the sensitivity search (probe, radius, shrink,
    # two_sided_every) or the memetic search (anchors, level_gene, ga_generations, steps and the
    # sensitivity settings); see search/algorithms/. None: their defaults.
    algorithm_options: dict[str, Any] | None = None
    storage: str | None = None  # optuna storage URL, e.g. sqlite:///run/optuna.db
    seed: int = 0
    granularity: str = "block"  # one sparsity gene per block, or per linear
    delta: float = 0.15  # how far a layer's sparsity may stray from the target
    # fixed: that far at every target; scaled: delta times the target's odds over 50 %'s, so
    # that a genome is one depth profile over a --sparsity-range (search/space.py)
    profile: str = "fixed"
    # Scoring rule of layerwise mode: a registered rule, a MetricSpec dict, or a global rule (lrp,
    # unipruning, unipruning-static) whose score map of the dense model the masks rank.
    base_metric: str | dict[str, Any] = "wanda"
    group: str = "row"  # comparison group of the scores
    # Opt-in genes. search_rows: the row allocation (uniform or TRIM) is a gene, and the
    # statistics keep each sequence's last-token inputs for it; a TRIM candidate costs several
    # times a uniform one. search_gradient: Wanda++'s gradient term is a metric gene (metric
    # and joint modes), and the statistics gather regional gradients (a backward pass per block).
    search_rows: bool = False
    search_gradient: bool = False
    # OptiShear's two-stage flow, e.g. ("metric", "layerwise"): each stage a full search in its
    # own sub-folder, a layerwise stage using the best metric found by the stage before it.
    stages: tuple[str, ...] | None = None
    # Objectives written name@TASK measure on a zero-shot task's calibration part: the task files'
    # folder, and the fraction of each task's examples set aside for calibration (split seeded
    # with ``seed``; evaluation should then use only the rest).
    task_dir: str | None = None
    task_calib_fraction: float = 0.5
    # The true/false statement sets of the probe objective (default $PARETOPRUNE_TRUTH_DIR), and
    # how its probes are tested: on a held-out topic ("topics") or on held-out statements of
    # each topic ("statements"; where a small model's probes do not carry over between topics).
    truth_dir: str | None = None
    probe_split: str = "topics"
    # The dtype the evaluators run the model in: auto keeps the checkpoint's on a GPU and uses
    # fp32 on a CPU (the driver's copy for the statistics is on the CPU). Scores, statistics and
    # the fitness are computed in fp32 whatever it is.
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32
    # Where the driver computes the activation statistics: its copy of the model stays in RAM,
    # and with cuda (or auto on a machine with a GPU) each block visits the GPU for its turn. The
    # statistics pass costs 2 x parameters FLOPs a statistics token, minutes to hours on CPUs
    # for a 7B model and thousands of windows. cpu by default: the path measured most.
    driver_device: str = "cpu"  # cpu | cuda | auto
    # The finalist stage (search/finalists.py): after the search, the best N candidates are
    # scored again on more tokens and as they will be applied; one count and one token count
    # per stage (e.g. 8,2 on 16384,65536). None: no finalist stage.
    finalists: tuple[int, ...] | None = None
    finalist_tokens: tuple[int, ...] | None = None  # default 16384 for one stage
    # The solver chain finalists are applied with (e.g. update, fw,update; none: masks alone).
    # Default: the candidates' own chain, else update.
    finalist_solver: str | None = None

    @property
    def objective_names(self) -> tuple[str, ...]:
        """The objectives given, or the default ones for this sparsity setting."""
        return self.objectives if self.objectives is not None else default_objectives(self.sparsity_range)

    def with_objectives(self) -> SearchConfig:
        """This config with its objectives written out, as a run folder stores it."""
        return replace(self, objectives=self.objective_names)

    def space_config(self) -> SpaceConfig:
        return SpaceConfig(
            mode=self.mode, sparsity=self.sparsity, sparsity_range=self.sparsity_range,
            structure=self.structure, granularity=self.granularity, delta=self.delta, profile=self.profile,
            base_metric=self.base_metric, group=self.group, gradient=self.search_gradient, rows=self.search_rows,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML types; :func:`load_config` gives back an equal config."""
        data = asdict(self)
        data["objectives"] = list(self.objectives) if self.objectives is not None else None  # None: the default
        data["sparsity_range"] = list(self.sparsity_range) if self.sparsity_range else None
        data["stages"] = list(self.stages) if self.stages else None
        for key in ("finalists", "finalist_tokens"):
            data[key] = list(data[key]) if data[key] else None
        return data


def default_objectives(sparsity_range: tuple[float, float] | None) -> tuple[str, ...]:
    """kl; and sparsity too when the target sparsity is searched, so that the front spans it."""
    return ("kl", "sparsity") if sparsity_range else ("kl",)


def load_config(data: Mapping[str, Any]) -> SearchConfig:
    """A SearchConfig from plain settings (a YAML mapping); unknown keys are refused."""
    known = {f.name for f in fields(SearchConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"unknown search setting {unknown[0]!r} in the config: known are {', '.join(sorted(known))}")
    values = dict(data)
    if values.get("sparsity_range") is not None:
        values["sparsity_range"] = tuple(float(v) for v in values["sparsity_range"])
    for key in ("objectives", "stages", "finalists", "finalist_tokens"):
        if values.get(key) is not None:
            # One finalist stage may be written as a plain number (finalists: 8).
            values[key] = tuple(values[key]) if isinstance(values[key], (list, tuple)) else (values[key],)
    try:
        return SearchConfig(**values)
    except TypeError as error:
        raise InputError(f"search config is incomplete: {error}; give at least model and out") from error


def read_settings(path: str | Path) -> dict[str, Any]:
    """The settings a YAML file holds, as written; a bad file gives one line.

    A hand-edited or damaged file must not end in a YAML traceback: the message names the file
    and the line, so that it can be fixed or restored before anything else is touched.
    """
    try:
        settings = yaml.safe_load(Path(path).read_text())
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
