"""The recipe format: what a search hands to the people who prune models.

A recipe is a self-describing file (YAML or JSON) that says how to prune one model: the scoring
rule, the structure, the comparison group and the fraction of weights to prune in every
prunable linear, by module name. It also records what it scored (objectives) and where it came
from (calibration data, search run, package version, time), so a result can be traced back.

The schema is versioned and strict: an unknown key is an error, not a silently ignored typo.
Version 2 (``format: paretoprune.recipe/v2``, written now) adds two optional choices to the
pruning plan: ``rows``, the row allocation (default ``uniform``), and ``solvers``, the layer
solvers run after the mask (default none). A version-1 recipe still loads and means exactly
that: uniform rows and no solver. An optional ``runtime`` section (``mode: test-time`` with a
``ratio``) says the masks are made per prompt instead of once; without it a recipe is static and
is written exactly as before. An optional ``pruning.global_rule`` names a global scoring rule
(LRP, UniPruning): the masks then rank that rule's score map, computed on the calibration
windows, and the metric is only a label; a recipe without one is written as before. Every problem a user can cause (a missing key, a wrong type,
a sparsity out of range, an unreadable file, a recipe for another model) becomes a one-line
:class:`~paretoprune.errors.InputError` that names the field and says what to do.

This module only depends on pydantic and PyYAML at import time, so the exporters and the
llm-compressor check can use it from an environment that has neither the search nor the
metrics installed.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from paretoprune.errors import InputError
from paretoprune.io import atomic_write_text
from paretoprune.metrics.masks import parse_structure

if TYPE_CHECKING:
    from torch import nn

    from paretoprune.candidate import Candidate

__all__ = [
    "FORMAT",
    "METADATA_KEY",
    "CalibrationInfo",
    "LayerMatch",
    "MetricConfig",
    "ModelInfo",
    "Provenance",
    "PruningPlan",
    "Recipe",
    "RuntimeConfig",
    "SearchInfo",
    "load_recipe",
    "recipe_from_data",
    "recipe_yaml",
    "save_recipe",
    "dump_yaml",
]

logger = logging.getLogger(__name__)

FORMAT = "paretoprune.recipe/v2"
FORMATS = ("paretoprune.recipe/v1", FORMAT)  # every version this release reads

# The top-level key under which exported files (llm-compressor recipes) carry a whole recipe.
METADATA_KEY = "paretoprune"

_YAML_SUFFIXES = (".yaml", ".yml")
_JSON_SUFFIXES = (".json",)
# Mapping-valued fields: the element after them in an error location is a key (a layer name).
_MAPPING_FIELDS = {"layers", "objectives", "params", "shapes"}
# How a recipe's masks are made when the model runs: once (static) or per prompt (test-time).
RUNTIME_MODES = ("static", "test-time")


# --------------------------------------------------------------------------------------------
# Schema


class _Strict(BaseModel):
    """Every part of a recipe rejects keys it does not know: a typo must not pass silently."""

    model_config = ConfigDict(extra="forbid")


class ModelInfo(_Strict):
    """Which model the recipe was made for."""

    name: str
    fingerprint: str
    family: str
    # [out_features, in_features] of each prunable linear; lets `--force` check shapes by name.
    shapes: dict[str, tuple[int, int]] = Field(default_factory=dict)


class MetricConfig(_Strict):
    """The scoring rule: a named point of the meta-metric family and its coefficients."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class PruningPlan(_Strict):
    """What to prune: rule, structure, comparison group and per-layer sparsities."""

    metric: MetricConfig
    # A registered global scoring rule whose score map the masks rank instead of the metric's
    # scores (the metric is then only a label). Absent: the metric's scores.
    global_rule: str | None = None
    structure: str = "unstructured"
    group: Literal["row", "layer"] = "row"
    # The fraction of weights pruned, weighted over the prunable parameters.
    sparsity: float
    # Fraction of weights pruned per linear, by module name, in the model's module order.
    layers: dict[str, float]
    # How each layer's sparsity is shared among its rows (a registered row allocation).
    rows: str = "uniform"
    # Layer solvers run after the mask, in order (registered names, e.g. [fw, update]).
    solvers: list[str] = Field(default_factory=list)

    @field_validator("rows")
    @classmethod
    def _known_rows(cls, value: str) -> str:
        if value != "uniform":  # the registry imports the tensor code: only when it is needed
            from paretoprune.metrics.row_allocation import ROW_ALLOCATIONS

            ROW_ALLOCATIONS.lookup(value)
        return value

    @field_validator("global_rule")
    @classmethod
    def _known_global_rule(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from paretoprune.global_scores import GLOBAL_SCORES  # it imports torch: only when it is needed

        if value not in GLOBAL_SCORES:
            raise ValueError(f"unknown global scoring rule {value!r}; use one of {', '.join(GLOBAL_SCORES)}")
        return GLOBAL_SCORES.entry(value).name

    @property
    def rule(self) -> str:
        """The name of the rule the masks rank: the global rule where one is named, else the metric."""
        return self.global_rule or self.metric.name

    @field_validator("solvers")
    @classmethod
    def _known_solvers(cls, value: list[str]) -> list[str]:
        if value:
            from paretoprune.metrics.solvers import check_chain

            check_chain(tuple(value))
        return value

    @field_validator("structure")
    @classmethod
    def _known_structure(cls, value: str) -> str:
        parse_structure(value)
        return value

    @field_validator("sparsity")
    @classmethod
    def _global_in_range(cls, value: float) -> float:
        if not _is_fraction(value):
            raise ValueError(f"global sparsity {value} is outside [0, 1); give a fraction like 0.5")
        return value

    @field_validator("layers")
    @classmethod
    def _layers_in_range(cls, layers: dict[str, float]) -> dict[str, float]:
        if not layers:
            raise ValueError("no layers listed; give at least one module name with its sparsity")
        for name, value in layers.items():
            if not _is_fraction(value):
                raise ValueError(
                    f"layer {name} has sparsity {value}, outside [0, 1); "
                    "give the fraction of its weights to prune, e.g. 0.5"
                )
        return layers


class RuntimeConfig(_Strict):
    """When the masks are made: ``test-time`` makes them per prompt, from its own activations.

    A test-time recipe keeps ``ratio`` of each row's weights (or of the input channels when
    ``structured``) per prompt, so no single pruned model exists: it is evaluated, not saved.
    """

    mode: str = "static"
    ratio: float | None = None
    structured: bool = False

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        if value not in RUNTIME_MODES:
            raise ValueError(f"unknown mode {value!r}; use {' or '.join(RUNTIME_MODES)}")
        return value

    @field_validator("ratio")
    @classmethod
    def _ratio_in_range(cls, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and 0.0 < value <= 1.0):
            raise ValueError(
                f"ratio {value} is outside (0, 1]; give the fraction of weights kept per prompt, e.g. 0.5"
            )
        return value

    @model_validator(mode="after")
    def _ratio_given(self) -> RuntimeConfig:
        if self.mode == "test-time" and self.ratio is None:
            raise ValueError("mode test-time needs a ratio, the fraction of weights kept per prompt, e.g. 0.5")
        return self

    @property
    def test_time(self) -> bool:
        return self.mode == "test-time"


class CalibrationInfo(_Strict):
    """The text the statistics were computed on, exactly enough to repeat it."""

    source: str
    sha256: str
    nsamples: int
    seqlen: int
    seed: int


class SearchInfo(_Strict):
    """The search run and the evaluation (row of its archive) this recipe came from."""

    run: str
    evaluation: int


class Provenance(_Strict):
    calibration: CalibrationInfo
    search: SearchInfo | None = None
    # Token sources of objectives written name@source (e.g. a task's seeded calibration part):
    # what each one was, so that evaluation can leave those examples out.
    fitness: dict[str, dict[str, Any]] = Field(default_factory=dict)
    created: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    version: str = Field(default_factory=lambda: _package_version())


class Recipe(_Strict):
    """One reusable way to prune one model (see the module docstring)."""

    format: Literal["paretoprune.recipe/v1", "paretoprune.recipe/v2"] = FORMAT
    model: ModelInfo
    pruning: PruningPlan
    objectives: dict[str, float]
    provenance: Provenance
    # Absent: static masks. Written only when given, so static recipes stay as they were.
    runtime: RuntimeConfig | None = None

    @property
    def test_time(self) -> RuntimeConfig | None:
        """The runtime settings when the masks are made per prompt; None for static masks."""
        return self.runtime if self.runtime is not None and self.runtime.test_time else None

    @classmethod
    def from_candidate(
        cls,
        candidate: Candidate,
        model_name: str,
        fingerprint: str,
        family: str,
        layer_numels: Mapping[str, int] | None,
        objectives: Mapping[str, float],
        provenance: Provenance | Mapping[str, Any],
        layer_shapes: Mapping[str, tuple[int, int]] | None = None,
    ) -> Recipe:
        """Describe a candidate as a recipe.

        ``layer_numels`` (or ``layer_shapes``, from which the sizes follow) lists the model's
        prunable linears in module order: the recipe keeps that order, which is the order
        llm-compressor aligns a sparsity list with. The global sparsity is the mean of the
        layer sparsities weighted by these sizes. Shapes, when given, are stored so that a
        forced apply to another model can check them.
        """
        numels = _numels(layer_numels, layer_shapes)
        layers = _ordered_sparsities(candidate.sparsities, numels)
        data = {
            "format": FORMAT,
            "model": {
                "name": model_name,
                "fingerprint": fingerprint,
                "family": family,
                "shapes": {name: list(shape) for name, shape in (layer_shapes or {}).items()},
            },
            "pruning": {
                "metric": _metric_config(candidate.metric),
                "global_rule": candidate.global_rule,
                "structure": candidate.structure,
                "group": candidate.group,
                "sparsity": _weighted_mean(layers, numels),
                "layers": layers,
                "rows": candidate.rows,
                "solvers": list(candidate.solvers),
            },
            "objectives": {key: float(value) for key, value in objectives.items()},
            "provenance": provenance,
        }
        return recipe_from_data(data, source=f"recipe for {model_name}")

    def to_candidate(self) -> Candidate:
        """The candidate this recipe describes, ready for the pruner."""
        from paretoprune.candidate import Candidate

        return Candidate(
            metric=_metric_spec(self.pruning.metric),
            sparsities=dict(self.pruning.layers),
            structure=self.pruning.structure,
            group=self.pruning.group,
            rows=self.pruning.rows,
            solvers=tuple(self.pruning.solvers),
            global_rule=self.pruning.global_rule,
        )

    def to_data(self) -> dict[str, Any]:
        """Plain data (str, numbers, lists, dicts) in schema order, for YAML or JSON; without a
        runtime section or a global rule where none was given, so such a recipe reads exactly as
        before."""
        data = self.model_dump(mode="json")
        if data.get("runtime") is None:
            data.pop("runtime", None)
        if data["pruning"].get("global_rule") is None:
            data["pruning"].pop("global_rule", None)
        return data

    def check_model(
        self, fingerprint: str, layer_shapes: Mapping[str, tuple[int, int]], force: bool = False
    ) -> LayerMatch:
        """The layer sparsities to apply to a model, refusing a model the recipe was not made for.

        ``layer_shapes`` maps each prunable linear of the target model to ``(out, in)``. With the
        recipe's own model (same fingerprint) every layer applies. For another model the recipe
        is refused unless ``force``: then it applies by module name where the layer exists and,
        when the recipe stores shapes, where the shapes agree; the rest is skipped and reported.
        """
        if fingerprint == self.model.fingerprint:
            return LayerMatch(sparsities=self._layers_present(layer_shapes), skipped=[])
        if not force:
            raise InputError(
                f"recipe made for {self.model.name} (fingerprint {self.model.fingerprint}), "
                f"this model is {fingerprint}; pass --force to apply by module name where "
                "shapes agree"
            )
        return self._match_by_name(fingerprint, layer_shapes)

    def layer_sparsities(self, model: nn.Module, force: bool = False) -> dict[str, float]:
        """The sparsity of each prunable linear of ``model`` (Python API for other codebases)."""
        from paretoprune.models import find_layout, fingerprint

        layout = find_layout(model)
        shapes = {
            linear.name: (linear.out_features, linear.in_features) for linear in layout.linears
        }
        return self.check_model(fingerprint(model), shapes, force=force).sparsities

    def _layers_present(self, layer_shapes: Mapping[str, tuple[int, int]]) -> dict[str, float]:
        missing = [name for name in self.pruning.layers if name not in layer_shapes]
        if missing:
            raise InputError(
                f"recipe layer {missing[0]} is not a prunable linear of this model although the "
                f"fingerprints agree ({len(missing)} such layers); re-export the recipe"
            )
        return dict(self.pruning.layers)

    def _match_by_name(
        self, fingerprint: str, layer_shapes: Mapping[str, tuple[int, int]]
    ) -> LayerMatch:
        applied: dict[str, float] = {}
        skipped: list[str] = []
        for name, sparsity in self.pruning.layers.items():
            if self._fits(name, layer_shapes):
                applied[name] = sparsity
            else:
                skipped.append(name)
        if not applied:
            raise InputError(
                f"no layer of the recipe for {self.model.name} matches this model "
                f"(fingerprint {fingerprint}) by name and shape; use a recipe made for this model"
            )
        if skipped:
            logger.warning(
                "recipe for %s applied by name to another model: %d of %d layers skipped "
                "(missing or of another shape): %s",
                self.model.name,
                len(skipped),
                len(self.pruning.layers),
                ", ".join(skipped),
            )
        return LayerMatch(sparsities=applied, skipped=skipped)

    def _fits(self, name: str, layer_shapes: Mapping[str, tuple[int, int]]) -> bool:
        if name not in layer_shapes:
            return False
        stored = self.model.shapes.get(name)
        return stored is None or tuple(stored) == tuple(layer_shapes[name])


@dataclass(frozen=True)
class LayerMatch:
    """What :meth:`Recipe.check_model` found: the sparsities to apply and the layers skipped."""

    sparsities: dict[str, float]
    skipped: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Small pure helpers of the schema


def _is_fraction(value: float) -> bool:
    return math.isfinite(value) and 0.0 <= value < 1.0


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("paretoprune")
    except PackageNotFoundError:
        return "unknown"


def _numels(
    layer_numels: Mapping[str, int] | None, layer_shapes: Mapping[str, tuple[int, int]] | None
) -> dict[str, int]:
    if layer_numels is not None:
        return {name: int(count) for name, count in layer_numels.items()}
    if layer_shapes is not None:
        return {name: int(out) * int(inp) for name, (out, inp) in layer_shapes.items()}
    raise ValueError("from_candidate needs layer_numels or layer_shapes to weigh the sparsities")


def _ordered_sparsities(
    sparsities: Mapping[str, float], numels: Mapping[str, int]
) -> dict[str, float]:
    """The candidate's sparsities in the model's module order (the order of ``numels``)."""
    unknown = [name for name in sparsities if name not in numels]
    if unknown:
        raise InputError(
            f"candidate layer {unknown[0]} is not among the model's prunable linears; "
            "build the candidate for this model"
        )
    return {name: float(sparsities[name]) for name in numels if name in sparsities}


def _weighted_mean(layers: Mapping[str, float], numels: Mapping[str, int]) -> float:
    total = sum(numels[name] for name in layers)
    if total == 0:
        return 0.0
    return sum(value * numels[name] for name, value in layers.items()) / total


def _metric_config(spec: Any) -> MetricConfig:
    """A MetricSpec as the recipe's ``{name, params}``: its label, and its other fields."""
    data = dict(spec.to_dict())
    name = str(data.pop("name", spec.name))
    return MetricConfig(name=name, params=data)


def _metric_spec(config: MetricConfig) -> Any:
    """The MetricSpec a recipe's metric describes; an InputError when it describes none."""
    from paretoprune.metrics.scores import MetricSpec

    try:
        return MetricSpec.from_dict({**config.params, "name": config.name})
    except InputError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(
            f"recipe field pruning.metric does not describe a known scoring rule ({error}); "
            "use a metric written by paretoprune (name and params)"
        ) from error


# --------------------------------------------------------------------------------------------
# Reading


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read a recipe from YAML or JSON (sniffed, whatever the extension).

    An llm-compressor recipe exported by paretoprune loads too: it carries the whole recipe
    under its top-level ``paretoprune`` key.
    """
    text = _read_text(Path(path))
    data = _parse_text(text, Path(path))
    return recipe_from_data(data, source=str(path))


def recipe_from_data(data: Any, source: str = "recipe") -> Recipe:
    """Validate already parsed data as a recipe; every problem becomes a one-line InputError."""
    if not isinstance(data, dict):
        raise InputError(
            f"{source} does not hold a mapping of keys; write a recipe as YAML or JSON"
        )
    if "format" not in data and isinstance(data.get(METADATA_KEY), dict):
        data = data[METADATA_KEY]
    _check_format(data, source)
    try:
        return Recipe.model_validate(data)
    except ValidationError as error:
        raise InputError(f"{source}: {_describe_validation_error(error)}") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"recipe {path} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise InputError(
            f"cannot read recipe {path} ({reason}); pass a readable YAML or JSON file"
        ) from None


def _parse_text(text: str, path: Path) -> Any:
    """JSON first (exact errors for .json files), else YAML, of which JSON is nearly a subset."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as json_error:
        if path.suffix.lower() in _JSON_SUFFIXES:
            raise InputError(
                f"recipe {path} is not valid JSON (line {json_error.lineno}: {json_error.msg}); "
                "fix the file"
            ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as yaml_error:
        raise InputError(
            f"recipe {path} is not valid YAML ({_yaml_problem(yaml_error)}); fix the file"
        ) from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or "parse error"
    return f"line {mark.line + 1}: {problem}" if mark is not None else str(problem)


def _check_format(data: Mapping[str, Any], source: str) -> None:
    if "format" not in data:
        raise InputError(
            f"{source}: recipe field format is missing; a paretoprune recipe starts with "
            f"'format: {FORMAT}'"
        )
    if data["format"] not in FORMATS:
        raise InputError(
            f"{source}: recipe format {data['format']!r} is not supported; this paretoprune "
            f"reads {' and '.join(FORMATS)}"
        )
    plan = data.get("pruning")
    newer = sorted(set(plan) & {"rows", "solvers", "global_rule"}) if isinstance(plan, Mapping) else []
    if data["format"] == FORMATS[0] and newer:
        raise InputError(f"{source}: recipe field pruning.{newer[0]} needs format {FORMAT}; "
                         f"change the format line to 'format: {FORMAT}'")  # fmt: skip


def _describe_validation_error(error: ValidationError) -> str:
    """Pydantic's report as one line: the first problem, its field path and the fix."""
    problems = error.errors()
    first = problems[0]
    where = _field_path(first["loc"])
    text = _problem_text(first, where)
    if len(problems) > 1:
        text += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    return text


def _field_path(location: tuple[Any, ...]) -> str:
    parts: list[str] = []
    keyed = False
    for element in location:
        if keyed:
            parts[-1] += f"[{element}]"
        else:
            parts.append(str(element))
        keyed = not keyed and element in _MAPPING_FIELDS
    return ".".join(parts) or "(top level)"


def _problem_text(problem: Mapping[str, Any], where: str) -> str:
    kind = problem["type"]
    if kind == "missing":
        return f"recipe field {where} is missing; add it (see docs/recipes.md)"
    if kind == "extra_forbidden":
        return f"recipe field {where} is not part of {FORMAT}; remove it or fix its spelling"
    if kind == "value_error":
        message = str(problem["msg"]).removeprefix("Value error, ")
        return f"recipe field {where}: {message}"
    given = _short(problem.get("input"))
    return f"recipe field {where} is invalid ({problem['msg'].lower()}, got {given}); fix its value"


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# Writing


def save_recipe(recipe: Recipe, path: str | os.PathLike[str]) -> Path:
    """Write a recipe atomically, as JSON for ``.json`` and as YAML for ``.yaml``/``.yml``."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix in _JSON_SUFFIXES:
        text = json.dumps(recipe.to_data(), indent=2) + "\n"
    elif suffix in _YAML_SUFFIXES:
        text = recipe_yaml(recipe)
    else:
        raise InputError(f"cannot tell the recipe format of {target}; name it .yaml, .yml or .json")
    return atomic_write_text(target, text)


def recipe_yaml(recipe: Recipe) -> str:
    """The recipe as YAML, in schema order, with a one-line header saying what it is."""
    header = f"# paretoprune recipe ({FORMAT}): `paretoprune apply` or paretoprune.load_recipe\n"
    return header + dump_yaml(recipe.to_data())


class _RecipeDumper(yaml.SafeDumper):
    """Safe YAML whose short lists of numbers (a layer's shape) stay on one line."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    numeric = all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in data)
    return dumper.represent_sequence(
        "tag:yaml.org,2002:seq", data, flow_style=numeric and len(data) <= 8
    )


_RecipeDumper.add_representer(list, _represent_list)


def dump_yaml(data: Any) -> str:
    """Block-style YAML in the data's own key order (safe types only)."""
    return yaml.dump(
        data, Dumper=_RecipeDumper, sort_keys=False, default_flow_style=False, width=100
    )

