"""Recipes for a tiny model, as a search would export them (test helper)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from paretoprune.candidate import Candidate
from paretoprune.metrics.scores import SCORING_RULES
from paretoprune.models import find_layout, fingerprint
from paretoprune.recipe import Recipe


def tiny_recipe(model: nn.Module, sparsities: Mapping[str, float] | float, *, rule: str = "wanda",
                calibration_source: str = "c4/c4.jsonl", run: str = "runs/r", seqlen: int = 8) -> Recipe:  # fmt: skip
    """A recipe for ``model``: one sparsity for every layer, or one per layer name."""
    layout = find_layout(model)
    layers = {name: sparsities for name in layout.names} if isinstance(sparsities, float) else dict(sparsities)
    return Recipe.from_candidate(
        Candidate(SCORING_RULES[rule], layers), model_name="tiny-llama", fingerprint=fingerprint(model),
        family=layout.family, layer_numels=dict(zip(layout.names, layout.numels, strict=True)), objectives={"kl": 0.5},
        provenance={"calibration": {"source": calibration_source, "sha256": "ab" * 32, "nsamples": 2, "seqlen": seqlen,
                                    "seed": 0}, "search": {"run": run, "evaluation": 3}},
    )  # fmt: skip
