"""Candidate dicts: what archives store, unchanged for candidates that name no global rule."""

from __future__ import annotations

from dataclasses import replace

from paretoprune.candidate import Candidate
from paretoprune.metrics.scores import SCORING_RULES

PLAIN = Candidate(SCORING_RULES["wanda"], {"a": 0.5, "b": 0.25})


def test_a_candidate_without_a_global_rule_writes_the_dict_it_always_wrote() -> None:
    assert PLAIN.to_dict() == {
        "metric": SCORING_RULES["wanda"].to_dict(),
        "sparsities": {"a": 0.5, "b": 0.25},
        "structure": "unstructured",
        "group": "row",
    }
    assert Candidate.from_dict(PLAIN.to_dict()) == PLAIN


def test_a_global_rule_round_trips_and_an_old_dict_reads_without_one() -> None:
    lrp = replace(PLAIN, global_rule="lrp")
    data = lrp.to_dict()
    assert data == {**PLAIN.to_dict(), "global_rule": "lrp"}
    assert Candidate.from_dict(data) == lrp
    assert Candidate.from_dict(PLAIN.to_dict()).global_rule is None
