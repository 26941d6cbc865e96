"""The search space: numeric genomes <-> Candidates.

A genome is a vector of floats inside box bounds, laid out as

    [metric genes]        modes metric and joint: a point of the meta-metric family
    [layer genes]         modes layerwise and joint: genes in [-1, 1], one per block (or per
                          linear; or one per block then one per kind of linear, "block+kind")
    [row gene]            only with ``SpaceConfig.rows``: the row allocation (uniform, TRIM)
    [global sparsity]     only with a sparsity range: the target sparsity itself (always last)

Metric genes are the family's continuous knobs (exponents on |W| and on the activation norm,
weights of the row-relative, column-relative and absolute terms, and, only with
``SpaceConfig.gradient``, the weight of Wanda++'s regional-gradient term) followed by OptiShear's discrete
operators (transform of |W|, transform and normaliser of the activation norm) coded as reals
whose integer part picks the choice. The row gene picks a registered row allocation the same way. Layer genes ``g`` become sparsities ``s + delta * g`` that a
repair shifts to the exact parameter-weighted mean ``s`` within their bounds. With "block+kind" a
linear's ``g`` is its block's gene plus its kind's gene (q_proj, up_proj, ...): a depth profile
and a split between the kinds of matrix in a few dozen genes, where "linear" needs hundreds.

Known baselines (uniform Wanda, OWL, RIA, magnitude) are points of the space, so the search can
start from them and never ends worse than them on its objective.

A layerwise search's base metric may also be a global scoring rule (``lrp``, ``unipruning``,
:mod:`paretoprune.global_scores`): its score map of the dense model is fixed, so only the layer
genes move, and every decoded candidate names the rule (``Candidate.global_rule``); uniform and
OWL allocations under the rule are its baselines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.global_scores import GLOBAL_SCORES
from paretoprune.metrics.allocation import (
    block_totals,
    expand_block_genes,
    genes_from_sparsities,
    sparsities_from_genes,
)
from paretoprune.metrics.masks import parse_structure
from paretoprune.metrics.row_allocation import ROW_ALLOCATIONS
from paretoprune.metrics.scores import KNOWN_METRICS, NORMALISERS, SCORING_RULES, TRANSFORMS, MetricSpec, metric_by_name
from paretoprune.models import ModelLayout

__all__ = [
    "GRANULARITIES",
    "MODES",
    "PROFILES",
    "SearchSpace",
    "SpaceConfig",
    "check_space_config",
    "global_rule_of",
    "profile_scale",
    "resolve_metric",
]

MODES = ("layerwise", "metric", "joint")
GRANULARITIES = ("block", "linear", "block+kind")
# How the layer genes' deviations from the target grow with it (see profile_scale).
PROFILES = ("fixed", "scaled")
# The target at which a scaled profile's deviations are delta * g, as a fixed one's always are.
_PROFILE_REFERENCE = 0.5

# Continuous metric genes: (field of MetricSpec, lower bound, upper bound).
_CONTINUOUS = (
    ("weight_power", 0.25, 2.0),
    ("act_power", 0.0, 2.0),
    ("row_coef", 0.0, 1.0),
    ("col_coef", 0.0, 1.0),
    ("abs_coef", 0.0, 1.0),
)
# The gradient gene (Wanda++'s RGS term; wanda++ itself is 100, mid-range). Off by default: a
# candidate that uses it needs regional gradients in the search's statistics, a backward pass per
# block on the driver and a per-weight tensor the model's size on every evaluator.
_GRADIENT = (("grad_coef", 0.0, 200.0),)
# Discrete metric genes: (field of MetricSpec, choices); the gene's integer part picks one.
_DISCRETE = (
    ("weight_transform", TRANSFORMS),
    ("act_transform", TRANSFORMS),
    ("act_norm", NORMALISERS),
)
# Below this, a coefficient or exponent gene counts as zero: the term is switched off.
_OFF = 1e-3
# The row gene's choices, in the registry's order (uniform first). Off by default: TRIM needs
# each calibration sequence's last-token inputs in the statistics, and a candidate that uses it
# runs TRIM's rounds on every layer, which costs far more than its masks (see the README).
_ROWS = tuple(ROW_ALLOCATIONS.names())


@dataclass(frozen=True)
class SpaceConfig:
    mode: str = "layerwise"  # layerwise | metric | joint
    sparsity: float | None = 0.5  # target, weighted over the prunable parameters
    sparsity_range: tuple[float, float] | None = None  # search the target too, within [lo, hi]
    structure: str = "unstructured"  # or "N:M" (metric mode only: N:M fixes every layer)
    granularity: str = "block"  # one layer gene per block, per linear, or per block and per kind ("block+kind")
    delta: float = 0.15  # how far a layer may stray from the target sparsity
    # The scoring rule of layerwise mode: a known name, a MetricSpec as a dict (the best metric
    # of an earlier stage, say), or a registered global scoring rule (lrp, unipruning, ...).
    base_metric: str | Mapping[str, Any] = "wanda"
    group: str = "row"  # comparison group of the scores
    gradient: bool = False  # search the gradient term too (the statistics must hold regional gradients)
    rows: bool = False  # search the row allocation too (the statistics must hold last-token inputs)
    # How a layer gene's deviation from the target depends on the target: "fixed", delta * g at
    # every target; "scaled", delta * g times the target's odds over those of 50 % (see
    # profile_scale), so that one genome is a depth profile that fits many targets.
    profile: str = "fixed"


class SearchSpace:
    """Encodes and decodes candidates for one model layout and one SpaceConfig."""

    def __init__(
        self,
        layout: ModelLayout,
        config: SpaceConfig,
        owl_sparsities: Mapping[str, float] | None = None,
        allocations: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        """``owl_sparsities`` and ``allocations`` (more layer allocations at the target, by
        name, e.g. TPLO's) join the first population as baselines, under the layerwise rule."""
        check_space_config(config)
        self.layout, self.config = layout, config
        self.global_rule = global_rule_of(config.base_metric)
        # A global rule's candidates carry Wanda as their metric, a label only: the masks rank the
        # rule's map, and Wanda is the rule OWL's outliers and the baseline curves are paired with.
        self.base_metric = KNOWN_METRICS["wanda"] if self.global_rule else resolve_metric(config.base_metric)
        self._nm = parse_structure(config.structure)
        self._allocations = {**({"owl": owl_sparsities} if owl_sparsities is not None else {}), **(allocations or {})}
        self._numels = np.array(layout.numels, dtype=float)
        self._groups = (
            np.arange(len(layout.linears))
            if config.granularity == "linear"
            else np.array([linear.block_index for linear in layout.linears])
        )
        self._group_weights = block_totals(self._numels, self._groups)
        kinds = sorted({linear.kind for linear in layout.linears})
        self._kinds = (
            np.array([kinds.index(linear.kind) for linear in layout.linears])
            if config.granularity == "block+kind"
            else None
        )
        self._continuous = _CONTINUOUS + (_GRADIENT if config.gradient else ())
        n_metric = len(self._continuous) + len(_DISCRETE) if self.searches_metric else 0
        n_kinds = 0 if self._kinds is None else len(kinds)
        n_layers = len(self._group_weights) + n_kinds if self.searches_layers else 0
        self._metric = slice(0, n_metric)
        self._layers = slice(n_metric, n_metric + n_layers)
        # The row gene sits before the global sparsity, which stays the last gene.
        self._rows = n_metric + n_layers if config.rows else None
        n_rows = 1 if config.rows else 0
        self.n_var = n_metric + n_layers + n_rows + (1 if config.sparsity_range else 0)

    # ----------------------------------------------------------------------------------------

    @property
    def searches_metric(self) -> bool:
        return self.config.mode in ("metric", "joint")

    @property
    def searches_layers(self) -> bool:
        return self.config.mode in ("layerwise", "joint") and self._nm is None

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lower, upper = [], []
        if self.searches_metric:
            lower += [lo for _, lo, _ in self._continuous] + [0.0] * len(_DISCRETE)
            upper += [hi for _, _, hi in self._continuous] + [float(len(c)) for _, c in _DISCRETE]
        n_layers = self._layers.stop - self._layers.start
        lower += [-1.0] * n_layers
        upper += [1.0] * n_layers
        if self._rows is not None:
            lower.append(0.0)
            upper.append(float(len(_ROWS)))
        if self.config.sparsity_range:
            lower.append(self.config.sparsity_range[0])
            upper.append(self.config.sparsity_range[1])
        return np.array(lower, dtype=float), np.array(upper, dtype=float)

    # ----------------------------------------------------------------------------------------
    # Decoding

    def decode(self, genome: np.ndarray) -> Candidate:
        genome = np.asarray(genome, dtype=float)
        if genome.shape != (self.n_var,):
            raise ValueError(f"genome has shape {genome.shape}, the space expects ({self.n_var},)")
        metric = self._decode_metric(genome[self._metric]) if self.searches_metric else self.base_metric
        return Candidate(
            metric=metric,
            sparsities=self._decode_sparsities(genome),
            structure=self.config.structure,
            group=self.config.group,
            rows="uniform" if self._rows is None else _pick(_ROWS, genome[self._rows]),
            global_rule=self.global_rule,
        )

    def delta_at(self, target: float) -> float:
        """How far a layer may stray from ``target``: delta, scaled by the profile rule."""
        if self.config.profile == "scaled":
            return self.config.delta * profile_scale(target)
        return self.config.delta

    def target(self, genome: np.ndarray) -> float:
        if self.config.sparsity_range:
            low, high = self.config.sparsity_range
            return float(np.clip(genome[-1], low, high))
        if self._nm is not None:
            return 1.0 - self._nm[0] / self._nm[1]
        assert self.config.sparsity is not None
        return float(self.config.sparsity)

    def _decode_sparsities(self, genome: np.ndarray) -> dict[str, float]:
        target = self.target(genome)
        if self.searches_layers and self._kinds is not None:
            values = sparsities_from_genes(
                self._linear_genes(genome[self._layers]), self._numels, target, self.delta_at(target)
            )
        elif self.searches_layers:
            per_group = sparsities_from_genes(
                genome[self._layers], self._group_weights, target, self.delta_at(target)
            )
            values = expand_block_genes(per_group, self._groups)
        else:
            values = np.full(len(self.layout.linears), target)
        return {name: float(v) for name, v in zip(self.layout.names, values)}

    def _linear_genes(self, layer_genes: np.ndarray) -> np.ndarray:
        """block+kind: each linear's gene, its block's gene plus its kind's."""
        assert self._kinds is not None
        n_blocks = len(self._group_weights)
        return layer_genes[:n_blocks][self._groups] + layer_genes[n_blocks:][self._kinds]

    def _decode_metric(self, genes: np.ndarray) -> MetricSpec:
        values: dict[str, object] = {}
        for (name, _, _), gene in zip(self._continuous, genes):
            values[name] = float(gene)
        for (name, choices), gene in zip(_DISCRETE, genes[len(self._continuous) :]):
            values[name] = _pick(choices, gene)
        return _canonical(values)

    # ----------------------------------------------------------------------------------------
    # Encoding

    def encode(self, candidate: Candidate, target: float | None = None) -> np.ndarray:
        """The genome of a candidate this space can express (baselines, recipes)."""
        genome = np.zeros(self.n_var)
        if self.searches_metric:
            if candidate.metric.uses_gradients and not self.config.gradient:
                raise InputError(f"metric {candidate.metric.name} has a gradient term, which this space does not "
                                 "search: turn the gradient gene on (SpaceConfig.gradient)")  # fmt: skip
            genome[self._metric] = _encode_metric(candidate.metric, self._continuous)
        self._encode_rows(candidate, genome)
        target = self.target(genome) if target is None else target
        if self.config.sparsity_range:
            genome[-1] = target
        if self.searches_layers and self._kinds is not None:
            values = np.array([candidate.sparsities[name] for name in self.layout.names])
            genome[self._layers] = self._block_kind_genes(genes_from_sparsities(values, target, self.delta_at(target)))
        elif self.searches_layers:
            per_group = self._group_means(candidate.sparsities)
            genome[self._layers] = genes_from_sparsities(per_group, target, self.delta_at(target))
        return genome

    def _encode_rows(self, candidate: Candidate, genome: np.ndarray) -> None:
        """The row gene of the candidate; a space without it expresses uniform rows only."""
        if self._rows is None:
            if candidate.rows != "uniform":
                raise InputError(f"the candidate's rows are {candidate.rows}, which this space does not search: "
                                 "turn the row gene on (--search-rows, SpaceConfig.rows)")  # fmt: skip
            return
        ROW_ALLOCATIONS.lookup(candidate.rows)  # an unknown name is refused in one line
        genome[self._rows] = _ROWS.index(candidate.rows) + 0.5

    def _block_kind_genes(self, linear_genes: np.ndarray, sweeps: int = 25) -> np.ndarray:
        """block+kind: the block and kind genes whose sums best fit per-linear genes.

        A weighted two-way additive fit by alternating means. Kind genes keep a zero weighted
        mean, so that the depth profile lives in the block genes; a candidate with one
        sparsity per block (uniform, OWL) has all kind genes zero and is encoded exactly.
        """
        assert self._kinds is not None
        weights = self._numels
        n_kinds = int(self._kinds.max()) + 1
        kind_totals = np.bincount(self._kinds, weights=weights, minlength=n_kinds)
        blocks = np.zeros(len(self._group_weights))
        kinds = np.zeros(n_kinds)
        for _ in range(sweeps):
            residual = linear_genes - kinds[self._kinds]
            blocks = np.bincount(self._groups, weights=residual * weights) / self._group_weights
            residual = linear_genes - blocks[self._groups]
            kinds = np.bincount(self._kinds, weights=residual * weights, minlength=n_kinds) / kind_totals
            shift = float(np.dot(kinds, kind_totals) / kind_totals.sum())
            kinds, blocks = kinds - shift, blocks + shift
        return np.clip(np.concatenate([blocks, kinds]), -1.0, 1.0)

    def _group_means(self, sparsities: Mapping[str, float]) -> np.ndarray:
        values = np.array([sparsities[name] for name in self.layout.names])
        weights = np.array(self.layout.numels, dtype=float)
        sums = np.bincount(self._groups, weights=values * weights)
        return sums / self._group_weights

    def repair(self, genomes: np.ndarray) -> np.ndarray:
        """Genomes re-encoded from their decoded candidates: what is searched is what is scored."""
        return np.stack([self.encode(self.decode(g), self.target(g)) for g in genomes])

    def baselines(self) -> dict[str, np.ndarray]:
        """Genomes of the known methods this mode can express, by name."""
        lo, hi = self.config.sparsity_range or (None, None)
        targets = [self.target(np.zeros(self.n_var))] if lo is None else list(np.linspace(lo, hi, 3))
        found: dict[str, np.ndarray] = {}
        known = [m for m in KNOWN_METRICS.values() if self.config.gradient or not m.uses_gradients]
        metrics = known if self.searches_metric else [self.base_metric]
        # Wanda (or the layerwise rule) is the one that TRIM and OWL are paired with.
        paired = KNOWN_METRICS["wanda"] if self.searches_metric else self.base_metric
        # A global rule names its baselines: "lrp", "owl-lrp" (decoded, they carry it anyway).
        paired_name = self.global_rule or paired.name
        row_rules = [rows for rows in _ROWS if rows != "uniform"] if self._rows is not None else []
        for target in targets:
            suffix = "" if lo is None else f"@{target:.2f}"
            uniform = {name: target for name in self.layout.names}
            for metric in metrics:
                found[f"{self.global_rule or metric.name}{suffix}"] = self.encode(
                    Candidate(metric=metric, sparsities=uniform, global_rule=self.global_rule), target
                )
            for rows in row_rules:
                found[f"{paired_name}+{rows}{suffix}"] = self.encode(
                    Candidate(metric=paired, sparsities=uniform, rows=rows, global_rule=self.global_rule), target
                )
            for allocation, sparsities in (self._allocations.items() if self.searches_layers and lo is None else ()):
                for rows in ["uniform", *row_rules]:
                    name = f"{allocation}-{paired_name}" + ("" if rows == "uniform" else f"+{rows}")
                    allocated = Candidate(metric=paired, sparsities=sparsities, rows=rows, global_rule=self.global_rule)
                    found[name] = self.encode(allocated, target)
        return found


def profile_scale(target: float) -> float:
    """A scaled profile's factor at ``target``: its odds ``t / (1 - t)`` over those of 50 %.

    The best allocations that the sensitivity search found on SmolLM2-135M at 50, 60 and 70 %
    share one depth profile (block deviations correlate 0.67 to 0.84 between levels) whose
    spread grows with the target: their standard deviations are 0.065, 0.096 and 0.155, in the
    ratios 1 : 1.47 : 2.39 that the odds give (1 : 1.5 : 2.33). A genome read this way keeps its
    shape from one target to the next.
    """
    target = min(max(float(target), 0.0), 0.99)
    reference = _PROFILE_REFERENCE / (1.0 - _PROFILE_REFERENCE)
    return (target / (1.0 - target)) / reference


def global_rule_of(base_metric: str | Mapping[str, Any] | MetricSpec) -> str | None:
    """The registered global scoring rule a base metric names (its registered name), or None
    for a rule of the meta-metric family."""
    if isinstance(base_metric, str) and base_metric in GLOBAL_SCORES:
        return GLOBAL_SCORES.entry(base_metric).name
    return None


def resolve_metric(metric: str | Mapping[str, Any] | MetricSpec) -> MetricSpec:
    """A known metric's name, a MetricSpec dict, or a MetricSpec, as a MetricSpec."""
    if isinstance(metric, MetricSpec):
        return metric
    if isinstance(metric, str):
        return metric_by_name(metric)
    return MetricSpec.from_dict(metric)


def _canonical(values: Mapping[str, object]) -> MetricSpec:
    """A valid, canonical MetricSpec from raw gene values (terms near zero switched off)."""
    fields = dict(values)
    for name in ("row_coef", "col_coef", "abs_coef", "act_power", "grad_coef"):
        if name in fields and float(fields[name]) < _OFF:  # type: ignore[arg-type]
            fields[name] = 0.0
    if fields["row_coef"] == fields["col_coef"] == fields["abs_coef"] == 0.0:
        fields["abs_coef"] = 1.0
    relative = fields["row_coef"] != 0.0 or fields["col_coef"] != 0.0
    # With a relative term, "rowsum" puts the absolute term on the footing of the row term.
    fields["abs_scale"] = "rowsum" if relative and fields["abs_coef"] != 0.0 else "none"
    if fields["act_power"] == 0.0:
        fields["act_transform"], fields["act_norm"] = "none", "none"
    spec = MetricSpec(name="meta", **fields)  # type: ignore[arg-type]
    for name, known in KNOWN_METRICS.items():
        if spec == known:
            return replace(spec, name=name)
    return spec


def _pick(choices: tuple[str, ...], gene: float) -> str:
    """The choice a discrete gene's integer part names (clipped into the choices)."""
    return choices[min(int(math.floor(max(gene, 0.0))), len(choices) - 1)]


def _encode_metric(metric: MetricSpec, continuous: tuple[tuple[str, float, float], ...] = _CONTINUOUS) -> np.ndarray:
    genes = [float(getattr(metric, name)) for name, _, _ in continuous]
    genes += [choices.index(getattr(metric, name)) + 0.5 for name, choices in _DISCRETE]
    return np.array(genes)


def check_space_config(config: SpaceConfig) -> None:
    if config.mode not in MODES:
        raise InputError(f"unknown mode {config.mode!r}: use one of {', '.join(MODES)}")
    if config.granularity not in GRANULARITIES:
        raise InputError(f"unknown granularity {config.granularity!r}: use one of {', '.join(GRANULARITIES)}")
    if config.profile not in PROFILES:
        raise InputError(f"unknown profile {config.profile!r}: use one of {', '.join(PROFILES)}")
    nm = parse_structure(config.structure)
    _check_base_metric(config, nm)
    if nm is not None and config.mode != "metric":
        raise InputError(
            f"--structure {config.structure} fixes every layer's sparsity: use --mode metric with it"
        )
    if nm is None and (config.sparsity is None) == (config.sparsity_range is None):
        raise InputError("give exactly one of --sparsity S or --sparsity-range LO:HI")
    for value in [config.sparsity] + list(config.sparsity_range or ()):
        if value is not None and not 0.0 <= value < 1.0:
            raise InputError(f"sparsity {value} is out of range: use values in [0, 1), e.g. 0.6")
    if config.sparsity_range and not config.sparsity_range[0] < config.sparsity_range[1]:
        raise InputError(f"sparsity range {config.sparsity_range} is empty: write LO:HI with LO < HI")
    if not 0.0 <= config.delta < 1.0:
        raise InputError(f"delta {config.delta} is out of range: use a value in [0, 1), e.g. 0.15")
    _check_row_gene(config, nm)


def _check_base_metric(config: SpaceConfig, nm: tuple[int, int] | None) -> None:
    """A family rule (by name or as a dict), or a global rule in a layerwise search whose
    structure the rule's scores suit."""
    rule = global_rule_of(config.base_metric)
    if rule is None:
        if isinstance(config.base_metric, str) and config.base_metric not in SCORING_RULES:
            raise InputError(f"unknown base metric {config.base_metric!r}: choose a scoring rule "
                             f"({', '.join(SCORING_RULES)}) or a global rule ({', '.join(GLOBAL_SCORES)})")  # fmt: skip
        resolve_metric(config.base_metric)
        return
    if config.mode != "layerwise":
        raise InputError(f"base metric {rule} is a global scoring rule, whose scores a search cannot move: "
                         f"use it with --mode layerwise, not {config.mode}")  # fmt: skip
    if ("unstructured" if nm is None else "N:M") not in GLOBAL_SCORES[rule].structures:
        raise InputError(f"global rule {rule} does not score for --structure {config.structure}: "
                         f"use one of {', '.join(GLOBAL_SCORES[rule].structures)}")  # fmt: skip


def _check_row_gene(config: SpaceConfig, nm: tuple[int, int] | None) -> None:
    """The row gene shares a layer's sparsity among its rows: unstructured, per-row scores only."""
    if config.rows and nm is not None:
        raise InputError(f"the row gene shares each layer's sparsity among its rows, which --structure "
                         f"{config.structure} fixes already: drop --search-rows or the structure")  # fmt: skip
    if config.rows and config.group != "row":
        raise InputError(f"the row gene needs per-row comparison (group row), not {config.group}: "
                         "set group: row or drop --search-rows")  # fmt: skip
