"""AppliedScorer: a candidate scored as its recipe will be applied equals pruning it for real."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.evaluators.applied import AppliedScorer
from paretoprune.global_scores import cached_score_map
from paretoprune.metrics.scores import SCORING_RULES
from paretoprune.models import find_layout
from paretoprune.pruning import prune_model
from paretoprune.testing import tiny_model


def _kl_per_token(dense: torch.nn.Module, pruned: torch.nn.Module, tokens: torch.Tensor) -> float:
    """Mean next-token KL(dense || pruned) over every position, from the models' own logits."""
    with torch.inference_mode():
        p = torch.log_softmax(dense(input_ids=tokens).logits.double(), dim=-1)
        q = torch.log_softmax(pruned(input_ids=tokens).logits.double(), dim=-1)
    return float((p.exp() * (p - q)).sum(-1).mean())


@pytest.fixture(scope="module")
def setting() -> dict:
    torch.manual_seed(0)
    model = tiny_model("llama", layers=3)
    layout = find_layout(model)
    # A non-uniform allocation, so that the per-layer sparsities matter.
    sparsities = {linear.name: 0.3 + 0.1 * (linear.block_index % 3) for linear in layout.linears}
    generator = torch.Generator().manual_seed(1)
    return {
        "model": model,
        "calibration": torch.randint(0, 256, (6, 48), generator=generator),
        "tokens": torch.randint(0, 256, (5, 40), generator=generator),
        "candidate": Candidate(SCORING_RULES["wanda"], sparsities),
    }


@pytest.mark.parametrize("solvers", [("update",), ()])
def test_the_score_is_the_error_of_pruning_with_prune_model(setting: dict, solvers: tuple[str, ...]) -> None:
    dense = setting["model"]
    candidate = Candidate(setting["candidate"].metric, setting["candidate"].sparsities, solvers=solvers)
    pruned = copy.deepcopy(dense)
    prune_model(pruned, find_layout(pruned), candidate, setting["calibration"], progress=False)
    expected = _kl_per_token(dense, pruned, setting["tokens"])

    model = copy.deepcopy(dense)
    scorer = AppliedScorer(model, find_layout(model), setting["calibration"], setting["tokens"])
    measured = scorer.evaluate(candidate)
    assert measured["kl"] == pytest.approx(expected, rel=1e-4)
    assert measured["sparsity"] == pytest.approx(0.4, abs=0.02)
    scorer.close()  # and the dense weights were never touched
    for mine, theirs in zip(model.parameters(), dense.parameters()):
        assert torch.equal(mine, theirs)


def test_the_update_lowers_the_error_of_the_same_masks(setting: dict) -> None:
    model = copy.deepcopy(setting["model"])
    scorer = AppliedScorer(model, find_layout(model), setting["calibration"], setting["tokens"])
    masks_alone = scorer.evaluate(setting["candidate"])["kl"]
    updated = scorer.evaluate(Candidate(setting["candidate"].metric, setting["candidate"].sparsities,
                                        solvers=("update",)))["kl"]  # fmt: skip
    assert 0 < updated < masks_alone
    assert all(stats.gram is not None for stats in scorer.stats.values())  # Hessians gathered once


def test_row_allocations_are_refused_in_one_line(setting: dict) -> None:
    model = copy.deepcopy(setting["model"])
    scorer = AppliedScorer(model, find_layout(model), setting["calibration"], setting["tokens"])
    trimmed = Candidate(setting["candidate"].metric, setting["candidate"].sparsities, rows="trim")
    with pytest.raises(InputError, match="uniform rows"):
        scorer.evaluate(trimmed)


@pytest.mark.parametrize("solvers", [("update",), ()])
def test_a_global_rule_candidate_is_scored_as_prune_model_prunes_by_its_map(
    setting: dict, solvers: tuple[str, ...], monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("PARETOPRUNE_CACHE", str(tmp_path))
    dense = setting["model"]
    lrp = cached_score_map("lrp", dense, find_layout(dense), setting["calibration"], progress=False)
    candidate = replace(setting["candidate"], solvers=solvers, global_rule="lrp")
    pruned = copy.deepcopy(dense)
    prune_model(pruned, find_layout(pruned), candidate, setting["calibration"], progress=False, scores=lrp)
    expected = _kl_per_token(dense, pruned, setting["tokens"])

    model = copy.deepcopy(dense)
    scorer = AppliedScorer(model, find_layout(model), setting["calibration"], setting["tokens"],
                           score_maps={"lrp": lrp})  # fmt: skip
    assert scorer.evaluate(candidate)["kl"] == pytest.approx(expected, rel=1e-4)
    assert scorer.evaluate(replace(candidate, global_rule=None))["kl"] != pytest.approx(expected, rel=1e-3)
    other = copy.deepcopy(dense)
    without = AppliedScorer(other, find_layout(other), setting["calibration"], setting["tokens"])
    with pytest.raises(InputError, match="masks rank the lrp score map, which this scorer was not given"):
        without.evaluate(candidate)


def test_a_finalist_scores_objective_at_source_on_tokens_the_search_did_not_read(tmp_path) -> None:
    """With the calibration text itself as the source, ``kl@builtin`` lands on the very windows
    the finalist's ``kl`` is measured on: held out from the search's, not the search's own."""
    from paretoprune.evaluators.applied import AppliedEvaluator
    from paretoprune.evaluators.sources import SourceDraw
    from paretoprune.search.config import SearchConfig
    from paretoprune.search.finalists import applied_inputs
    from paretoprune.testing import save_tiny_model

    model_dir = save_tiny_model(tmp_path / "tiny", tiny_model("llama", layers=2))
    config = SearchConfig(model=str(model_dir), out=str(tmp_path / "run"), calib="builtin", nsamples=4, seqlen=32,
                          seed=3, objectives=("kl", "kl@builtin"))  # fmt: skip
    inputs = applied_inputs(config, windows=6)
    assert inputs.sources == ("builtin",) and inputs.source_draw == SourceDraw(4, 32, 3, None, 0.5)
    evaluator = AppliedEvaluator(inputs)
    layout = find_layout(tiny_model("llama", layers=2))
    candidate = Candidate(sparsities={name: 0.5 for name in layout.names}, metric=SCORING_RULES["wanda"])
    scores = evaluator.evaluate(candidate)
    assert scores["kl"] > 0 and scores["kl@builtin"] == pytest.approx(scores["kl"], rel=1e-6)
