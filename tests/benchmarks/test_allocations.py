"""Where the sparsity goes: each block's share, recorded per search."""

from __future__ import annotations

from pathlib import Path

import pytest

from paretoprune.models import find_layout
from paretoprune.testing import tiny_model

from benchmarks.allocations import allocation_figure, block_sparsities, record_allocation
from benchmarks.plots import draw

from tests.benchmarks.recipes import tiny_recipe


def test_block_allocation_weights_each_linear_by_its_size(tmp_path: Path) -> None:
    model = tiny_model("llama")
    layout = find_layout(model)
    first = layout.linears_of_block(0)
    sparsities = {linear.name: 0.5 for linear in layout.linears}
    sparsities[first[0].name] = 0.9  # one linear of block 0 much sparser than the others
    shares = block_sparsities(tiny_recipe(model, sparsities), layout)
    expected = 0.5 + 0.4 * first[0].numel / sum(linear.numel for linear in first)
    assert len(shares) == len(layout.blocks) and shares[0] == pytest.approx(expected)
    assert shares[1:] == pytest.approx([0.5] * (len(layout.blocks) - 1))


def test_recording_replaces_a_searchs_rows_and_draws_a_panel_per_level(tmp_path: Path) -> None:
    path = tmp_path / "allocations.csv"
    record_allocation(path, "naive-unstructured-0.70", 0.7, [0.6, 0.8])
    record_allocation(path, "sensitivity-unstructured-0.70", 0.7, [0.5, 0.9])
    rows = record_allocation(path, "naive-unstructured-0.70", 0.7, [0.65, 0.75])  # replaces
    assert [(r.search, r.block, r.sparsity) for r in rows] == [
        ("naive-unstructured-0.70", 0, 0.65), ("naive-unstructured-0.70", 1, 0.75),
        ("sensitivity-unstructured-0.70", 0, 0.5), ("sensitivity-unstructured-0.70", 1, 0.9),
    ]  # fmt: skip
    assert path.read_text().splitlines()[1] == "naive-unstructured-0.70,0.7,0,0.6500"
    figure = allocation_figure(rows)
    assert [panel.references for panel in figure.panels] == [(("", 0.7),)]
    draw(figure, tmp_path / "allocations.png")
    assert (tmp_path / "allocations.png").stat().st_size > 0
