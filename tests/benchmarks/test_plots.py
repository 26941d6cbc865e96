"""The figures' drawing: one colour per search across all panels."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.plots import Figure, Line, Panel, draw, label_colours


def _figure() -> Figure:
    first = Panel("50%", [Line("wanda", [0, 1], [3, 2]), Line("sensitivity", [0, 1], [3, 1])])
    second = Panel("70%", [Line("sensitivity", [0, 1], [9, 5]), Line("memetic", [0, 1], [9, 6])])
    return Figure("candidates", "kl", [first, second])


def test_a_label_keeps_its_colour_in_every_panel_and_labels_differ() -> None:
    colours = label_colours(_figure())
    assert list(colours) == ["wanda", "sensitivity", "memetic"]  # in order of first appearance
    assert len(set(colours.values())) == 3


def test_more_labels_than_the_palette_still_get_a_colour_each() -> None:
    lines = [Line(f"search {index}", [0], [index]) for index in range(25)]
    colours = label_colours(Figure("x", "y", [Panel("all", lines)]))
    assert len(colours) == 25 and len(set(list(colours.values())[:20])) == 20


def test_the_drawn_panels_share_the_colours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import colors
    from matplotlib.figure import Figure as MatplotlibFigure

    drawn: list[dict[str, str]] = []
    save = MatplotlibFigure.savefig

    def save_noting_colours(fig: MatplotlibFigure, *args: object, **kwargs: object) -> None:
        drawn.extend({line.get_label(): colors.to_hex(line.get_color()) for line in axis.get_lines()}
                     for axis in fig.axes)  # fmt: skip
        save(fig, *args, **kwargs)

    monkeypatch.setattr(MatplotlibFigure, "savefig", save_noting_colours)
    draw(_figure(), tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert drawn[0]["sensitivity"] == drawn[1]["sensitivity"]  # with the default cycle, blue then orange
    assert drawn[1]["sensitivity"] != drawn[1]["memetic"]
