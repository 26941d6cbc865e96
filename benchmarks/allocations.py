"""Where the sparsity goes: each searched recipe's sparsity per decoder block.

A recipe at a fixed sparsity only moves sparsity between layers, so its allocation is what the
search found. The searched study records each exported unstructured recipe at a fixed sparsity
in ``allocations.csv`` (a row per block, replacing that search's earlier rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from paretoprune.models import ModelLayout
from paretoprune.recipe import Recipe

from benchmarks.labels import search_label
from benchmarks.plots import Figure, Panel, lines_by_label, panel_title
from benchmarks.table import column, replace_rows

__all__ = ["BlockSparsity", "allocation_figure", "block_sparsities", "record_allocation"]


@dataclass(frozen=True)
class BlockSparsity:
    search: str
    level: float = column("g")
    block: int  # decoder block index
    sparsity: float = column(".4f")  # its linears' sparsities weighted by their sizes


def block_sparsities(recipe: Recipe, layout: ModelLayout) -> list[float]:
    """Each block's share of pruned weights: its linears' sparsities weighted by their sizes."""
    layers = recipe.pruning.layers
    shares = []
    for block in layout.blocks:
        linears = layout.linears_of_block(block.index)
        pruned = sum(layers[linear.name] * linear.numel for linear in linears)
        shares.append(pruned / sum(linear.numel for linear in linears))
    return shares


def record_allocation(path: Path, search: str, level: float, sparsities: Sequence[float]) -> list[BlockSparsity]:
    """Replace ``search``'s rows in ``path`` by ``sparsities``; returns every row of the file."""
    mine = [BlockSparsity(search, level, index, value) for index, value in enumerate(sparsities)]
    return replace_rows(path, BlockSparsity, lambda row: row.search != search, mine,
                        lambda row: (row.level, row.search, row.block))  # fmt: skip


def allocation_figure(rows: Sequence[BlockSparsity]) -> Figure:
    """One panel per level: sparsity against block, a line per search, the level dashed."""
    panels = []
    for level in sorted({row.level for row in rows}):
        here = [(search_label(row.search), row.block, row.sparsity) for row in rows if row.level == level]
        panels.append(Panel(panel_title("unstructured", level), lines_by_label(here, marker="."), (("", level),)))
    return Figure("decoder block", "sparsity of the block", panels)
