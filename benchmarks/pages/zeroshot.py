"""The zero-shot page: one column per scored model, one line per task and metric."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from benchmarks.files import write_text
from benchmarks.labels import label
from benchmarks.pages.markdown import MISSING, fill, protocol_values, table
from benchmarks.plan import Pruning, planned
from benchmarks.protocol import Protocol, protocol_in
from benchmarks.studies import STUDIES
from benchmarks.table import read_table
from benchmarks.zeroshot import METRICS, ZeroShotScore

__all__ = ["render_zeroshot", "zeroshot_page"]

STUDY = STUDIES["zeroshot"]
CROSSCHECK = "lm_eval_crosscheck.md"  # what scripts/lm_eval_crosscheck.py printed, saved beside the page
# The columns' names, by the scored model's name (others go by their label).
COLUMNS = {
    "dense": "dense",
    "wanda": "Wanda, uniform 50 %",
    "layerwise-unstructured-0.50": "searched (layerwise, Wanda scores) 50 %",
}


def render_zeroshot(folder: Path) -> None:
    crosscheck = folder / CROSSCHECK
    page = zeroshot_page(read_table(folder / STUDY.table, ZeroShotScore), protocol_in(folder), planned(STUDY.name),
                         crosscheck.read_text().strip() if crosscheck.exists() else "Not run yet.")  # fmt: skip
    write_text(folder / "README.md", page)


def zeroshot_page(rows: Sequence[ZeroShotScore], protocol: Protocol, planned: Sequence[Pruning],
                  crosscheck: str) -> str:  # fmt: skip
    models = [pruning for pruning in planned if any(row.pruning == pruning for row in rows)]
    values = {(row.pruning, row.task, row.metric): row.value for row in rows}
    lines = []
    for task in protocol.tasks:
        for metric in METRICS:
            cells = [values.get((model, task, metric)) for model in models]
            if any(cell is not None for cell in cells):
                lines.append([task, metric, *(_cell(metric, cell) for cell in cells)])
    means = [_mean([row.value for row in rows if row.pruning == model and row.metric == "acc"]) for model in models]
    lines.append(["**mean**", "acc", *(_cell("acc", mean) for mean in means)])
    header = ["task", "metric", *(COLUMNS.get(model.name, label(model)) for model in models)]
    searched = next((model for model in planned if model.kind == "search"), None)
    return fill(
        "zeroshot.md",
        **protocol_values(protocol),
        recipe=MISSING if searched is None else f"recipes/{searched.source}.yaml",
        table=table(header, lines, "ll" + "r" * len(models), compact=True),
        notes="\n".join(f"- {note}" for note in sorted({row.note for row in rows if row.note})),
        crosscheck=crosscheck,
    )


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _cell(metric: str, value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if metric == "perplexity" else f"{100 * value:.1f}"
