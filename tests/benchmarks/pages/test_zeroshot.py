"""The zero-shot page: one column per scored model."""

from __future__ import annotations

from dataclasses import replace

from paretoprune.evaluators.zeroshot_tasks import task_names

from benchmarks.pages.zeroshot import zeroshot_page
from benchmarks.plan import Pruning, planned
from benchmarks.searches import Budget
from benchmarks.zeroshot import ZeroShotScore

from tests.benchmarks.pages.conftest import protocol


def _scores(pruning: Pruning, acc: float) -> list[ZeroShotScore]:
    rows = [ZeroShotScore(pruning, 0.5, task, "acc", acc, 0.05, 100, 1000, 1.0, "") for task in task_names()]
    rows.append(ZeroShotScore(pruning, 0.5, "lambada", "perplexity", 12.5, None, 100, 1000, 1.0, ""))
    rows.append(ZeroShotScore(pruning, 0.5, "hellaswag", "acc_norm", acc, 0.05, 100, 1000, 1.0, "derived copy"))
    return rows


def test_zero_shot_page_has_one_column_per_scored_model() -> None:
    dense, wanda, _ = planned("zeroshot")
    study = protocol((), "python -m benchmarks zeroshot --limit 100", Budget(pop=12, generations=5))
    study = replace(study, tasks=tuple(task_names()), task_limit=100)
    page = zeroshot_page([*_scores(dense, 0.5), *_scores(wanda, 0.25)], study, planned("zeroshot"), "Not run yet.")
    assert "| task | metric | dense | Wanda, uniform 50 % |" in page
    assert "| boolq | acc | 50.0 | 25.0 |" in page
    assert "| lambada | perplexity | 12.50 | 12.50 |" in page
    assert "| **mean** | acc | 50.0 | 25.0 |" in page
    assert "searched" not in page.split("| task | metric |")[1].splitlines()[0]  # not scored yet
    assert "- derived copy" in page and "**100 examples per task**" in page
    assert "Not run yet." in page  # no cross-check beside the rows
