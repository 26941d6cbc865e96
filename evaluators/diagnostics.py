"""All of ACBench's model-intrinsic diagnostics of one pruned model against the dense one.

:func:`model_diagnostics` runs the model twice on the same tokens, dense and then inside a
context that prunes it, and reports every diagnostic of :mod:`paretoprune.metrics.diagnostics`
at once. The search's objectives (``erank``, ``topk_tau``, ``energy_shift`` in
:mod:`paretoprune.evaluators.fitness`) are the same quantities, reduced to one number to
optimise each:

- ``diff_erank = erank_dense - erank_pruned`` (ERank of the final hidden states; positive when
  pruning collapses them onto fewer directions); the objective ``erank`` is its absolute value.
- ``topk_tau_K``: the mean over positions of Kendall's tau-b between dense and pruned logits on
  the dense top K tokens, for K in 3, 10 and 20; the objective ``topk_tau`` is ``topk_tau_10``.
- ``energy_shift = energy_mean_pruned - energy_mean_dense`` (signed; the objective
  ``energy_shift`` is its absolute value) and ``energy_w1``, the Wasserstein-1 distance between
  the per-position energies of the two runs.

Padding positions are left out, as for the objectives.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

from paretoprune.evaluators.fitness import TOPK_CACHED, FitnessTokens, fitness_hidden_states
from paretoprune.metrics.diagnostics import effective_rank, energy, kendall_tau, wasserstein_1d
from paretoprune.models import logits_from_hidden

__all__ = ["TAU_KS", "compare_models", "model_diagnostics"]

# The k of the top-k ranking agreement that ACBench reports; the largest is TOPK_CACHED.
TAU_KS = (3, 10, 20)


@dataclass(frozen=True)
class _Run:
    """What the diagnostics need of one run of the model on the fitness tokens."""

    erank: float  # of the final hidden states
    energies: torch.Tensor  # [positions]
    top_ids: torch.Tensor  # [positions, TOPK_CACHED]: the dense model's top tokens
    top_logits: torch.Tensor  # [positions, TOPK_CACHED]: this run's logits of those tokens


def model_diagnostics(
    model: nn.Module,
    tokens: FitnessTokens,
    pruned: Callable[[], AbstractContextManager[object]],
    *,
    token_chunk: int = 512,
) -> dict[str, float]:
    """The diagnostics of the model as ``pruned()`` runs it, against the model as it is now.

    ``pruned`` returns a context inside which the model runs pruned and after which it is dense
    again, e.g. ``lambda: evaluator.applied(candidate)`` of a
    :class:`~paretoprune.evaluators.fitness.CandidateEvaluator` built on the same model.
    """
    with torch.inference_mode():
        dense = _run(model, tokens, token_chunk, top_ids=None)
        with pruned():
            sparse = _run(model, tokens, token_chunk, top_ids=dense.top_ids)
    return _summary(dense, sparse)


def compare_models(
    dense_model: nn.Module, pruned_model: nn.Module, tokens: FitnessTokens, *, token_chunk: int = 512
) -> dict[str, float]:
    """The same diagnostics for two separate models, e.g. a saved pruned model and its dense
    original, on the same tokens."""
    with torch.inference_mode():
        dense = _run(dense_model, tokens, token_chunk, top_ids=None)
        sparse = _run(pruned_model, tokens, token_chunk, top_ids=dense.top_ids)
    return _summary(dense, sparse)


def _summary(dense: _Run, sparse: _Run) -> dict[str, float]:
    dense_mean, sparse_mean = float(dense.energies.mean()), float(sparse.energies.mean())
    taus = {
        f"topk_tau_{k}": float(kendall_tau(dense.top_logits[:, :k], sparse.top_logits[:, :k]).mean())
        for k in TAU_KS
    }
    return {
        "erank_dense": dense.erank,
        "erank_pruned": sparse.erank,
        "diff_erank": dense.erank - sparse.erank,
        **taus,
        "energy_mean_dense": dense_mean,
        "energy_mean_pruned": sparse_mean,
        "energy_shift": sparse_mean - dense_mean,
        "energy_w1": float(wasserstein_1d(sparse.energies, dense.energies)),
    }


def _run(model: nn.Module, tokens: FitnessTokens, token_chunk: int, top_ids: torch.Tensor | None) -> _Run:
    """One run; ``top_ids`` None means this is the dense run, which picks the top tokens itself.

    The logits exist one chunk of ``token_chunk`` positions at a time; only the energies and the
    logits of the top tokens are kept.
    """
    hidden = fitness_hidden_states(model, tokens).float()
    energies, ids, values = [], [], []
    for start in range(0, hidden.shape[0], token_chunk):
        logits = logits_from_hidden(model, hidden[start : start + token_chunk]).float()
        chunk_ids = (
            logits.topk(min(TOPK_CACHED, logits.shape[-1]), dim=-1).indices  # sorted, largest first
            if top_ids is None
            else top_ids[start : start + token_chunk]
        )
        energies.append(energy(logits).double())
        ids.append(chunk_ids)
        values.append(logits.gather(-1, chunk_ids))
    return _Run(float(effective_rank(hidden)), torch.cat(energies), torch.cat(ids), torch.cat(values))
