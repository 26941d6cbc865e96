"""A model-based local search for one objective: probe every gene on both sides, fit a
quadratic per gene, step to the model's minimum, round after round.

The math (``quadratic_through``, ``model_step``) is kept as small pure functions; the class
only decides what to ask next.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from paretoprune.errors import InputError
from paretoprune.search.algorithms.base import RepairFn, SearchAlgorithm

__all__ = ["SensitivitySearch", "model_step", "quadratic_through"]


def quadratic_through(
    minus: np.ndarray, centre: float, plus: np.ndarray, below: np.ndarray, above: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Slope and curvature ``(g, a)`` of ``f(x) = centre + g x + a x**2`` through three points.

    The points are ``(-below, minus)``, ``(0, centre)`` and ``(above, plus)`` per gene. A side
    that was not probed (a zero offset, at a bound) or failed (a non-finite value) leaves a line
    through the other side (curvature 0); a gene with neither side has slope and curvature 0.
    """
    rise = _secant(plus, centre, above)  # NaN where that side tells nothing
    fall = _secant(minus, centre, below)
    has_plus, has_minus = ~np.isnan(rise), ~np.isnan(fall)
    both = has_plus & has_minus
    span = np.asarray(above, dtype=float) + np.asarray(below, dtype=float)
    curvature = np.divide(rise + fall, span, out=np.zeros(span.shape), where=both)
    one_sided = np.where(has_plus, rise, np.where(has_minus, -fall, 0.0))
    slope = np.where(both, rise - curvature * above, one_sided)
    return slope, curvature


def _secant(values: np.ndarray, centre: float, offsets: np.ndarray) -> np.ndarray:
    """``(value - centre) / offset`` where a probe was made (offset != 0) and scored; NaN elsewhere."""
    values, offsets = np.asarray(values, dtype=float), np.asarray(offsets, dtype=float)
    usable = (offsets != 0) & np.isfinite(values) & np.isfinite(centre)
    differences = np.where(usable, values, 0.0) - (centre if np.isfinite(centre) else 0.0)
    return np.divide(differences, offsets, out=np.full(values.shape, np.nan), where=usable)


def model_step(slope: np.ndarray, curvature: np.ndarray, radius: float | np.ndarray) -> np.ndarray:
    """The minimiser of ``sum(g x + a x**2)`` over ``|x_i| <= radius`` with ``sum(x) == 0``.

    Moves that sum to zero keep the mean sparsity of equal layers, as swaps do (the repair
    handles unequal ones). A gene whose curvature is not positive is moved to the edge its
    slope points away from; the common shift ``lam`` is found by bisection.
    """
    slope, radius = np.asarray(slope, dtype=float), np.broadcast_to(np.asarray(radius, dtype=float), slope.shape)
    curvature = np.maximum(np.asarray(curvature, dtype=float), 1e-9 * (np.abs(slope).max() + 1e-12))

    def step_at(lam: float) -> np.ndarray:
        return np.clip(-(slope + lam) / (2 * curvature), -radius, radius)

    high = np.abs(slope).max() + (2 * curvature * radius).max() + 1.0  # every gene at -radius
    low = -high  # every gene at +radius
    for _ in range(100):  # step_at is decreasing in lam: find where the moves sum to zero
        middle = 0.5 * (low + high)
        if step_at(middle).sum() > 0:
            low = middle
        else:
            high = middle
    return step_at(0.5 * (low + high))


class SensitivitySearch(SearchAlgorithm):
    """Probe each gene on both sides, fit a quadratic per gene, move the centre to its minimum.

    One round asks ``2 * n_var`` probes (the centre with one gene moved by ``probe`` times the
    box width, up or down) and then ``pop_size`` steps toward the minimum of the separable
    quadratic model fitted to them, within a trust radius and with moves that sum to zero: the
    full step, and shorter ones. The best genome seen becomes the next centre. Every round
    shrinks probe and radius by ``shrink``, a round that found nothing better by its square.

    With ``two_sided_every`` k > 1, only every k-th round probes both sides; the rounds between
    probe each gene once, on the side the last model says is downhill, and refit the slopes
    with the curvatures kept: ``n_var`` probes instead of ``2 * n_var``.

    Unlike the swap search, a round's probes are all independent: a pool of many evaluators
    scores them at once. The first generation evaluates the start genomes (the baselines; the
    box's centre without them). One objective only.
    """

    name = "sensitivity"

    def __init__(self, n_var: int, xl: Any, xu: Any, n_obj: int, pop_size: int, seed: int = 0,
                 repair: RepairFn | None = None, initial: Any = None, probe: float = 1 / 6,
                 radius: float = 1 / 4, shrink: float = 0.7, two_sided_every: int = 1) -> None:
        if n_obj != 1:
            raise InputError(
                f"the sensitivity search optimises one objective, got {n_obj}; use pymoo or optuna for fronts"
            )
        if not (0 < probe <= 0.5 and 0 < radius <= 1 and 0 < shrink <= 1 and int(two_sided_every) >= 1):
            raise InputError("sensitivity search needs 0 < probe <= 0.5, 0 < radius <= 1, 0 < shrink <= 1 and "
                             f"two_sided_every >= 1; got {probe}, {radius}, {shrink}, {two_sided_every}")
        starts = 0 if initial is None else len(np.atleast_2d(initial))
        super().__init__(n_var, xl, xu, n_obj, max(pop_size, starts), seed, repair, initial)
        self.steps, self.shrink, self.two_sided_every = int(pop_size), float(shrink), int(two_sided_every)
        self._probe, self._radius = float(probe), float(radius)
        self._centre: np.ndarray | None = None
        self._centre_value = math.inf
        self._phase = "start"  # start -> probe -> step -> probe -> ...
        # The last round's probes: how far below and above the centre (its anchor) they went,
        # and the model fitted to them.
        self._anchor: np.ndarray | None = None
        self._offsets: tuple[np.ndarray, np.ndarray] | None = None
        self._model: tuple[np.ndarray, np.ndarray] | None = None
        self._signed: np.ndarray | None = None  # a one-sided round's offsets, signed
        self._predicted: np.ndarray | None = None  # and the slopes the last model predicts there
        self._improved = False
        self._rounds = 0

    @property
    def _width(self) -> np.ndarray:
        return self.xu - self.xl

    @property
    def centre(self) -> np.ndarray | None:
        """The best genome evaluated so far (None before the start was told)."""
        return None if self._centre is None else self._centre.copy()

    def local_model(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float] | None:
        """The last fitted model, for searches that reuse it elsewhere; None before the first fit.

        Slope and curvature per gene at the point the last probes were centred on, that point,
        and the trust radius the next steps will use (a fraction of each gene's box width).
        """
        if self._model is None or self._anchor is None:
            return None
        return self._model[0], self._model[1], self._anchor, self._radius

    def _ask(self) -> np.ndarray:
        if self._phase == "start":
            starts = self.initial if len(self.initial) else ((self.xl + self.xu) / 2)[None, :]
            return self._repaired(starts)
        if self._phase == "probe":
            return self._repaired(self._probes())
        return self._repaired(self._model_steps())

    def _probes(self) -> np.ndarray:
        assert self._centre is not None
        reach = self._probe * self._width
        below = np.minimum(reach, self._centre - self.xl)
        above = np.minimum(reach, self.xu - self._centre)
        eye = np.eye(self.n_var)
        self._offsets, self._signed = (below, above), None
        if self._model is not None and self._rounds % self.two_sided_every != 0:
            self._predicted = self._slope_at(self._centre)
            up = ((self._predicted < 0) & (above > 0)) | (below <= 0)
            self._signed = np.where(up, above, -below)
        self._anchor, self._improved = self._centre.copy(), False
        if self._signed is not None:
            return self._anchor + eye * self._signed
        return np.concatenate([self._anchor - eye * below, self._anchor + eye * above])

    def _slope_at(self, genome: np.ndarray) -> np.ndarray:
        """The last model's slope per gene, moved from its anchor to ``genome``."""
        assert self._model is not None and self._anchor is not None
        slope, curvature = self._model
        return slope + 2 * curvature * (genome - self._anchor)

    def _model_steps(self) -> np.ndarray:
        assert self._anchor is not None and self._model is not None
        slope, curvature = self._model
        move = model_step(slope, curvature, self._radius * self._width)
        lengths = np.arange(self.steps, 0, -1) / self.steps  # the full step first
        return np.clip(self._anchor + lengths[:, None] * move, self.xl, self.xu)

    def _fitted(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model of this round's probes: both sides, or one side with the curvatures kept."""
        assert self._offsets is not None
        if self._signed is None:
            below, above = self._offsets
            return quadratic_through(values[: self.n_var], self._centre_value, values[self.n_var :], below, above)
        assert self._model is not None and self._predicted is not None
        curvature, offsets = self._model[1], self._signed
        # f(o) = f0 + g o + a o**2, so g = (f(o) - f0) / o - a o; a failed probe keeps the prediction.
        secant = _secant(values, self._centre_value, offsets)
        return np.where(np.isnan(secant), self._predicted, secant - curvature * offsets), curvature

    def _tell(self, objectives: np.ndarray, failed: np.ndarray) -> None:
        values = np.where(failed, math.inf, objectives[:, 0])
        if self._phase == "probe":
            self._model = self._fitted(values)
        best = int(np.argmin(values))
        if values[best] < self._centre_value:
            self._centre, self._centre_value = self._pending[best].copy(), float(values[best])
            self._improved = True
        if self._phase == "step":
            factor = self.shrink if self._improved else self.shrink**2
            self._probe, self._radius = self._probe * factor, self._radius * factor
            self._rounds += 1
        self._phase = "step" if self._phase == "probe" else "probe"

    # Everything a round changes; the settings come from the constructor again.
    _STATE = ("_centre", "_centre_value", "_phase", "_anchor", "_offsets", "_model", "_signed", "_predicted",
              "_improved", "_rounds", "_probe", "_radius")  # fmt: skip

    def _snapshot(self) -> dict[str, Any]:
        # Plain values, arrays and tuples of arrays: what a checkpoint stores as it is.
        return {key: getattr(self, key) for key in self._STATE}

    def _restore(self, snapshot: dict[str, Any]) -> None:
        for key in self._STATE:
            setattr(self, key, snapshot[key])
