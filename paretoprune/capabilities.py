"""What ``eval`` measures beyond perplexity and zero-shot accuracy.

Three capability checks, each a small config and one function that returns plain numbers:

- **diagnostics** (ACBench's model-intrinsic ones): ERank, top-k ranking agreement and energy of
  a model against its dense reference, on the same text windows;
- **passkey** (ACBench's long-context retrieval): exact-match accuracy on a length-by-depth grid
  of passkey prompts, optionally drawn as a heat map;
- **test-time pruning** (μ-MoE): perplexity with masks made per window from its first part,
  beside the unpruned model on exactly the same scored tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from paretoprune.errors import InputError
from paretoprune.models import LoadedModel, check_context, find_layout
from paretoprune.registry import Registry

__all__ = ["GENERATED_TASKS", "PASSKEY_TASK", "PasskeyOptions", "TestTimeOptions", "diagnostics", "passkey", "test_time"]

# ``--tasks passkey``: generated from local text rather than read from task files.
PASSKEY_TASK = "passkey"
GENERATED_TASKS: Registry[str] = Registry("generated task", option="--tasks")
GENERATED_TASKS.register(
    PASSKEY_TASK, "passkey",
    summary="a random 5-digit key hidden at a chosen depth of filler text; exact match of the answer "
    "(--passkey-lengths, --passkey-depths)",
)  # fmt: skip


def diagnostics(reference: LoadedModel, model: LoadedModel, windows: torch.Tensor) -> dict[str, float]:
    """ERank, top-k tau and energy of ``model`` against ``reference`` (the dense model)."""
    from paretoprune.evaluators.diagnostics import compare_models
    from paretoprune.evaluators.fitness import FitnessTokens

    if reference.model.config.vocab_size != model.model.config.vocab_size:
        raise InputError("--reference has another vocabulary than --model: give the dense model this one was pruned from")
    return compare_models(reference.model, model.model, FitnessTokens(windows))


@dataclass
class PasskeyOptions:
    lengths: tuple[int, ...] = (256, 512, 1024)  # prompt lengths in tokens
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)  # where the key sits in the filler
    trials: int = 4  # prompts per cell, each with its own key
    filler: str = "builtin"  # text the key is hidden in
    seed: int = 0
    plot: Path | None = None  # heat map PNG


def passkey(loaded: LoadedModel, options: PasskeyOptions, progress: bool = True) -> dict[str, Any]:
    """The passkey grid of one model (accuracy per length and depth, and their mean)."""
    from paretoprune.evaluators.passkey import passkey_grid, plot_passkey_grids
    from paretoprune.passkey import passkey_prompts

    check_context(loaded.model.config, {"--passkey-lengths": max(options.lengths)})
    prompts = passkey_prompts(loaded.tokenizer, options.filler, options.lengths, options.depths, options.trials,
                              options.seed)  # fmt: skip
    grid = passkey_grid(loaded.model, prompts, progress=progress)
    if options.plot is not None:
        plot_passkey_grids({"model": grid}, options.plot)
    return grid.to_dict()


@dataclass
class TestTimeOptions:
    __test__ = False  # not a pytest test class, despite its name

    ratio: float  # fraction of each row's weights (or of the input channels) kept per prompt
    structured: bool = False  # keep whole input channels: smaller matrices, real speed
    context_fraction: float = 0.5  # the part of each window the masks are made from; the rest is scored


def test_time(loaded: LoadedModel, windows: torch.Tensor, options: TestTimeOptions) -> dict[str, Any]:
    """Test-time pruned perplexity beside the model's own, on the same scored tokens."""
    from paretoprune.evaluators.runtime_pruning import TestTimePruner, split_perplexity, test_time_perplexity

    pruner = TestTimePruner(loaded.model, find_layout(loaded.model), options.ratio, options.structured)
    pruned = test_time_perplexity(pruner, windows, options.context_fraction)
    unpruned = split_perplexity(loaded.model, windows, options.context_fraction)
    return {
        "ratio": options.ratio, "structured": options.structured, "context_tokens": pruned.context,
        "scored_tokens": pruned.tokens, "perplexity": pruned.perplexity, "unpruned_perplexity": unpruned.perplexity,
    }  # fmt: skip


test_time.__test__ = False  # type: ignore[attr-defined]  # a function, not a pytest test
