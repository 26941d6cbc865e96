"""Capability objectives of the search: truth-probe accuracy and passkey retrieval.

The fitness objectives in :mod:`paretoprune.evaluators.fitness` compare a pruned model's
outputs with the dense model's on text windows. These two ask instead whether the pruned model
can still do something:

- ``probe``: held-out accuracy of logistic truth probes fitted on the pruned model's residual
  stream at the *dense* model's pivot block (the block where the dense model separates true from
  false statements best; found once per evaluator), leave one topic out by default;
- ``passkey``: exact-match retrieval of a hidden key on a small, fixed, seeded grid of prompts.

Both are accuracies in [0, 1] and are maximised (the search negates them, as every maximised
objective). What they read is prepared on the driver as plain data (:class:`CapabilityInputs`:
token ids and labels, no tokenizer), so it travels to the evaluator actors once.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from paretoprune.errors import InputError
from paretoprune.evaluators.passkey import passkey_found
from paretoprune.evaluators.truth import (
    EncodedStatements,
    check_split,
    encode_sets,
    encoded_activations,
    pivot_of,
    probe_scores,
)
from paretoprune.models import check_context
from paretoprune.passkey import PasskeyPrompt, passkey_prompt
from paretoprune.truth import TPLO_TOPICS, load_statements, truth_dir

__all__ = [
    "CAPABILITY_OBJECTIVES",
    "CapabilityInputs",
    "CapabilityScorer",
    "PasskeyInputs",
    "ProbeInputs",
    "capability_inputs",
    "passkey_inputs",
    "probe_inputs",
]

# The objectives this module scores (registered in fitness.OBJECTIVES, both "maximize").
CAPABILITY_OBJECTIVES = ("probe", "passkey")

# The probe objective's statements per topic, and the passkey objective's grid: small, so that a
# candidate costs about as much as the default fitness windows (16 x 256 tokens).
PROBE_STATEMENTS = 64
PASSKEY_LENGTHS = (256, 512)
PASSKEY_DEPTHS = (0.0, 0.5, 1.0)
PASSKEY_TRIALS = 2


@dataclass(frozen=True)
class ProbeInputs:
    """The statement sets a ``probe`` objective fits its probes on, as token ids."""

    topics: dict[str, EncodedStatements]
    split: str = "topics"  # leave one topic out; "statements": held-out statements of each topic
    l2: float = 1.0
    batch_size: int = 32

    def __post_init__(self) -> None:
        check_split(self.split)
        if self.split == "topics" and len(self.topics) < 2:
            raise InputError(f"the probe objective leaves one topic out and needs at least two topics, got {len(self.topics)}")


@dataclass(frozen=True)
class PasskeyInputs:
    """The fixed prompts a ``passkey`` objective scores, and the grid they were drawn on."""

    prompts: tuple[PasskeyPrompt, ...]
    description: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CapabilityInputs:
    """What the capability objectives of one search read; None where no objective needs it."""

    probe: ProbeInputs | None = None
    passkey: PasskeyInputs | None = None


def probe_inputs(
    model: nn.Module,
    tokenizer: Any,
    folder: Path | str | None,
    topics: Sequence[str] = TPLO_TOPICS,
    limit: int | None = PROBE_STATEMENTS,
    seed: int = 0,
    split: str = "topics",
) -> ProbeInputs:
    """Statement sets from ``folder`` (else ``$PARETOPRUNE_TRUTH_DIR``), at most ``limit`` a topic."""
    sets = load_statements(truth_dir(folder), topics, limit=limit, seed=seed)
    return ProbeInputs(encode_sets(model, tokenizer, sets), split=split)


def passkey_inputs(
    model: nn.Module,
    tokenizer: Any,
    filler: str = "builtin",
    lengths: Sequence[int] = PASSKEY_LENGTHS,
    depths: Sequence[float] = PASSKEY_DEPTHS,
    trials: int = PASSKEY_TRIALS,
    seed: int = 0,
) -> PasskeyInputs:
    """A seeded grid of passkey prompts (``trials`` per length and depth), checked against the
    model's context."""
    from paretoprune.data import tokenize

    if trials < 1:
        raise InputError(f"passkey trials must be at least 1, got {trials}")
    check_context(model.config, {"--passkey-lengths": max(lengths)})
    filler_ids = tokenize(tokenizer, filler, "evaluation")
    rng = random.Random(seed)
    prompts = tuple(
        passkey_prompt(tokenizer, filler_ids, int(length), float(depth), rng)
        for length in lengths for depth in depths for _ in range(trials)
    )  # fmt: skip
    description = {"filler": filler, "lengths": list(lengths), "depths": list(depths), "trials": trials, "seed": seed}
    return PasskeyInputs(prompts, description)


def capability_inputs(
    model: nn.Module,
    tokenizer: Any,
    objectives: Sequence[str],
    truth_folder: Path | str | None = None,
    seed: int = 0,
    probe_split: str = "topics",
) -> CapabilityInputs | None:
    """The inputs the capability objectives among ``objectives`` need, with their defaults."""
    bases = {name.partition("@")[0] for name in objectives}
    if not bases & set(CAPABILITY_OBJECTIVES):
        return None
    check_split(probe_split)  # a bad split fails even before the statements are read
    return CapabilityInputs(
        probe=probe_inputs(model, tokenizer, truth_folder, seed=seed, split=probe_split) if "probe" in bases else None,
        passkey=passkey_inputs(model, tokenizer, seed=seed) if "passkey" in bases else None,
    )


class CapabilityScorer:
    """Scores the capability objectives of the model as it currently runs (masked or not).

    Built on the dense model: for ``probe`` it runs the statements through every block once
    and keeps the pivot block; each :meth:`compare` then runs them only up to that block.
    """

    def __init__(self, model: nn.Module, inputs: CapabilityInputs | None, wanted: set[str]) -> None:
        self.model, self.wanted = model, set(wanted)
        self.probe = _needed(inputs, "probe") if "probe" in wanted else None
        self.passkey = _needed(inputs, "passkey") if "passkey" in wanted else None
        self.pivot = self._dense_pivot() if self.probe is not None else None
        if self.passkey is not None:
            longest = max(prompt.length + prompt.answer_ids.numel() for prompt in self.passkey.prompts)
            check_context(model.config, {"--passkey-lengths": longest})

    def compare(self) -> dict[str, float]:
        """The wanted capability objectives of the model as it runs now."""
        values: dict[str, float] = {}
        if self.probe is not None:
            values["probe"] = self.probe_accuracy()
        if self.passkey is not None:
            values["passkey"] = float(np.mean([passkey_found(self.model, prompt) for prompt in self.passkey.prompts]))
        return values

    def probe_accuracy(self) -> float:
        """Mean held-out accuracy of probes on the model's activations at the dense pivot block."""
        assert self.probe is not None and self.pivot is not None
        probe = self.probe
        features = {
            topic: encoded_activations(self.model, encoded, [self.pivot], probe.batch_size)[0]
            for topic, encoded in probe.topics.items()
        }
        labels = {topic: encoded.labels for topic, encoded in probe.topics.items()}
        return probe_scores(features, labels, probe.split, probe.l2)["mean"]

    def _dense_pivot(self) -> int:
        assert self.probe is not None
        activations = {
            topic: encoded_activations(self.model, encoded, None, self.probe.batch_size)
            for topic, encoded in self.probe.topics.items()
        }
        return pivot_of(activations, {topic: encoded.labels for topic, encoded in self.probe.topics.items()})[1]


def _needed(inputs: CapabilityInputs | None, name: str) -> Any:
    value = getattr(inputs, name, None) if inputs is not None else None
    if value is None:
        what = "truth statement sets (--truth-dir)" if name == "probe" else "passkey prompts"
        raise InputError(f"objective {name} needs its {what}: give the evaluator capability inputs for it")
    return value

