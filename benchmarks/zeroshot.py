"""Zero-shot accuracy of pruned models: the rows of the zero-shot study.

Each planned model is scored on every task with the same fixed, seeded subset of examples
(``paretoprune.evaluators.zeroshot``, the lm-evaluation-harness protocol on local files).
Pruning is calibrated on the C4 train sample only, so no task data chooses anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from paretoprune.evaluators.zeroshot import evaluate_tasks

from benchmarks.plan import Pruning
from benchmarks.pruned import Pruned
from benchmarks.table import column

__all__ = ["METRICS", "ZeroShotScore", "score_tasks"]

METRICS = ("acc", "acc_norm", "perplexity")  # in the order the page lists them


@dataclass(frozen=True)
class ZeroShotScore:
    pruning: Pruning  # the model scored (the planned row it answers)
    achieved_sparsity: float  # zeros among the prunable weights
    task: str
    metric: str  # acc | acc_norm | perplexity (LAMBADA)
    value: float  # accuracy as a fraction, or a perplexity
    stderr: float | None  # of an accuracy
    n: int  # examples scored
    total: int  # examples in the task's file
    seconds: float = column(".2f")  # the task's scoring time
    note: str  # the evaluator's caveat about the task, if any


def score_tasks(pruning: Pruning, pruned: Pruned, tasks: tuple[str, ...], task_dir: Path, limit: int | None,
                batch_size: int) -> list[ZeroShotScore]:  # fmt: skip
    """Every task's metrics on the pruned model, one row each."""
    loaded = pruned.loaded
    result = evaluate_tasks(loaded.model, loaded.tokenizer, list(tasks), task_dir, limit=limit,
                            batch_size=batch_size, progress=False)  # fmt: skip
    return [
        ZeroShotScore(pruning, pruned.sparsity, task, metric, float(entry[metric]), entry.get(f"{metric}_stderr"),
                      int(entry["n"]), int(entry["total"]), float(entry["seconds"]), entry.get("note", ""))
        for task, entry in result["tasks"].items()
        for metric in METRICS
        if metric in entry
    ]  # fmt: skip
