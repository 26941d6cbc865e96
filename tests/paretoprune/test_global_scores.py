"""Score maps of global scoring rules drive prune_model exactly as a family rule's scores do."""

from __future__ import annotations

import pytest
import torch

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.global_scores import check_score_map
from paretoprune.metrics import masks
from paretoprune.metrics.scores import SCORING_RULES
from paretoprune.models import find_layout
from paretoprune.pruning import layer_sparsities, prune_model
from paretoprune.testing import tiny_model


def _random_map(layout, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        linear.name: torch.rand(linear.out_features, linear.in_features, generator=generator)
        for linear in layout.linears
    }


@pytest.mark.parametrize("structure", ["unstructured", "2:4"])
def test_a_score_map_decides_the_mask(structure: str) -> None:
    model = tiny_model("llama")
    layout = find_layout(model)
    dense = {linear.name: linear.weight_matrix().clone() for linear in layout.linears}
    scores = _random_map(layout)
    sparsities = layer_sparsities(layout, 0.5, "uniform")
    candidate = Candidate(metric=SCORING_RULES["magnitude"], sparsities=sparsities, structure=structure)
    prune_model(model, layout, candidate, None, progress=False, scores=scores)
    nm = masks.parse_structure(structure)
    for linear in layout.linears:
        expected = masks.keep_mask(scores[linear.name], 0.5, nm, "row", linear.name)
        assert torch.equal(linear.weight_matrix(), dense[linear.name] * expected), linear.name


def test_a_score_map_with_trim_rows_keeps_the_layer_mean() -> None:
    model = tiny_model("llama")
    layout = find_layout(model)
    tokens = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1))
    candidate = Candidate(metric=SCORING_RULES["magnitude"], sparsities=layer_sparsities(layout, 0.6, "uniform"),
                          rows="trim")  # fmt: skip
    report = prune_model(model, layout, candidate, tokens, progress=False, scores=_random_map(layout, 2))
    assert report.sparsity == pytest.approx(0.6, abs=0.01)


def test_a_map_for_another_model_is_refused_in_one_line() -> None:
    layout = find_layout(tiny_model("llama"))
    scores = _random_map(layout)
    first = layout.linears[0].name
    with pytest.raises(InputError, match="has shape|another model"):
        check_score_map({**scores, first: torch.ones(3, 3)}, layout)
    del scores[first]
    with pytest.raises(InputError, match=f"no scores for 1 layer.*{first}"):
        check_score_map(scores, layout)


def test_prune_reports_a_global_rules_scoring_as_part_of_its_seconds(tmp_path, monkeypatch) -> None:
    """UniPruning's scores cost far more than its masks: ``prune``'s seconds count them both."""
    import time

    from paretoprune.data import calibration_windows
    from paretoprune.global_scores import cached_score_map
    from paretoprune.models import load_model
    from paretoprune.testing import save_tiny_model
    from paretoprune.workflows import CalibrationOptions, PruneConfig, prune

    model_dir = save_tiny_model(tmp_path / "tiny", tiny_model("llama"))
    monkeypatch.setenv("PARETOPRUNE_CACHE", str(tmp_path / "scoring"))  # cold: the scores are computed
    loaded = load_model(str(model_dir))
    tokens = calibration_windows(loaded.tokenizer, "builtin", 4, 64, 0)
    started = time.perf_counter()
    cached_score_map("unipruning", loaded.model, find_layout(loaded.model), tokens, model_id=str(model_dir),
                     progress=False)  # fmt: skip
    scoring = time.perf_counter() - started
    monkeypatch.setenv("PARETOPRUNE_CACHE", str(tmp_path / "pruning"))  # cold again
    result = prune(PruneConfig(model=str(model_dir), method="unipruning", sparsity=0.5, device="cpu", progress=False,
                               calibration=CalibrationOptions(calib="builtin", nsamples=4, seqlen=64)))  # fmt: skip
    assert result.sparsity == pytest.approx(0.5, abs=0.01)
    assert result.seconds >= 0.5 * scoring  # before, only the masks: about a fiftieth of the scoring
