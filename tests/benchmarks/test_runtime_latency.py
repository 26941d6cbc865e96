"""The test-time latency benchmark: what it reports and that it decodes correctly (never its timings)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.runtime_latency import VARIANTS, _cache_name, measure
from paretoprune.errors import InputError
from paretoprune.evaluators.runtime_pruning import TestTimePruner
from paretoprune.models import find_layout
from paretoprune.testing import tiny_model


def test_report_has_every_variant_and_leaves_the_model_dense() -> None:
    model = tiny_model("llama")
    contexts = list(torch.randint(0, 250, (2, 16), generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        before = model(contexts[0][None]).logits
    report = measure(model, contexts, ratio=0.5, new_tokens=2, repeats=1, name="tiny")
    assert set(report.per_token_s) == set(VARIANTS) and set(report.mask_s) == {"structured", "unstructured"}
    assert report.ratio_to_dense["dense"] == 1.0 and all(value > 0 for value in report.per_token_s.values())
    assert report.ratio_to_dense["structured"] == report.per_token_s["structured"] / report.per_token_s["dense"]
    assert len(report.lines()) == 1 + len(VARIANTS)
    with torch.no_grad():
        assert torch.equal(model(contexts[0][None]).logits, before)
    with pytest.raises(InputError, match="outside \\(0, 1\\]"):
        measure(model, contexts, ratio=0.0)


@torch.no_grad()
def test_cached_decoding_under_structured_masks_equals_full_forwards() -> None:
    """The timed loop (one token per forward, with the cache) writes what full forwards write."""
    model = tiny_model("llama")
    context = torch.randint(0, 250, (20,), generator=torch.Generator().manual_seed(1))
    with TestTimePruner(model, find_layout(model), 0.5, structured=True).masked(context):
        name = _cache_name(model)
        out = model(input_ids=context[None], use_cache=True)
        cached = [int(out.logits[0, -1].argmax())]
        for _ in range(3):
            out = model(input_ids=torch.tensor([[cached[-1]]]), use_cache=True, **{name: out[name]})
            cached.append(int(out.logits[0, -1].argmax()))
        full = context.tolist()
        for _ in range(4):
            full.append(int(model(torch.tensor([full])).logits[0, -1].argmax()))
    assert cached == full[len(context):]
