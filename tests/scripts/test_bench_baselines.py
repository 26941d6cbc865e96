"""The baseline table's pruning: each row's pruner on a tiny model."""

from __future__ import annotations

import pytest
import torch

import bench_baselines
from bench_baselines_plan import BenchConfig
from paretoprune.candidate import Candidate
from paretoprune.metrics.scores import KNOWN_METRICS
from paretoprune.models import LoadedModel, find_layout
from paretoprune.pruning import prune_model
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


def _tiny_bench() -> bench_baselines.Bench:
    model = tiny_model("llama")
    tokens = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1))
    bench = bench_baselines.Bench(LoadedModel(model, None, "tiny", "tiny"), find_layout(model), tokens, tokens, 2)
    bench.keep_dense_weights()
    return bench


def _weights(bench: bench_baselines.Bench) -> dict[str, torch.Tensor]:
    return {linear.name: linear.weight_matrix().detach().clone() for linear in bench.layout.linears}


@pytest.mark.parametrize("method", ["sparsegpt", "wanda-update", "wanda"])
def test_a_sequential_row_prunes_with_its_own_method(method: str) -> None:
    bench = _tiny_bench()
    config = BenchConfig(method, target_sparsity=0.5, calibration="sequential")
    with torch.no_grad():
        bench_baselines.prune_config(bench, config)
    got = _weights(bench)
    bench.restore_dense_weights()
    candidate = bench_baselines.candidate_for(bench, config)
    prune_model(bench.loaded.model, bench.layout, candidate, bench.calibration, method=config.pruner,
                update=config.update, sequential=True, batch_size=2, progress=False)  # fmt: skip
    assert all(torch.equal(got[name], weight) for name, weight in _weights(bench).items())
    bench.restore_dense_weights()  # the rule alone (magnitude stands in for SparseGPT) differs
    prune_model(bench.loaded.model, bench.layout, candidate, bench.calibration, sequential=True,
                batch_size=2, progress=False)  # fmt: skip
    same_as_rule_alone = all(torch.equal(got[name], weight) for name, weight in _weights(bench).items())
    assert same_as_rule_alone == (method == "wanda")
