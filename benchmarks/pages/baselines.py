"""The baselines page: known pruners' WikiText-2 perplexity, by sparsity and calibration."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from benchmarks.files import write_text
from benchmarks.labels import baseline_label, method_key
from benchmarks.measurement import Measurement
from benchmarks.pages.markdown import MISSING, fill, missing_section, protocol_values, table
from benchmarks.plan import CALIBRATIONS, HIGH_SPARSITY, SPARSITIES, Pruning, planned
from benchmarks.protocol import Protocol, protocol_in
from benchmarks.studies import STUDIES
from benchmarks.table import read_table

__all__ = ["baselines_page", "render_baselines"]

STUDY = STUDIES["baselines"]
NM_STRUCTURES = ("2:4", "4:8")
# The columns of the "every row" table.
EVERY_ROW = ("method", "allocation", "structure", "target_sparsity", "calibration", "achieved_sparsity",
             "wikitext2_ppl", "eval_tokens", "prune_seconds", "eval_seconds")  # fmt: skip


def render_baselines(folder: Path) -> None:
    """Write ``folder/README.md`` from the table and protocol beside it."""
    rows = read_table(folder / STUDY.table, Measurement)
    write_text(folder / "README.md", baselines_page(rows, protocol_in(folder), planned(STUDY.name)))


def baselines_page(rows: Sequence[Measurement], protocol: Protocol, planned: Sequence[Pruning]) -> str:
    dense = next((row for row in rows if row.pruning.kind == "dense"), None)
    return fill(
        "baselines.md",
        **protocol_values(protocol),
        dense_ppl=MISSING if dense is None else f"{dense.wikitext2_ppl:.2f}",
        dense_zeros=MISSING if dense is None else f"{dense.achieved_sparsity:.4f}",
        unstructured=_perplexity_table(rows, planned, [("unstructured", level) for level in (*SPARSITIES, HIGH_SPARSITY)]),
        nm=_perplexity_table(rows, planned, [(structure, 0.5) for structure in NM_STRUCTURES]),
        every_row=table(EVERY_ROW, [_every_row(row, protocol) for row in rows], "l" * len(EVERY_ROW)),
        missing=missing_section(planned, {row.pruning for row in rows}, protocol.command),
    )


def _perplexity_table(rows: Sequence[Measurement], planned: Sequence[Pruning], shapes: Sequence[tuple[str, float]]) -> str:
    """Method x shape -> perplexity, a one-shot and a sequential column each; a method that
    needs no calibration sits in the one-shot column."""
    heads = [f"{level:.0%}" if structure == "unstructured" else structure for structure, level in shapes]
    header = ["method", *(f"{head} {calibration}" for head in heads for calibration in CALIBRATIONS)]
    methods = {method_key(p): baseline_label(p) for p in planned if p.kind == "baseline"}
    for row in rows:  # a measured row the plan no longer holds still shows
        if row.pruning.kind == "baseline":
            methods.setdefault(method_key(row.pruning), baseline_label(row.pruning))
    lines = []
    for key, name in methods.items():
        cells = [_cell(rows, key, shape, calibration) for shape in shapes for calibration in CALIBRATIONS]
        if any(cells):
            lines.append([name, *cells])
    return table(header, lines, "l" + "r" * (len(header) - 1))


def _cell(rows: Sequence[Measurement], key: tuple[str, str, bool, str, str], shape: tuple[str, float],
          calibration: str) -> str:  # fmt: skip
    for row in rows:
        p = row.pruning
        if p.kind != "baseline" or method_key(p) != key or (p.structure, p.target_sparsity) != shape:
            continue
        if p.calibration == calibration or (p.calibration == "none" and calibration == "one-shot"):
            return f"{row.wikitext2_ppl:.2f}"
    return ""


def _every_row(row: Measurement, protocol: Protocol) -> list[str]:
    p = row.pruning
    method = "dense" if p.kind == "dense" else p.name.removeprefix(f"{p.source}-")
    return [method, p.source, p.structure, f"{p.target_sparsity:g}", p.calibration, f"{row.achieved_sparsity:.6f}",
            f"{row.wikitext2_ppl:.4f}", str(protocol.eval_tokens["wikitext2"]), f"{row.prune_seconds:.1f}",
            f"{row.eval_seconds:.1f}"]  # fmt: skip
