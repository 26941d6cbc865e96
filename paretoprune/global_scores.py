"""Scoring rules that score every weight of the model in one pass over the whole model.

Most scoring rules are points of the meta-metric family (:mod:`paretoprune.metrics.scores`):
a formula of one layer's weights and its input norms, computed block by block while the
calibration walk goes on. Some rules need the whole model at once instead: UniPruning follows
a saliency through a short fine-tune of every layer together, and LRP propagates relevance from
the logits back through every block. Such a rule runs once on the dense model, before any
pruning, and gives a score map: one non-negative score tensor per prunable linear, shaped like
its weight matrix. ``prune_model(..., scores=...)`` then masks each layer by its map exactly as
it masks by a family rule's scores (per row, per layer or per N:M group, any row allocation).

A rule registers here under the name that ``prune --method`` and ``apply --pruner`` accept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from paretoprune.errors import InputError
from paretoprune.models import ModelLayout
from paretoprune.registry import Registry

__all__ = ["GLOBAL_SCORES", "GlobalScoreInputs", "GlobalScoringRule", "ScoreMap", "check_score_map"]

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


# ------------------------------------------------------------------------------------------------
# The registered rules. Each imports its module on first use: those modules import this one (for
# GlobalScoreInputs), and a command that never asks for the rule should not load its code.


def _unipruning(inputs: GlobalScoreInputs) -> dict[str, torch.Tensor]:
    from paretoprune.unipruning import UniPruningSettings, unipruning_scores

    return unipruning_scores(inputs, UniPruningSettings(train=True))


def _unipruning_static(inputs: GlobalScoreInputs) -> dict[str, torch.Tensor]:
    from paretoprune.unipruning import UniPruningSettings, unipruning_scores

    return unipruning_scores(inputs, UniPruningSettings(train=False))


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
