"""Where the sparsity goes: each searched recipe's sparsity per decoder block.

A recipe at a fixed sparsity only moves sparsity between layers, so the allocation is what a
search found. Used by ``scripts/bench_search.py``: every exported unstructured recipe at a fixed
sparsity adds its per-block sparsities to ``allocations.csv`` (one row per block, replacing
that search's earlier rows), and ``allocations.png`` draws one panel per level, a line per
search, beside the uniform level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from paretoprune.models import ModelLayout
from paretoprune.recipe import Recipe

from bench_io import lines_by_search, panel_row, read_rows, save_figure_atomic, write_rows

__all__ = ["ALLOCATION_COLUMNS", "block_sparsities", "plot_allocations", "update_allocations"]

ALLOCATION_COLUMNS = ("search", "level", "block", "sparsity")


def block_sparsities(recipe: Recipe, layout: ModelLayout) -> list[float]:
    """Each block's share of pruned weights: its linears' sparsities weighted by their sizes."""
    layers = recipe.pruning.layers
    shares = []
    for block in layout.blocks:
        linears = layout.linears_of_block(block.index)
        pruned = sum(layers[linear.name] * linear.numel for linear in linears)
        shares.append(pruned / sum(linear.numel for linear in linears))
    return shares


def update_allocations(path: Path, search: str, level: float, sparsities: Sequence[float]) -> list[dict[str, str]]:
    """Replace ``search``'s rows in ``path`` by ``sparsities``; returns every row of the file."""
    kept = [row for row in read_rows(path) if row["search"] != search]
    mine = [{"search": search, "level": f"{level:g}", "block": str(index), "sparsity": f"{value:.4f}"}
            for index, value in enumerate(sparsities)]  # fmt: skip
    rows = sorted([*kept, *mine], key=lambda row: (float(row["level"]), row["search"], int(row["block"])))
    write_rows(path, rows, ALLOCATION_COLUMNS)
    return rows


def plot_allocations(rows: Sequence[Mapping[str, str]], path: Path, labels: Mapping[str, str]) -> None:
    """One panel per level: sparsity against block index, a line per search, the level dashed."""
    levels = sorted({row["level"] for row in rows}, key=float)
    if not levels:
        return
    fig, axes = panel_row(len(levels))
    for axis, level in zip(axes, levels):
        for search, points in lines_by_search(rows, level, "block", "sparsity").items():
            blocks, values = zip(*points)
            axis.plot(blocks, values, marker=".", label=labels.get(search, search))
        axis.axhline(float(level), linestyle="--", linewidth=1, color="grey")
        axis.set_title(f"{float(level):.0%} unstructured")
        axis.set_xlabel("decoder block")
        axis.set_ylabel("sparsity of the block")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    fig.tight_layout()
    save_figure_atomic(fig, path)
