"""Scoring rules that score every weight of the model in one pass over the whole model.

Most scoring rules are points of the meta-metric family (:mod:`paretoprune.metrics.scores`):
a formula of one layer's weights and its input norms, computed block by block while the
calibration walk goes on. Some rules need the whole model at once instead: UniPruning follows
a saliency through a short fine-tune of every layer together, and LRP propagates relevance from
the logits back through every block. Such a rule runs once on the dense model, before any
pruning, and gives a score map: one non-negative score tensor per prunable linear, shaped like
its weight matrix. ``prune_model(..., scores=...)`` then masks each layer by its map exactly as
it masks by a family rule's scores (per row, per layer or per N:M group, any row allocation).

A rule registers here under the name that ``prune --method`` and ``apply --pruner`` accept; a
layerwise search takes it as its base metric (``search --base-metric lrp``), and a candidate or
a recipe names it in its ``global_rule`` field. :func:`cached_score_map` is how every one of
them gets a rule's map: from the user's score cache where it is, else computed and cached.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from paretoprune.errors import InputError
from paretoprune.models import ModelLayout, cache_dir
from paretoprune.registry import Registry

__all__ = [
    "GLOBAL_SCORES",
    "UNIPRUNING_RULES",
    "GlobalScoreInputs",
    "GlobalScoringRule",
    "ScoreMap",
    "cached_score_map",
    "check_score_map",
    "unipruning_settings",
]

# One non-negative fp32 score tensor per prunable linear, by module name, shaped [out, in].
ScoreMap = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class GlobalScoreInputs:
    """What a global scoring rule may read: the dense model, its calibration windows, and
    where to cache what it computed (``None``: no cache)."""

    model: nn.Module
    layout: ModelLayout
    tokens: torch.Tensor  # [windows, seqlen] calibration token ids
    model_id: str = ""  # the model's name or path, part of a cache key
    cache_dir: Path | None = None
    seed: int = 0
    progress: bool = True
    # The rule's settings that differ from its defaults, e.g. UniPruning's {"steps": 8}; a rule
    # keys its cache on all of its settings, so these are part of the key.
    settings: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class GlobalScoringRule:
    """A rule that scores every weight of the model at once."""

    compute: Callable[[GlobalScoreInputs], dict[str, torch.Tensor]]
    structures: tuple[str, ...] = ("unstructured", "N:M")  # mask structures its scores suit


GLOBAL_SCORES: Registry[GlobalScoringRule] = Registry("global scoring rule", option="--method")


def check_score_map(scores: ScoreMap, layout: ModelLayout) -> None:
    """Refuse, in one line, a score map that does not cover this model's linears exactly."""
    missing = [linear.name for linear in layout.linears if linear.name not in scores]
    if missing:
        raise InputError(f"the score map has no scores for {len(missing)} layer(s), e.g. {missing[0]}: "
                         "it was computed for another model")  # fmt: skip
    for linear in layout.linears:
        shape = tuple(scores[linear.name].shape)
        if shape != (linear.out_features, linear.in_features):
            raise InputError(f"the scores of {linear.name} have shape {shape}, the layer's weight is "
                             f"[{linear.out_features}, {linear.in_features}]: computed for another model")  # fmt: skip


def cached_score_map(
    rule: str, model: nn.Module, layout: ModelLayout, tokens: torch.Tensor, *, model_id: str = "", seed: int = 0,
    progress: bool = True, settings: Mapping[str, int] | None = None,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """The score map of the registered global ``rule`` for the dense ``model`` on the calibration
    ``tokens``: read from the user's score cache (``<cache>/scores``) where the rule, its
    ``settings``, the weights and the tokens match, else computed there and cached."""
    inputs = GlobalScoreInputs(model, layout, tokens, model_id=model_id, cache_dir=cache_dir() / "scores",
                               seed=seed, progress=progress, settings=dict(settings or {}))  # fmt: skip
    return GLOBAL_SCORES.lookup(rule).compute(inputs)


# ------------------------------------------------------------------------------------------------
# The registered rules. Each imports its module on first use: those modules import this one (for
# GlobalScoreInputs), and a command that never asks for the rule should not load its code.


UNIPRUNING_RULES = ("unipruning", "unipruning-static")
# What --unipruning-steps and --unipruning-seqlen may change: setting -> (least value, an example).
_UNIPRUNING_OPTIONS = {"steps": (1, 64), "seqlen": (2, 256)}


def unipruning_settings(method: str, steps: int | None = None, seqlen: int | None = None) -> dict[str, int]:
    """The settings ``--unipruning-steps`` and ``--unipruning-seqlen`` give the rule ``method``
    (only those given); one line for a value out of range or a method that is not UniPruning."""
    given = {name: value for name, value in (("steps", steps), ("seqlen", seqlen)) if value is not None}
    for name, value in given.items():
        if method not in UNIPRUNING_RULES:
            raise InputError(f"--unipruning-{name} sets UniPruning's calibration: use it with "
                             f"{' or '.join(UNIPRUNING_RULES)}, not {method}")  # fmt: skip
        least, example = _UNIPRUNING_OPTIONS[name]
        if value < least:
            raise InputError(f"--unipruning-{name} {value} is too small: give at least {least}, e.g. {example}")
    return given


def _unipruning(inputs: GlobalScoreInputs) -> dict[str, torch.Tensor]:
    from paretoprune.unipruning import UniPruningSettings, unipruning_scores

    return unipruning_scores(inputs, UniPruningSettings(train=True, **inputs.settings))


def _unipruning_static(inputs: GlobalScoreInputs) -> dict[str, torch.Tensor]:
    from paretoprune.unipruning import UniPruningSettings, unipruning_scores

    return unipruning_scores(inputs, UniPruningSettings(train=False, **inputs.settings))


GLOBAL_SCORES.register(
    "unipruning", GlobalScoringRule(compute=_unipruning),
    summary="UniPruning: |Gamma| of a mirror descent that follows a stochastic RIA saliency through a "
    "short AdamW fine-tune on the calibration windows (64 steps); the fine-tuned weights are discarded",
)  # fmt: skip
GLOBAL_SCORES.register(
    "unipruning-static", GlobalScoringRule(compute=_unipruning_static),
    summary="UniPruning without the fine-tune: the mirror descent follows the stochastic RIA saliency "
    "of the dense weights over the calibration windows (forward passes only)",
)  # fmt: skip


def _lrp(inputs: GlobalScoreInputs) -> dict[str, torch.Tensor]:
    from paretoprune.lrp import lrp_scores  # it imports this module (GlobalScoreInputs)

    return lrp_scores(inputs)


GLOBAL_SCORES.register(
    "lrp", GlobalScoringRule(compute=_lrp),
    summary="LRP: mean |relevance| of each weight for the true next-token logits of the calibration "
    "windows (AttnLRP rules, epsilon rule on the linears; llama, mistral and qwen2 families)",
)  # fmt: skip
