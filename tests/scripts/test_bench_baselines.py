"""The baseline table's pruning: each row's pruner on a tiny model."""

from __future__ import annotations

import torch

import bench_baselines
from paretoprune.candidate import Candidate
from paretoprune.metrics.scores import KNOWN_METRICS
from paretoprune.models import find_layout
from paretoprune.testing import tiny_model


def test_wanda_update_keeps_wandas_masks_and_changes_the_survivors() -> None:
    from paretoprune.evaluators.stats import collect_stats

    tokens = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    weights = {}
    for update in (False, True):
        model = tiny_model("llama")
        layout = find_layout(model)
        stats = collect_stats(model, layout, tokens, hessian=update)
        candidate = Candidate(KNOWN_METRICS["wanda"], {name: 0.5 for name in layout.names})
        bench_baselines.prune_one_shot(layout, candidate, stats, update=update)
        weights[update] = {linear.name: linear.weight_matrix().clone() for linear in layout.linears}
    for name, masked in weights[False].items():
        assert torch.equal(masked != 0, weights[True][name] != 0)
    assert any(not torch.equal(masked, weights[True][name]) for name, masked in weights[False].items())
