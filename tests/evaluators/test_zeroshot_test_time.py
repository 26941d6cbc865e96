"""Test-time pruning on zero-shot questions: masks from each context alone, exact at ratio 1."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from paretoprune.evaluators.runtime_pruning import TestTimePruner
from paretoprune.evaluators.zeroshot import Request, encode_pair, score_requests, score_requests_test_time
from paretoprune.models import find_layout
from paretoprune.testing import byte_tokenizer, tiny_model

CONTEXTS = ("The cat sat on the", "Water boils when it is")
CHOICES = (" mat", " hot", " a very long answer")


def requests(choices: tuple[str, ...] = CHOICES) -> list[Request]:
    return [Request(context, choice) for context in CONTEXTS for choice in choices]


class Recorder:
    """Wraps a pruner's ``masked`` to keep the context and the masks of every call."""

    def __init__(self, pruner: TestTimePruner) -> None:
        self.calls: list[tuple[list[int], dict[str, torch.Tensor]]] = []
        self._masked = pruner.masked
        pruner.masked = self.masked  # type: ignore[method-assign]

    @contextmanager
    def masked(self, context_ids: torch.Tensor):
        with self._masked(context_ids) as kept:
            self.calls.append((context_ids.tolist(), {name: mask.clone() for name, mask in kept.items()}))
            yield kept


@pytest.fixture(scope="module")
def setup():
    model = tiny_model("llama")
    return model, find_layout(model), byte_tokenizer()


@pytest.mark.parametrize("structured", [False, True])
def test_ratio_one_scores_as_the_dense_model(setup, structured: bool) -> None:
    model, layout, tokenizer = setup
    dense = score_requests(model, tokenizer, requests())
    pruner = TestTimePruner(model, layout, ratio=1.0, structured=structured)
    tested = score_requests_test_time(pruner, tokenizer, requests())
    assert [s.loglik for s in tested] == pytest.approx([s.loglik for s in dense], rel=1e-5, abs=1e-5)
    assert [s.greedy for s in tested] == [s.greedy for s in dense]
    half = score_requests_test_time(TestTimePruner(model, layout, 0.5, structured), tokenizer, requests())
    assert [s.loglik for s in half] != pytest.approx([s.loglik for s in dense], rel=1e-3)  # pruning shows


@pytest.mark.parametrize("structured", [False, True])
def test_masks_come_from_each_context_alone_never_from_the_continuations(setup, structured: bool) -> None:
    model, layout, tokenizer = setup
    pruner = TestTimePruner(model, layout, ratio=0.5, structured=structured)
    recorder = Recorder(pruner)
    first = score_requests_test_time(pruner, tokenizer, requests())
    second = score_requests_test_time(pruner, tokenizer, requests((" dog", " rug and the floor", " x")))
    assert len(recorder.calls) == 4  # one mask set per distinct context, in each run
    for text, (context_a, masks_a), (context_b, masks_b) in zip(CONTEXTS, recorder.calls[:2], recorder.calls[2:]):
        assert context_a == context_b == encode_pair(tokenizer, text, " mat")[0]  # the context's tokens only
        assert all(torch.equal(masks_a[name], masks_b[name]) for name in masks_a)
    # The two contexts get different masks, so the equality above could fail.
    (_, one), (_, other) = recorder.calls[:2]
    assert any(not torch.equal(one[name], other[name]) for name in one)
    assert [s.loglik for s in first] != [s.loglik for s in second]
    # Each context's masks really are those its tokens alone give.
    for context, masks in recorder.calls[:2]:
        with TestTimePruner(model, layout, 0.5, structured).masked(torch.tensor(context)) as fresh:
            assert all(torch.equal(masks[name], fresh[name]) for name in fresh)
