"""Wanda++ on a live block: regional optimisation lowers the block's output error, and the fitness
evaluator either uses regional gradients or refuses a rule that needs them, in one line."""

from __future__ import annotations

import pytest
import torch

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.evaluators.fitness import CandidateEvaluator
from paretoprune.evaluators.regional import block_output_error, regional_optimise
from paretoprune.evaluators.stats import collect_stats, walk_blocks
from paretoprune.metrics.masks import nm_keep_mask
from paretoprune.metrics.regional import RegionalSettings
from paretoprune.metrics.scores import SCORING_RULES, compute_scores
from paretoprune.models import find_layout
from paretoprune.pruning import keep_mask, prune_model, uniform_sparsities
from paretoprune.testing import tiny_model

TOKENS = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(0))
WANDA_PP = SCORING_RULES["wanda++"]


def test_regional_optimisation_lowers_the_blocks_output_error_and_keeps_2_4() -> None:
    model = tiny_model("llama", layers=1)
    layout = find_layout(model)
    step = next(walk_blocks(model, layout, TOKENS, batch_size=4, block_io=True, gradients=True))

    def rescore(linear, matrix):
        stats = step.stats[linear.name]
        return compute_scores(matrix, stats.act_norm, WANDA_PP, stats.regional_grad)

    masks = {}
    for linear in step.linears:
        weight = linear.weight_matrix()
        masks[linear.name] = nm_keep_mask(rescore(linear, weight.float()), 2, 4)
        weight.mul_(masks[linear.name])
    before = block_output_error(step.block.module, step.inputs, step.dense_outputs)
    final = regional_optimise(step, masks, rescore, (2, 4), settings=RegionalSettings(lr=1e-4))
    after = block_output_error(step.block.module, step.inputs, step.dense_outputs)
    assert after < 0.8 * before
    for linear in step.linears:
        weight = linear.weight_matrix()
        assert torch.equal(weight != 0, final[linear.name] & (weight != 0))  # nothing outside the mask
        assert bool((final[linear.name].reshape(weight.shape[0], -1, 4).sum(-1) == 2).all())
        assert not linear.module.weight.requires_grad or linear.module.weight.grad is None


def test_prune_model_with_wanda_plus_plus_and_regional_keeps_2_4_and_gets_closer_to_dense() -> None:
    dense = tiny_model("llama", layers=2)
    errors = {}
    for solvers in ((), ("regional",)):
        model = tiny_model("llama", layers=2)
        layout = find_layout(model)
        candidate = Candidate(metric=WANDA_PP, sparsities=uniform_sparsities(layout, 0.5), structure="2:4",
                              solvers=solvers)  # fmt: skip
        report = prune_model(model, layout, candidate, TOKENS, batch_size=4, progress=False,
                             regional=RegionalSettings(lr=1e-4))  # fmt: skip
        assert report.sparsity == pytest.approx(0.5)
        for linear in layout.linears:
            kept = (linear.weight_matrix() != 0).reshape(linear.out_features, -1, 4).sum(-1)
            assert bool((kept <= 2).all())
        with torch.no_grad():
            errors[solvers] = float((model(input_ids=TOKENS).logits - dense(input_ids=TOKENS).logits).square().mean())
    assert errors[("regional",)] < errors[()]


def test_the_evaluator_uses_regional_gradients_when_the_statistics_hold_them() -> None:
    model = tiny_model("llama", layers=2)
    layout = find_layout(model)
    stats = {}
    for step in walk_blocks(model, layout, TOKENS, batch_size=4, gradients=True, propagate="dense"):
        stats.update(step.stats)
    candidate = Candidate(metric=WANDA_PP, sparsities=uniform_sparsities(layout, 0.5), structure="2:4")
    evaluator = CandidateEvaluator(model, layout, stats, TOKENS[:2], objectives=("kl", "sparsity"))
    with evaluator.applied(candidate), torch.no_grad():
        seen = {linear.name: linear.module.weight != 0 for linear in layout.linears}  # llama: [out, in]
    evaluator.close()
    for linear in layout.linears:
        st = stats[linear.name]
        expected = keep_mask(linear.weight_matrix(), st.act_norm, WANDA_PP, 0.5, "2:4", grad=st.regional_grad)
        assert torch.equal(seen[linear.name], expected)


def test_the_evaluator_refuses_a_gradient_rule_without_regional_gradients() -> None:
    model = tiny_model("llama", layers=2)
    layout = find_layout(model)
    stats = collect_stats(model, layout, TOKENS[:4])
    evaluator = CandidateEvaluator(model, layout, stats, TOKENS[:2], objectives=("kl", "sparsity"))
    candidate = Candidate(metric=WANDA_PP, sparsities=uniform_sparsities(layout, 0.5))
    with pytest.raises(InputError, match="has a gradient term, but the statistics hold no regional gradients"):
        evaluator.evaluate(candidate)
    wanda = Candidate(metric=SCORING_RULES["wanda"], sparsities=uniform_sparsities(layout, 0.5))
    assert evaluator.evaluate(wanda)["kl"] > 0  # the evaluator is still usable after the refusal
    evaluator.close()
