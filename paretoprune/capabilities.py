"""What ``eval`` measures beyond perplexity and zero-shot accuracy.

Three capability checks, each a small config and one function that returns plain numbers:

- **diagnostics** (ACBench's model-intrinsic ones): ERank, top-k ranking agreement and energy of
  a model against its dense reference, on the same text windows;
- **passkey** (ACBench's long-context retrieval): exact-match accuracy on a length-by-depth grid
  of passkey prompts, optionally drawn as a heat map;
- **test-time pruning** (μ-MoE): perplexity with masks made per window from its first part,
  beside the unpruned model on exactly the same scored tokens;
- **truth probe** (TPLO's probe evaluation): logistic probes on the residual stream at the dense
  model's pivot block, tested on held-out topics and on held-out statements of each topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from paretoprune.truth import TPLO_TOPICS

from paretoprune.errors import InputError
from paretoprune.models import LoadedModel, check_context, find_layout
from paretoprune.registry import Registry

__all__ = [
    "GENERATED_TASKS",
    "PASSKEY_TASK",
    "PasskeyOptions",
    "TestTimeOptions",
    "TruthProbeOptions",
    "diagnostics",
    "passkey",
    "test_time",
    "truth_probe",
]

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
        **test_time_header(options), "context_tokens": pruned.context,
        "scored_tokens": pruned.tokens, "perplexity": pruned.perplexity, "unpruned_perplexity": unpruned.perplexity,
    }  # fmt: skip


def test_time_header(options: TestTimeOptions) -> dict[str, Any]:
    """The settings every test-time result starts with."""
    return {"ratio": options.ratio, "structured": options.structured}


def test_time_tasks(
    loaded: LoadedModel, tasks: Any, task_dir: Path, options: TestTimeOptions, batch_size: int = 8, progress: bool = True
) -> dict[str, Any]:
    """Zero-shot metrics with masks made per question from its context alone (``tasks``: the
    zero-shot TaskOptions; the same examples as the unpruned scores)."""
    from paretoprune.evaluators.runtime_pruning import TestTimePruner
    from paretoprune.evaluators.zeroshot import evaluate_tasks

    pruner = TestTimePruner(loaded.model, find_layout(loaded.model), options.ratio, options.structured)
    return evaluate_tasks(
        loaded.model, loaded.tokenizer, list(tasks.tasks), task_dir, limit=tasks.limit, batch_size=batch_size,
        progress=progress, calib_fraction=tasks.calib_fraction, split_seed=tasks.split_seed, pruner=pruner,
    )  # fmt: skip


test_time.__test__ = False  # type: ignore[attr-defined]  # a function, not a pytest test
test_time_header.__test__ = False  # type: ignore[attr-defined]
test_time_tasks.__test__ = False  # type: ignore[attr-defined]


@dataclass
class TruthProbeOptions:
    """Which statement sets the truth probe reads, and how many statements of each."""

    truth_dir: Path | None = None  # default $PARETOPRUNE_TRUTH_DIR
    topics: tuple[str, ...] = TPLO_TOPICS
    limit: int | None = 256  # statements per topic, a seeded draw keeping the class balance; None: all
    seed: int = 0
    l2: float = 1.0  # the probes' L2 penalty on standardised activations


def check_truth_probe(options: TruthProbeOptions) -> None:
    """Fail before any model loads on a missing folder, a missing file or a single-class set."""
    from paretoprune.truth import load_statements, truth_dir

    if len(options.topics) < 2:
        raise InputError(f"--truth-probe leaves one topic out: name at least two topics, got {len(options.topics)}")
    load_statements(truth_dir(options.truth_dir), options.topics, limit=options.limit, seed=options.seed)


def truth_probe(loaded: LoadedModel, options: TruthProbeOptions, reference: LoadedModel | None = None) -> dict[str, Any]:
    """Probe accuracy of ``loaded`` (and of the dense ``reference``) at the dense pivot block.

    Leave one topic out is the headline (``topics``): a probe that still works on a topic it
    never saw reads truth rather than a feature of one topic's wording. Held-out statements of
    each topic (``statements``) are reported beside it, since a small model's probes often
    separate within a topic but do not carry over to the next one.
    """
    from paretoprune.evaluators.truth import truth_probe as run_probe
    from paretoprune.truth import load_statements, truth_dir

    sets = load_statements(truth_dir(options.truth_dir), options.topics, limit=options.limit, seed=options.seed)
    report = run_probe(loaded.model, loaded.tokenizer, sets, None if reference is None else reference.model, options.l2)
    return {**report, "limit": options.limit, "seed": options.seed}
