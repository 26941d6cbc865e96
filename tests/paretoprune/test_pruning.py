"""The pruning driver on tiny real models: exact sparsities, structures, OWL, sequential."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.evaluators.stats import collect_stats
from paretoprune.metrics.scores import KNOWN_METRICS
from paretoprune.models import find_layout
from paretoprune.pruning import layer_sparsities, measure_sparsity, owl_sparsities, prune_model
from paretoprune.testing import tiny_model


def _tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(seed))


def _uniform(layout, metric: str, sparsity: float, **kwargs) -> Candidate:
    return Candidate(
        metric=KNOWN_METRICS[metric], sparsities=layer_sparsities(layout, sparsity, "uniform"), **kwargs
    )


@pytest.mark.parametrize("family", ["llama", "opt", "gpt2"])
@pytest.mark.parametrize("metric", ["magnitude", "wanda", "ria"])
def test_every_row_loses_exactly_its_share(family: str, metric: str) -> None:
    model = tiny_model(family)
    layout = find_layout(model)
    report = prune_model(model, layout, _uniform(layout, metric, 0.5), _tokens(), progress=False)
    assert report.sparsity == pytest.approx(0.5, abs=1e-9)
    for linear in layout.linears:
        zeros_per_row = (linear.weight_matrix() == 0).sum(dim=1)
        assert torch.all(zeros_per_row == linear.in_features // 2), linear.name


def test_nm_structure_holds_in_every_group() -> None:
    model = tiny_model("llama")
    layout = find_layout(model)
    candidate = _uniform(layout, "wanda", 0.5, structure="2:4")
    report = prune_model(model, layout, candidate, _tokens(), progress=False)
    assert report.sparsity == pytest.approx(0.5)
    for linear in layout.linears:
        groups = (linear.weight_matrix() != 0).reshape(linear.out_features, -1, 4)
        assert torch.all(groups.sum(-1) == 2), linear.name


def test_nm_that_does_not_divide_a_layer_is_refused() -> None:
    model = tiny_model("llama")  # widths 64 and 128: 3 does not divide them
    layout = find_layout(model)
    with pytest.raises(InputError, match="divide|width"):
        prune_model(model, layout, _uniform(layout, "wanda", 0.5, structure="2:3"), _tokens())


def test_owl_spreads_sparsity_with_an_exact_weighted_mean() -> None:
    model = tiny_model("llama", layers=4)
    layout = find_layout(model)
    stats = collect_stats(model, layout, _tokens())
    sparsities = owl_sparsities(layout, stats, 0.6)
    values = np.array([sparsities[name] for name in layout.names])
    weights = np.array(layout.numels)
    assert float((values * weights).sum() / weights.sum()) == pytest.approx(0.6, abs=1e-6)
    per_block = {round(sparsities[layout.linears_of_block(b.index)[0].name], 9) for b in layout.blocks}
    assert len(per_block) > 1  # blocks differ...
    assert max(per_block) - min(per_block) <= 2 * 0.08 + 1e-9  # ...within OWL's range


def test_sequential_calibration_changes_later_blocks_only() -> None:
    one_shot, sequential = tiny_model("llama", layers=3), tiny_model("llama", layers=3)
    masks = {}
    for name, model, flag in (("one-shot", one_shot, False), ("sequential", sequential, True)):
        layout = find_layout(model)
        prune_model(model, layout, _uniform(layout, "wanda", 0.6), _tokens(), sequential=flag, progress=False)
        masks[name] = {linear.name: linear.weight_matrix() != 0 for linear in layout.linears}
    layout = find_layout(one_shot)
    first = [l.name for l in layout.linears_of_block(0)]
    later = [l.name for l in layout.linears if l.block_index > 0]
    assert all(torch.equal(masks["one-shot"][n], masks["sequential"][n]) for n in first)
    assert any(not torch.equal(masks["one-shot"][n], masks["sequential"][n]) for n in later)


def test_sparsegpt_reaches_the_sparsity_and_keeps_the_model_finite() -> None:
    model = tiny_model("llama")
    layout = find_layout(model)
    report = prune_model(
        model, layout, _uniform(layout, "magnitude", 0.5), _tokens(), method="sparsegpt", progress=False
    )
    assert report.sparsity == pytest.approx(0.5, abs=0.01)
    with torch.no_grad():
        assert torch.isfinite(model(_tokens(1)).logits).all()


def test_update_keeps_the_rules_masks_and_brings_the_outputs_closer_to_the_dense_model() -> None:
    dense = tiny_model("llama", layers=3)
    tokens = _tokens()
    with torch.no_grad():
        reference = dense(tokens).logits
    errors, masks = {}, {}
    for update in (False, True):
        model = tiny_model("llama", layers=3)
        layout = find_layout(model)
        report = prune_model(model, layout, _uniform(layout, "wanda", 0.6), tokens, update=update, progress=False)
        assert report.sparsity == pytest.approx(0.6, abs=0.01)  # whole weights per row
        masks[update] = {linear.name: linear.weight_matrix() != 0 for linear in layout.linears}
        with torch.no_grad():
            errors[update] = float((model(tokens).logits - reference).square().mean())
    assert all(torch.equal(masks[False][name], masks[True][name]) for name in masks[False])
    assert errors[True] < errors[False]


def test_update_with_sparsegpt_is_refused() -> None:
    model = tiny_model("llama")
    layout = find_layout(model)
    with pytest.raises(InputError, match="already updates"):
        prune_model(model, layout, _uniform(layout, "wanda", 0.5), _tokens(), method="sparsegpt", update=True)


def test_magnitude_needs_no_data_but_wanda_does() -> None:
    model = tiny_model("llama")
    layout = find_layout(model)
    prune_model(model, layout, _uniform(layout, "magnitude", 0.3), None, progress=False)
    assert measure_sparsity(layout).sparsity == pytest.approx(0.3, abs=0.01)
    with pytest.raises(InputError, match="calib"):
        prune_model(model, layout, _uniform(layout, "wanda", 0.3), None)


@pytest.mark.parametrize(
    "sparsities, message",
    [({"model.layers.0.self_attn.q_proj": 1.5}, r"\[0, 1\)"), ({"not.a.layer": 0.5}, "not in this model")],
)
def test_bad_candidates_are_refused_in_one_line(sparsities, message) -> None:
    model = tiny_model("llama")
    layout = find_layout(model)
    candidate = Candidate(metric=KNOWN_METRICS["magnitude"], sparsities=sparsities)
    with pytest.raises(InputError, match=message) as info:
        prune_model(model, layout, candidate, None)
    assert "\n" not in str(info.value)


def test_layer_allocations_are_registered_and_unknown_ones_name_the_choices() -> None:
    from paretoprune.pruning import LAYER_ALLOCATIONS

    assert LAYER_ALLOCATIONS.names() == ("uniform", "owl", "tplo", "lrp")
    assert LAYER_ALLOCATIONS["owl"].needs_stats and not LAYER_ALLOCATIONS["uniform"].needs_stats
    lrp = LAYER_ALLOCATIONS["lrp"]  # its relevance comes from its own passes over the windows
    assert lrp.reads_calibration and not lrp.needs_stats and not LAYER_ALLOCATIONS["uniform"].reads_calibration
    with pytest.raises(InputError, match="unknown layer allocation 'evenly' for --allocation: choose one of uniform, owl, tplo, lrp"):
        layer_sparsities(None, 0.5, "evenly")  # type: ignore[arg-type]


def _layer_errors(model, layout, dense: dict, tokens: torch.Tensor) -> dict[str, float]:
    """Each linear's output error on the dense model's calibration inputs: tr(D H D^T)."""
    twin = tiny_model("llama")  # the dense model's inputs, not the pruned one's
    stats = collect_stats(twin, find_layout(twin), tokens, hessian=True)
    errors = {}
    for linear in layout.linears:
        difference = linear.weight_matrix().float() - dense[linear.name]
        errors[linear.name] = float((difference @ stats[linear.name].hessian() * difference).sum())
    return errors


def test_solver_chains_lower_every_layers_error_and_keep_the_sparsity() -> None:
    tokens = _tokens()
    results = {}
    for chain in ((), ("fw",), ("fw", "update")):
        model = tiny_model("llama")
        layout = find_layout(model)
        dense = {linear.name: linear.weight_matrix().float().clone() for linear in layout.linears}
        report = prune_model(model, layout, _uniform(layout, "wanda", 0.6, solvers=chain), tokens, progress=False)
        results[chain] = (report.sparsity, _layer_errors(model, layout, dense, tokens))
    plain, fw, both = results[()], results[("fw",)], results[("fw", "update")]
    assert plain[0] == pytest.approx(fw[0]) and fw[0] <= both[0] + 1e-3
    for name in plain[1]:
        assert fw[1][name] <= plain[1][name] * (1 + 1e-5)
        assert both[1][name] <= fw[1][name] * (1 + 1e-3)
    assert sum(both[1].values()) < sum(plain[1].values())


def test_trim_rows_keep_each_layers_sparsity_and_refuse_nm() -> None:
    tokens = _tokens()
    model = tiny_model("llama")
    layout = find_layout(model)
    report = prune_model(model, layout, _uniform(layout, "wanda", 0.7, rows="trim"), tokens, progress=False)
    twin = tiny_model("llama")
    uniform = prune_model(twin, find_layout(twin), _uniform(layout, "wanda", 0.7), tokens, progress=False)
    assert report.layers == pytest.approx(uniform.layers)  # the same count per layer ...
    row_zeros = [
        (linear.weight_matrix() == 0).sum(dim=1).float().std().item() for linear in layout.linears
    ]
    assert max(row_zeros) > 0  # ... spread unevenly over the rows somewhere
    nm = Candidate(metric=KNOWN_METRICS["wanda"], sparsities={n: 0.5 for n in layout.names}, structure="2:4", rows="trim")
    with pytest.raises(InputError, match="--rows trim .* use --rows uniform with --structure 2:4"):
        prune_model(tiny_model("llama"), layout, nm, tokens, progress=False)
    with pytest.raises(InputError, match="put the solvers that change the mask"):
        prune_model(tiny_model("llama"), layout, _uniform(layout, "wanda", 0.5, solvers=("update", "fw")), tokens)
