"""Pruning scores: magnitude, Wanda, RIA and the meta-metric family that contains them.

A score says how much a weight matters; masks (see :mod:`paretoprune.metrics.masks`) keep the
highest scores. Every rule here is one point of a single family, described by a
:class:`MetricSpec`, so that a search can move between the known rules and beyond them::

    x      = T_w(|W| ** a)                                    weight transform T_w
    weight = x * (r / rowsum(x) + c / colsum(x) + u / scale(x))
    act    = N_a(T_a(act_norm ** b))                          activation transform T_a, normaliser N_a
    score  = weight * act[None, :]                            the act term is absent when b == 0
    score  = weight * (act[None, :] + g * grad)               with a gradient term (g > 0)

``rowsum`` sums a row's inputs, ``colsum`` a column's outputs (RIA's relative importance).
``scale`` is one of ``none`` (1), ``sum``, ``mean``, ``fro`` or ``rowsum`` (the mean row sum, which
puts ``u`` on the same footing as ``r``). A factor common to the whole matrix changes no mask, so
such factors are not applied: without a relative term (r == c == 0) the weight term is just ``x``,
and ``compute_scores`` returns scores up to a positive global factor.

The gradient term is Wanda++'s regional gradient (RGS): ``grad`` [out, in] is the root mean square
over calibration samples of ``dL/dW`` for ``L = ||block(x)||_2``, one decoder block's output norm
per sample (see :mod:`paretoprune.metrics.gradients`), divided by the square root of the tokens per
sample. That division puts it on the footing of ``act_norm``, a per-token RMS, where the paper adds
it to Wanda's per-sample norm ``||X_j||`` (``sqrt(tokens per sample)`` times ours); the factor is
global, so ``g = 100`` is the paper's ``alpha = 100`` whatever the window length. When ``b == 0``
the act term is the constant 1 (``act ** 0``). With ``g == 0`` (every rule but Wanda++) no
gradient is read and the scores are computed by exactly the operations they always were.

Known metrics are exact points of the family (the same floating-point operations, hence the same
masks, ties included):

============  =====  =========  ===  ===  ===  =====  =========  ========  ===
metric        a      T_w        r    c    u    b      T_a        N_a       g
============  =====  =========  ===  ===  ===  =====  =========  ========  ===
magnitude     1      none       0    0    1    0      (absent)   (absent)  0
wanda         1      none       0    0    1    1      none       none      0
ria           1      none       1    1    0    0.5    none       none      0
wanda++       1      none       0    0    1    1      none       none      100
============  =====  =========  ===  ===  ===  =====  =========  ========  ===

(Wanda++'s point equals the paper's ``(alpha * G + ||X_j||) * |W|`` up to the global factor above,
hence up to rounding; its masks match wherever no two scores are within rounding of each other.)

OptiShear's discrete operator space is the set of points built by :meth:`MetricSpec.operators`:
a transform in ``none, sqrt, square, exp, log, sigmoid, softmax`` for each of ``|W|`` and the
activation norm, and a normaliser in ``none, row, column, relative, sum, mean, fro`` for each
(``relative`` is RIA's ``x / rowsum + x / colsum``). For the weight the normaliser is a setting
of ``(r, c, u, scale)`` (see ``WEIGHT_NORMALISERS``); for the activation vector it is applied to
the matrix that broadcasts the vector over the rows, where only ``column`` and ``relative`` are
more than a global factor.

Numerics: scores are never NaN or inf. ``log`` means ``log1p`` (finite at 0), ``exp`` is taken
after subtracting the global maximum (a global factor), ``softmax`` is the stable one, and sums
are clamped away from zero. If the plain computation still overflows (huge weights raised to a
power, say) it is redone on inputs divided by their maxima, a global factor for every
homogeneous rule, and anything left non-finite is clamped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Mapping

import torch

from paretoprune.errors import InputError
from paretoprune.registry import Registry

__all__ = [
    "ABS_SCALES",
    "CONTINUOUS_FIELDS",
    "KNOWN_METRICS",
    "NORMALISERS",
    "SCORING_RULES",
    "TRANSFORMS",
    "WEIGHT_NORMALISERS",
    "MetricSpec",
    "compute_scores",
    "magnitude_scores",
    "metric_by_name",
    "ria_scores",
    "wanda_plus_plus_scores",
    "wanda_scores",
]

TRANSFORMS: tuple[str, ...] = ("none", "sqrt", "square", "exp", "log", "sigmoid", "softmax")
NORMALISERS: tuple[str, ...] = ("none", "row", "column", "relative", "sum", "mean", "fro")
ABS_SCALES: tuple[str, ...] = ("none", "sum", "mean", "fro", "rowsum")

# The discrete weight normalisers as points (r, c, u, scale) of the continuous weight term.
WEIGHT_NORMALISERS: dict[str, tuple[float, float, float, str]] = {
    "none": (0.0, 0.0, 1.0, "none"),
    "row": (1.0, 0.0, 0.0, "none"),
    "column": (0.0, 1.0, 0.0, "none"),
    "relative": (1.0, 1.0, 0.0, "none"),
    "sum": (0.0, 0.0, 1.0, "sum"),
    "mean": (0.0, 0.0, 1.0, "mean"),
    "fro": (0.0, 0.0, 1.0, "fro"),
}

# How describe() writes the scale of the absolute term.
_SCALE_TEXT = {"none": "", "sum": "/sum(x)", "mean": "/mean(x)", "fro": "/fro(x)", "rowsum": "/rowsum_avg(x)"}

# The numeric fields a search moves smoothly (all floats), in a fixed order.
CONTINUOUS_FIELDS: tuple[str, ...] = ("weight_power", "act_power", "row_coef", "col_coef", "abs_coef", "grad_coef")

# Fields left out of ``to_dict`` at these values: a spec without the gradient term writes exactly
# what it wrote before the term existed, so older recipes, archives and caches keep their bytes.
_OMITTED_AT = {"grad_coef": 0.0}

# Smallest denominator: sums of non-negative terms are clamped to it, so 0 / 0 becomes 0.
_TINY = torch.finfo(torch.float32).tiny


# ----------------------------------------------------------------------------------------------
# Small helpers.


def _finite_float(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"metric {name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InputError(f"metric {name} must be finite, got {value!r}")
    return number


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"metric {name} {value!r} is not known; choose one of {', '.join(choices)}")


def _scaled_term(coef: float, term: str) -> str:
    if coef == 0.0:
        return ""
    return term if coef == 1.0 else f"{coef:g}*{term}"


def _describe_transform(name: str, base: str) -> str:
    if name == "none":
        return base
    if name == "log":
        return f"log1p({base})"
    return f"{name}({base})"


@dataclass(frozen=True)
class MetricSpec:
    """One point of the meta-metric family (see the module docstring for the formula).

    All fields are plain floats or strings so that a search can encode a spec as a small numeric
    vector. ``name`` is a label only: it takes no part in equality or hashing, so a searched spec
    that equals Wanda shares Wanda's caches.
    """

    name: str = field(default="meta", compare=False)
    weight_power: float = 1.0
    weight_transform: str = "none"
    row_coef: float = 0.0
    col_coef: float = 0.0
    abs_coef: float = 1.0
    abs_scale: str = "none"
    act_power: float = 0.0
    act_transform: str = "none"
    act_norm: str = "none"
    grad_coef: float = 0.0  # g: weight of the regional gradient beside the activation term

    def __post_init__(self) -> None:
        for name in CONTINUOUS_FIELDS:
            object.__setattr__(self, name, _finite_float(name, getattr(self, name)))
        _check_choice("weight_transform", self.weight_transform, TRANSFORMS)
        _check_choice("act_transform", self.act_transform, TRANSFORMS)
        _check_choice("act_norm", self.act_norm, NORMALISERS)
        _check_choice("abs_scale", self.abs_scale, ABS_SCALES)
        self._check_ranges()

    def _check_ranges(self) -> None:
        if self.weight_power <= 0:
            raise InputError(f"metric weight_power must be > 0, got {self.weight_power}; scores must see |W|")
        if self.act_power < 0:
            raise InputError(f"metric act_power must be >= 0, got {self.act_power}; use 0 for no activations")
        if self.grad_coef < 0:
            raise InputError(f"metric grad_coef must be >= 0, got {self.grad_coef}; use 0 for no gradient term")
        coefs = (self.row_coef, self.col_coef, self.abs_coef)
        if min(coefs) < 0 or sum(coefs) <= 0:
            raise InputError(
                f"metric row_coef, col_coef, abs_coef must be >= 0 and not all 0, got {coefs}"
            )

    @property
    def uses_activations(self) -> bool:
        """Whether scores need the activation norm: the act term is absent exactly when b == 0."""
        return self.act_power != 0.0

    @property
    def uses_gradients(self) -> bool:
        """Whether scores need the regional-gradient statistic (the gradient term, g != 0)."""
        return self.grad_coef != 0.0

    @property
    def has_relative_term(self) -> bool:
        """Whether the weight term divides by row or column sums (otherwise it is just x)."""
        return self.row_coef != 0.0 or self.col_coef != 0.0

    @property
    def weight_norm(self) -> str:
        """The discrete weight normaliser this spec is, or ``"mixed"`` for a continuous point."""
        for name, point in WEIGHT_NORMALISERS.items():
            if self._weight_point() == point:
                return name
        if not self.has_relative_term:  # x times a global factor: the same masks as "none"
            return "none"
        return "mixed"

    def _weight_point(self) -> tuple[float, float, float, str]:
        return (self.row_coef, self.col_coef, self.abs_coef, self.abs_scale)

    @classmethod
    def operators(
        cls,
        weight_transform: str = "none",
        weight_norm: str = "none",
        act_transform: str = "none",
        act_norm: str = "none",
        *,
        use_activations: bool = True,
        name: str = "meta",
    ) -> "MetricSpec":
        """A point of OptiShear's discrete space: one transform and one normaliser per operand."""
        _check_choice("weight_norm", weight_norm, NORMALISERS)
        row, col, abs_, scale = WEIGHT_NORMALISERS[weight_norm]
        return cls(
            name=name,
            weight_transform=weight_transform,
            row_coef=row,
            col_coef=col,
            abs_coef=abs_,
            abs_scale=scale,
            act_power=1.0 if use_activations else 0.0,
            act_transform=act_transform if use_activations else "none",
            act_norm=act_norm if use_activations else "none",
        )

    def to_dict(self) -> dict[str, Any]:
        """Every field, plain JSON/YAML types; ``from_dict`` restores an equal spec. A field at
        its "absent" value (``grad_coef`` 0) is left out, as it was before the field existed."""
        data = asdict(self)
        for name, absent in _OMITTED_AT.items():
            if data[name] == absent:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MetricSpec":
        """Inverse of ``to_dict``. Missing fields come from the known metric of that name, if any."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown metric fields {unknown}; expected some of {sorted(known)}")
        base = KNOWN_METRICS.get(str(data.get("name", "")), cls())
        return replace(base, **dict(data))

    def describe(self) -> str:
        """A one-line formula, e.g. ``ria: (x/rowsum(x) + x/colsum(x)) * act^0.5, x = |W|``."""
        if not self.has_relative_term:
            return f"{self.name}: {self._describe_x()}{self._describe_act()}"
        return f"{self.name}: {self._describe_weight()}{self._describe_act()}, x = {self._describe_x()}"

    def _describe_x(self) -> str:
        base = "|W|" if self.weight_power == 1.0 else f"|W|^{self.weight_power:g}"
        return _describe_transform(self.weight_transform, base)

    def _describe_weight(self) -> str:
        terms = [
            _scaled_term(self.row_coef, "x/rowsum(x)"),
            _scaled_term(self.col_coef, "x/colsum(x)"),
            _scaled_term(self.abs_coef, "x" + _SCALE_TEXT[self.abs_scale]),
        ]
        return "(" + " + ".join(term for term in terms if term) + ")"

    def _describe_act(self) -> str:
        if not self.uses_activations:
            return f" * (1 + {self.grad_coef:g}*grad)" if self.uses_gradients else ""
        base = "act" if self.act_power == 1.0 else f"act^{self.act_power:g}"
        term = _describe_transform(self.act_transform, base)
        if self.act_norm != "none":
            term = f"{self.act_norm}-normalised({term})"
        if self.uses_gradients:
            return f" * ({term} + {self.grad_coef:g}*grad)"
        return f" * {term}"


# The named scoring rules: each one a point of the family. ``prune --method``, ``apply
# --pruner``, the recipe validator and the search's baselines all read this registry.
SCORING_RULES: Registry[MetricSpec] = Registry("scoring rule")
SCORING_RULES.register("magnitude", MetricSpec(name="magnitude"), summary="|W|: the weight's size alone")
SCORING_RULES.register(
    "wanda", MetricSpec(name="wanda", act_power=1.0), summary="|W| times the norm of its input channel (Wanda)"
)
SCORING_RULES.register(
    "ria", MetricSpec(name="ria", row_coef=1.0, col_coef=1.0, abs_coef=0.0, act_power=0.5),
    summary="relative importance in its row and column, times the input norm to the power 0.5 (RIA)",
)  # fmt: skip

SCORING_RULES.register(
    "wanda++", MetricSpec(name="wanda++", act_power=1.0, grad_coef=100.0),
    summary="Wanda++'s RGS: |W| times (input norm + 100 x the RMS gradient of its block's output norm)",
)  # fmt: skip

# The name older code and scripts use for the same registry.
KNOWN_METRICS = SCORING_RULES


def metric_by_name(name: str) -> MetricSpec:
    """The scoring rule called ``name`` (case-insensitive); one-line error for unknown names."""
    return SCORING_RULES.lookup(name)


# ----------------------------------------------------------------------------------------------
# Reference formulas, literally as the papers write them (tests hold the family to these).


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    """|W| (Han et al. 2015)."""
    return weight.detach().float().abs()


def wanda_scores(weight: torch.Tensor, act_norm: torch.Tensor) -> torch.Tensor:
    """|W| * ||X_j|| (Sun et al. 2024): weights times the norm of the input they multiply."""
    return weight.detach().float().abs() * act_norm.float()[None, :]


def ria_scores(weight: torch.Tensor, act_norm: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """(|W|/rowsum + |W|/colsum) * ||X_j||^alpha (Zhang et al. 2024, relative importance)."""
    magnitude = weight.detach().float().abs()
    relative = magnitude / magnitude.sum(dim=1, keepdim=True) + magnitude / magnitude.sum(dim=0, keepdim=True)
    return relative * act_norm.float()[None, :] ** alpha


def wanda_plus_plus_scores(
    weight: torch.Tensor, act_norm: torch.Tensor, grad: torch.Tensor, alpha: float = 100.0
) -> torch.Tensor:
    """(alpha * G + ||X_j||) * |W| (Yang et al. 2025, Wanda++'s regional gradient score), with
    ``act_norm`` Wanda's per-sample input norm ||X_j|| and ``grad`` the RMS over samples of the
    regional gradient G, both as the paper measures them (see the module docstring)."""
    return (alpha * grad.detach().float() + act_norm.float()[None, :]) * weight.detach().float().abs()


# ----------------------------------------------------------------------------------------------
# The family.


def compute_scores(
    weight: torch.Tensor,
    act_norm: torch.Tensor | None,
    spec: MetricSpec,
    grad: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scores of ``spec`` for a weight [out, in] and the per-input RMS ``act_norm`` [in], fp32.

    ``grad`` [out, in] is the regional gradient on act_norm's footing (``ChannelStats.
    regional_grad``); it is read only by a spec with a gradient term. The result is a new tensor
    (the weight is never modified), finite and non-negative.
    """
    activations = _checked_activations(weight, act_norm, spec)
    gradients = _checked_gradients(weight, grad, spec)
    if gradients is not None:
        return _gradient_scores(weight, activations, gradients, spec)
    scores = _family_scores(weight.detach().float().abs(), activations, spec)
    if scores is not None and _all_finite(scores):
        return scores
    return _rescaled_scores(weight, activations, spec)


def _checked_gradients(weight: torch.Tensor, grad: torch.Tensor | None, spec: MetricSpec) -> torch.Tensor | None:
    if not spec.uses_gradients:
        return None
    if grad is None:
        raise InputError(f"metric {spec.name!r} has a gradient term and needs regional-gradient statistics, "
                         "which were not collected for this layer")  # fmt: skip
    if grad.shape != weight.shape:
        raise InputError(f"gradients have shape {tuple(grad.shape)}, the weight is {tuple(weight.shape)}")
    return grad.detach().float()


def _gradient_scores(
    weight: torch.Tensor, activations: torch.Tensor | None, gradients: torch.Tensor, spec: MetricSpec
) -> torch.Tensor:
    """weight term * (act term + g * grad); on overflow, the same on |W| divided by its maximum
    (a global factor of the weight term) and clamped."""
    scores = _gradient_family_scores(weight.detach().float().abs(), activations, gradients, spec)
    if scores is not None and _all_finite(scores):
        return scores
    magnitudes = _divided_by_max(weight.detach().float().abs())
    scores = _gradient_family_scores(magnitudes, activations, gradients, spec)
    if scores is None:
        scores = magnitudes
    return torch.nan_to_num_(scores, nan=0.0, posinf=torch.finfo(torch.float32).max, neginf=0.0)


def _gradient_family_scores(
    magnitudes: torch.Tensor, activations: torch.Tensor | None, gradients: torch.Tensor, spec: MetricSpec
) -> torch.Tensor | None:
    weight_term = _weight_term(_weight_base(magnitudes, spec), spec)
    if weight_term is None:
        return None
    return weight_term.mul_(_gradient_factor(activations, gradients, spec))


def _gradient_factor(activations: torch.Tensor | None, gradients: torch.Tensor, spec: MetricSpec) -> torch.Tensor:
    """act[None, :] + g * grad, with act = 1 when the spec reads no activations (b == 0)."""
    scaled = gradients.clamp_min(0.0) * spec.grad_coef
    if activations is None:
        return scaled.add_(1.0)
    return scaled.add_(_activation_term(activations, spec, rows=gradients.shape[0])[None, :])


def _all_finite(values: torch.Tensor) -> bool:
    """Whether no entry is NaN or infinite.

    The smallest and largest entries say it in one pass (both are NaN when any entry is), where
    ``isfinite(values).all()`` takes five: this check runs on every layer of every candidate.
    """
    if values.numel() == 0:
        return True
    smallest, largest = torch.aminmax(values)
    return math.isfinite(float(smallest)) and math.isfinite(float(largest))


def _checked_activations(
    weight: torch.Tensor, act_norm: torch.Tensor | None, spec: MetricSpec
) -> torch.Tensor | None:
    if weight.dim() != 2:
        raise InputError(f"a weight matrix must be 2-D [out, in], got shape {tuple(weight.shape)}")
    if not spec.uses_activations:
        return None
    if act_norm is None:
        raise InputError(f"metric {spec.name!r} needs activation norms; collect calibration statistics first")
    if act_norm.shape != (weight.shape[1],):
        raise InputError(
            f"activation norms have shape {tuple(act_norm.shape)}, the weight needs [{weight.shape[1]}]"
        )
    return act_norm.detach().float()


def _rescaled_scores(
    weight: torch.Tensor, activations: torch.Tensor | None, spec: MetricSpec
) -> torch.Tensor:
    """The overflow fallback: the same rule on inputs divided by their maxima, then clamped."""
    magnitudes = _divided_by_max(weight.detach().float().abs())
    scaled_acts = None if activations is None else _divided_by_max(activations.abs())
    scores = _family_scores(magnitudes, scaled_acts, spec)
    if scores is None:
        scores = magnitudes
    return torch.nan_to_num_(scores, nan=0.0, posinf=torch.finfo(torch.float32).max, neginf=0.0)


def _divided_by_max(values: torch.Tensor) -> torch.Tensor:
    finite = torch.nan_to_num(values, nan=0.0, posinf=torch.finfo(torch.float32).max)
    peak = float(finite.max()) if finite.numel() else 0.0
    return finite.div_(peak) if peak > 0 else finite


def _family_scores(
    magnitudes: torch.Tensor, activations: torch.Tensor | None, spec: MetricSpec
) -> torch.Tensor | None:
    """Scores from |W| (consumed: modified in place); None when a row/column sum overflowed."""
    x = _weight_base(magnitudes, spec)
    weight_term = _weight_term(x, spec)
    if weight_term is None or activations is None:
        return weight_term
    act_term = _activation_term(activations, spec, rows=magnitudes.shape[0])
    return weight_term.mul_(act_term[None, :])


def _weight_base(magnitudes: torch.Tensor, spec: MetricSpec) -> torch.Tensor:
    """x = T_w(|W|^a), in place where the operation allows."""
    if spec.weight_power != 1.0:
        magnitudes.pow_(spec.weight_power)
    return _transform(magnitudes, spec.weight_transform, dim=1)


def _weight_term(x: torch.Tensor, spec: MetricSpec) -> torch.Tensor | None:
    """x * (r/rowsum(x) + c/colsum(x) + u/scale(x)); just x when no relative term."""
    if not spec.has_relative_term:
        return x
    terms: list[torch.Tensor] = []
    if spec.row_coef != 0.0:
        terms.append(_relative(x, dim=1, coef=spec.row_coef))
    if spec.col_coef != 0.0:
        terms.append(_relative(x, dim=0, coef=spec.col_coef))
    if spec.abs_coef != 0.0:
        terms.append(_absolute(x, spec.abs_coef, spec.abs_scale))
    if any(term is None for term in terms):
        return None
    total = terms[0]
    for term in terms[1:]:
        total.add_(term)
    return total


def _relative(x: torch.Tensor, dim: int, coef: float) -> torch.Tensor | None:
    """coef * x / (sum of x along ``dim``); None if that sum overflowed."""
    sums = x.sum(dim=dim, keepdim=True)
    if not bool(torch.isfinite(sums).all()):
        return None
    term = x / sums.clamp_min_(_TINY)
    return term if coef == 1.0 else term.mul_(coef)


def _absolute(x: torch.Tensor, coef: float, scale: str) -> torch.Tensor | None:
    """coef * x / scale(x) with a global scale; None if the scale overflowed."""
    divisor = _global_scale(x, scale)
    if not math.isfinite(divisor):
        return None
    return x * (coef / max(divisor, _TINY))


def _global_scale(x: torch.Tensor, scale: str) -> float:
    if scale == "none":
        return 1.0
    if scale == "sum":
        return float(x.sum())
    if scale == "mean":
        return float(x.mean())
    if scale == "fro":
        return float(torch.linalg.vector_norm(x))
    return float(x.sum()) / x.shape[0]  # "rowsum": the mean row sum


def _activation_term(activations: torch.Tensor, spec: MetricSpec, rows: int) -> torch.Tensor:
    """N_a(T_a(act^b)) for the activation vector, seen as a matrix broadcast over ``rows``."""
    values = activations.clamp_min(0.0)
    if spec.act_power != 1.0:
        values = values.pow_(spec.act_power)
    values = _transform(values, spec.act_transform, dim=0)
    return _normalise_broadcast(values, spec.act_norm, rows)


def _normalise_broadcast(values: torch.Tensor, norm: str, rows: int) -> torch.Tensor:
    """A normaliser applied to the matrix whose every one of ``rows`` rows is ``values``.

    Its row sum (sum(values), the same for every row), total, mean and Frobenius norm are global
    factors, which change no mask and are not applied. Its column sums are rows * values, so
    "column" alone leaves 1/rows on live inputs (0 on dead ones) and "relative" adds that to
    values / sum(values).
    """
    if norm not in ("column", "relative"):
        return values
    by_column = torch.where(values > 0, 1.0 / rows, 0.0).to(values.dtype)  # exact, no 0/0
    if norm == "column":
        return by_column
    total = float(values.sum(dtype=torch.float64))  # float64: no overflow for huge activations
    return by_column.add_(values * (1.0 / max(total, _TINY)))


def _transform(values: torch.Tensor, name: str, dim: int) -> torch.Tensor:
    """Apply a transform to non-negative values, in place when possible; the result is finite."""
    return _TRANSFORM_FUNCTIONS[name](values, dim)


def _stable_exp(values: torch.Tensor, dim: int) -> torch.Tensor:
    """exp(x - max x): exp up to a global factor, never overflowing."""
    if values.numel() == 0:
        return values
    return values.sub_(values.max()).exp_()


_TRANSFORM_FUNCTIONS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "none": lambda values, dim: values,
    "sqrt": lambda values, dim: values.sqrt_(),
    "square": lambda values, dim: values.square_(),
    "exp": _stable_exp,
    "log": lambda values, dim: values.log1p_(),
    "sigmoid": lambda values, dim: values.sigmoid_(),
    "softmax": lambda values, dim: torch.softmax(values, dim=dim),
}
