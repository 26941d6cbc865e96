"""Scoring a candidate as its recipe will be applied: masks, then the solver chain, one-shot.

The search's fitness scores a candidate's masks alone. A recipe is applied with a solver chain
(e.g. SparseGPT's ``update`` of the kept weights), which changes the error a lot and can change
which allocation is best. :class:`AppliedScorer` measures the model that
``prune_model(model, layout, candidate, calibration)`` (one-shot) would leave, without pruning
a copy of the model per candidate:

- what depends only on the dense model and the calibration is computed once: the activation
  norms (Wanda, RIA) and each linear's Hessian ``2/n X^T X``. With one-shot calibration every
  block is calibrated on the dense model's activations, so these are the Hessians ``prune_model``
  would gather for any candidate;
- per candidate, each linear's pruned weight (mask, then ``candidate.solvers``) is computed just
  in time inside the forward pass of :class:`~paretoprune.evaluators.fitness.CandidateEvaluator`,
  so only one solved layer exists at a time and the dense weights are never touched.

A candidate that names a global scoring rule (``Candidate.global_rule``) is masked by that rule's
score map, as ``prune_model(..., scores=map)`` masks it; each finalist actor reads the map from
the score cache (or computes it) on the calibration windows, before any mask.

Sequential calibration (each block on the pruned blocks' outputs) depends on the candidate, so
it cannot be cached this way; finalists are scored one-shot.

Memory: beside the model, every linear's Hessian (``in_features^2`` fp32 each) and the dense
targets of the finalist tokens (for ``kl``, ``tokens x vocabulary`` fp32 probabilities).

:class:`AppliedEvaluator` is the same scorer built inside a Ray actor, for the evaluator pool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.evaluators.fitness import CandidateEvaluator, FitnessTokens
from paretoprune.evaluators.sources import SourceDraw, held_out_sources
from paretoprune.evaluators.stats import ChannelStats, collect_stats
from paretoprune.global_scores import ScoreMap, cached_score_map
from paretoprune.metrics import masks
from paretoprune.metrics.masks import parse_structure
from paretoprune.metrics.solvers import run_chain
from paretoprune.models import ModelLayout, PrunableLinear
from paretoprune.pruning import keep_mask

__all__ = ["AppliedEvaluator", "AppliedInputs", "AppliedScorer"]


class AppliedScorer:
    """The objectives of candidates pruned as applied, against the dense model on ``tokens``."""

    def __init__(
        self,
        model: torch.nn.Module,
        layout: ModelLayout,
        calibration: torch.Tensor,
        tokens: torch.Tensor,
        *,
        objectives: Sequence[str] = ("kl", "sparsity"),
        sources: Mapping[str, FitnessTokens] | None = None,
        score_maps: Mapping[str, ScoreMap] | None = None,
    ) -> None:
        """``calibration``: the windows the recipe is applied with (statistics and Hessians);
        ``tokens``: the windows the objectives are measured on; ``score_maps``: the dense
        model's score map by global rule, for candidates that name one."""
        self.layout = layout
        self._score_maps = dict(score_maps or {})
        # Gathered before the evaluator's parametrizations exist: the plain dense model, as
        # prune_model's one-shot walk sees it.
        self._stats = collect_stats(model, layout, calibration, hessian=True)
        self._evaluator = CandidateEvaluator(model, layout, self._stats, tokens, objectives=objectives,
                                             sources=sources, score_maps=self._score_maps)  # fmt: skip

    def evaluate(self, candidate: Candidate) -> dict[str, float]:
        """The objectives of ``candidate`` after its masks and its solvers (``candidate.solvers``)."""
        if candidate.rows != "uniform":
            raise InputError(f"finalists are scored with uniform rows; --rows {candidate.rows} is not supported here")
        if candidate.global_rule is not None and candidate.global_rule not in self._score_maps:
            raise InputError(f"the candidate's masks rank the {candidate.global_rule} score map, which this scorer "
                             f"was not given: pass score_maps={{'{candidate.global_rule}': map}}")  # fmt: skip
        return self._evaluator.evaluate(candidate, solve=lambda linear, weight: self._pruned(linear, weight, candidate))

    def close(self) -> None:
        """The model as it was loaded (no parametrizations)."""
        self._evaluator.close()

    def _pruned(self, linear: PrunableLinear, weight: torch.Tensor, candidate: Candidate) -> torch.Tensor:
        """One linear's weight as prune_model leaves it: the rule's mask, then the chain."""
        sparsity = float(candidate.sparsities.get(linear.name, 0.0))
        if sparsity == 0.0 and parse_structure(candidate.structure) is None:
            return weight
        matrix = weight.t() if linear.transposed else weight  # [out, in], as prune_model sees it
        stats = self._stats[linear.name]
        keep = self._keep(linear, matrix, candidate, sparsity)
        if candidate.solvers:
            solved, _ = run_chain(tuple(candidate.solvers), matrix.float(), keep, stats.hessian())
            pruned = solved.to(weight.dtype)
        else:
            pruned = matrix * keep.to(weight.dtype)
        return pruned.t() if linear.transposed else pruned

    def _keep(self, linear: PrunableLinear, matrix: torch.Tensor, candidate: Candidate, sparsity: float) -> torch.Tensor:
        """The keep mask of one [out, in] matrix: by the candidate's global rule's map, as
        prune_model masks by a given map, else by its metric's scores."""
        if candidate.global_rule is None:
            return keep_mask(matrix, self._stats[linear.name].act_norm, candidate.metric, sparsity, candidate.structure,
                             candidate.group, linear.name)  # fmt: skip
        scores = self._score_maps[candidate.global_rule][linear.name].to(matrix.device, torch.float32)
        return masks.keep_mask(scores, sparsity, parse_structure(candidate.structure), candidate.group, linear.name)

    @property
    def stats(self) -> Mapping[str, ChannelStats]:
        """The calibration statistics, Hessians included (gathered once)."""
        return self._stats


@dataclass(frozen=True)
class AppliedInputs:
    """What each finalist actor builds its scorer from. The windows are drawn by each actor from
    ``calib`` (seeded, so all draw the same) where no ``held_out`` window lies; the text must
    resolve on every node, as the model."""

    model_spec: str
    calib: str
    # The calibration the recipe is applied with: the search's statistics windows.
    calib_nsamples: int
    calib_seqlen: int
    # The finalist windows the objectives are measured on.
    windows: int
    seqlen: int
    seed: int
    objectives: tuple[str, ...]
    # The sources of ``objective@source`` objectives, and how the search drew them: the actor
    # measures each on tokens the search did not read (:func:`held_out_sources`).
    sources: tuple[str, ...] = ()
    source_draw: SourceDraw | None = None
    dtype: str = "auto"
    calib_seed: int = 0
    # The (windows, seqlen, seed) draws of the same text the measured windows must not touch:
    # the fitness windows the finalists were chosen on, and the calibration they are applied with.
    held_out: tuple[tuple[int, int, int], ...] = ()
    # The global scoring rule whose score map the finalists' masks rank (a search's global base
    # metric): each actor reads it from the score cache, or computes it, on the calibration windows.
    global_rule: str | None = None


class AppliedEvaluator:
    """An :class:`AppliedScorer` built inside a Ray actor from :class:`AppliedInputs`."""

    def __init__(self, inputs: AppliedInputs) -> None:
        from paretoprune.data import calibration_windows, held_out_windows
        from paretoprune.evaluators.placement import check_model_fits, place_model, worker_device
        from paretoprune.models import find_layout, load_model, model_dtype

        dtype = model_dtype(inputs.model_spec, inputs.dtype, worker_device())
        check_model_fits(inputs.model_spec, dtype=dtype)
        loaded = load_model(inputs.model_spec, dtype=dtype)
        layout = find_layout(loaded.model)
        device = place_model(loaded.model, layout)
        calibration = calibration_windows(loaded.tokenizer, inputs.calib, inputs.calib_nsamples, inputs.calib_seqlen,
                                          inputs.calib_seed)  # fmt: skip
        tokens = held_out_windows(loaded.tokenizer, inputs.calib, inputs.windows, inputs.seqlen, inputs.seed,
                                  inputs.held_out)  # fmt: skip
        sources = {} if inputs.source_draw is None else held_out_sources(
            loaded.tokenizer, inputs.sources, inputs.source_draw, inputs.windows, inputs.seed,
            taken={inputs.calib: inputs.held_out})  # fmt: skip
        sources = {name: _on(device, source) for name, source in sources.items()}
        calibration = calibration.to(device)
        # On the dense model, before the scorer's parametrizations: as `apply` scores it.
        maps = {} if inputs.global_rule is None else {inputs.global_rule: cached_score_map(
            inputs.global_rule, loaded.model, layout, calibration, model_id=inputs.model_spec, seed=inputs.calib_seed,
            progress=False)}  # fmt: skip
        self._scorer = AppliedScorer(loaded.model, layout, calibration, tokens.to(device),
                                     objectives=inputs.objectives, sources=sources, score_maps=maps)  # fmt: skip

    def evaluate(self, candidate: Candidate) -> dict[str, float]:
        return self._scorer.evaluate(candidate)


def _on(device: torch.device, tokens: FitnessTokens) -> FitnessTokens:
    mask = None if tokens.attention_mask is None else tokens.attention_mask.to(device)
    return FitnessTokens(tokens.input_ids.to(device), mask)
