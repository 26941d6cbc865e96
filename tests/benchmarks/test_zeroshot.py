"""Zero-shot rows: every task's metrics of one scored model, one row each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import benchmarks.zeroshot
from benchmarks.plan import planned
from benchmarks.pruned import Pruned
from benchmarks.zeroshot import score_tasks


def test_each_metric_of_each_task_is_a_row(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def evaluate_tasks(model: Any, tokenizer: Any, tasks: list[str], task_dir: Path, **options: Any) -> dict:
        assert tasks == ["piqa", "lambada"] and options["limit"] == 100
        return {"tasks": {
            "piqa": {"acc": 0.67, "acc_stderr": 0.047, "acc_norm": 0.63, "acc_norm_stderr": 0.048, "n": 100,
                     "total": 1838, "seconds": 9.48},
            "lambada": {"acc": 0.19, "acc_stderr": 0.039, "perplexity": 69.95, "n": 100, "total": 5153,
                        "seconds": 7.6, "note": "a caveat"},
        }, "mean_acc": 0.43}  # fmt: skip

    monkeypatch.setattr(benchmarks.zeroshot, "evaluate_tasks", evaluate_tasks)
    dense = planned("zeroshot")[0]
    pruned = Pruned(type("Loaded", (), {"model": None, "tokenizer": None})(), 0.0, 0.0)  # type: ignore[arg-type]
    rows = score_tasks(dense, pruned, ("piqa", "lambada"), tmp_path, 100, batch_size=4)
    assert [(row.task, row.metric, row.value, row.stderr) for row in rows] == [
        ("piqa", "acc", 0.67, 0.047), ("piqa", "acc_norm", 0.63, 0.048),
        ("lambada", "acc", 0.19, 0.039), ("lambada", "perplexity", 69.95, None),
    ]  # fmt: skip
    assert {row.note for row in rows} == {"", "a caveat"} and all(row.pruning == dense for row in rows)
