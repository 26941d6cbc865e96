"""The evaluator each Ray actor builds: a CandidateEvaluator on its own copy of the model.

The driver gathers everything the actors share once (tokens, statistics, the fixed scoring
rule, a global rule's score map) into one :class:`EvaluatorInputs`, which travels through Ray's
object store once (the pool puts it there before it starts the actors). Each
actor then loads the model itself, places it on its GPUs (or leaves it on the CPU), and scores
the :class:`~paretoprune.candidate.Candidate` objects the pool hands it. Each actor resolves
``--dtype`` for its own device, so ``auto`` gives the checkpoint's dtype on a GPU worker::

    pool = EvaluatorPool(RemoteEvaluator, (inputs,), workers=4)
    outcomes = pool.evaluate(candidates)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from paretoprune.candidate import Candidate
from paretoprune.evaluators.capability_fitness import CapabilityInputs
from paretoprune.evaluators.fitness import CandidateEvaluator, FitnessTokens
from paretoprune.evaluators.stats import ChannelStats
from paretoprune.global_scores import ScoreMap
from paretoprune.metrics.scores import MetricSpec

__all__ = ["EvaluatorInputs", "RemoteEvaluator"]


@dataclass(frozen=True)
class EvaluatorInputs:
    """What every actor builds its evaluator from; read-only, shared by all of them."""

    model_spec: str  # what each actor loads: it must resolve on every node (a hub id, or the same path)
    tokens: torch.Tensor  # the fitness windows, [nsamples, seqlen]
    stats: dict[str, ChannelStats]  # activation statistics of the dense model, by linear
    objectives: tuple[str, ...]
    # The scoring rule every candidate shares (layerwise mode): its ranks are cached once. A
    # string names a global rule of ``score_maps``. None when the search moves the rule itself.
    rank_metric: MetricSpec | str | None = None
    # The tokens of objectives written name@SOURCE, by SOURCE.
    sources: dict[str, FitnessTokens] = field(default_factory=dict)
    # What the capability objectives (probe, passkey) read, as token ids; None when none is asked for.
    capabilities: CapabilityInputs | None = None
    # --dtype, resolved by each actor for its own device: auto is the checkpoint's dtype on a
    # GPU and fp32 on a CPU.
    dtype: str = "auto"
    # The score maps of the dense model by global rule (on the CPU, computed once on the driver):
    # what the masks of candidates that name the rule rank.
    score_maps: dict[str, ScoreMap] = field(default_factory=dict)


class RemoteEvaluator:
    """A CandidateEvaluator built inside a Ray actor from :class:`EvaluatorInputs`."""

    def __init__(self, inputs: EvaluatorInputs) -> None:
        from paretoprune.evaluators.placement import check_model_fits, place_model, stats_to_devices, worker_device
        from paretoprune.models import find_layout, load_model, model_dtype

        dtype = model_dtype(inputs.model_spec, inputs.dtype, worker_device())
        check_model_fits(inputs.model_spec, dtype=dtype)  # before loading: one clear line if it cannot fit
        loaded = load_model(inputs.model_spec, dtype=dtype)
        layout = find_layout(loaded.model)
        device = place_model(loaded.model, layout)  # one GPU, its blocks over several GPUs, or the CPU
        self._device = device
        self._evaluator = CandidateEvaluator(
            loaded.model, layout, stats_to_devices(inputs.stats, layout), inputs.tokens.to(device),
            objectives=inputs.objectives, rank_metric=inputs.rank_metric,
            sources={name: _on(device, tokens) for name, tokens in inputs.sources.items()},
            capabilities=inputs.capabilities, score_maps=inputs.score_maps,
        )  # fmt: skip

    def evaluate(self, candidate: Candidate) -> dict[str, float]:
        return self._evaluator.evaluate(candidate)

    def peak_memory(self) -> int:
        """Bytes at this actor's peak: resident memory on a CPU, torch's allocation on a GPU."""
        from paretoprune.evaluators.memory import peak_memory_bytes

        return peak_memory_bytes(self._device)


def _on(device: torch.device, tokens: FitnessTokens) -> FitnessTokens:
    mask = None if tokens.attention_mask is None else tokens.attention_mask.to(device)
    return FitnessTokens(tokens.input_ids.to(device), mask)
