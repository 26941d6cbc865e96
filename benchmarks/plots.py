"""The one way the benchmarks draw: a row of panels, one per level, a line per search.

Every figure of the results pages is a ``Figure`` of ``Panel``s; the modules that own a table
say what goes in each panel, and ``draw`` does the rest, off-screen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.files import write_figure

__all__ = ["Figure", "Line", "Panel", "draw", "label_colours", "lines_by_label", "panel_title"]


@dataclass(frozen=True)
class Line:
    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    step: bool = False  # a staircase: each value holds until the next point
    marker: str | None = "o"  # drawn at each point (not on a staircase)


@dataclass(frozen=True)
class Panel:
    title: str
    lines: Sequence[Line]
    # Dashed horizontal lines, each (label, value); an empty label is drawn without a name.
    references: Sequence[tuple[str, float]] = ()


@dataclass(frozen=True)
class Figure:
    xlabel: str
    ylabel: str
    panels: Sequence[Panel] = field(default_factory=list)
    log_y: bool = False
    width: float = 5.5  # inches per panel
    height: float = 4.0  # inches


def draw(figure: Figure, path: Path) -> None:
    """Draw the panels side by side into a PNG at ``path``; nothing when there is no panel."""
    if not figure.panels:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(figure.panels)
    fig, axes = plt.subplots(1, count, figsize=(figure.width * count, figure.height), squeeze=False)
    colours = label_colours(figure)
    for axis, panel in zip(axes[0], figure.panels):
        for line in panel.lines:
            colour = colours[line.label]
            if line.step:
                axis.step(line.xs, line.ys, where="post", label=line.label, color=colour)
            else:
                axis.plot(line.xs, line.ys, marker=line.marker, label=line.label, color=colour)
        for label, value in panel.references:
            axis.axhline(value, linestyle="--", linewidth=1, color="grey")
            if label:
                axis.annotate(label, (axis.get_xlim()[0], value), fontsize=7, va="bottom")
        if figure.log_y:
            axis.set_yscale("log")
        axis.set_title(panel.title)
        axis.set_xlabel(figure.xlabel)
        axis.set_ylabel(figure.ylabel)
        axis.grid(alpha=0.3, which="both" if figure.log_y else "major")
        axis.legend(fontsize=7)
    fig.tight_layout()
    write_figure(path, fig)


def label_colours(figure: Figure) -> dict[str, str]:
    """One colour per line label across the whole figure, so that a search keeps its colour from
    panel to panel even where other panels lack some of the searches. Labels take matplotlib's
    tab10 colours in order of first appearance, then tab20's others, then repeat."""
    palette = [f"tab:{name}" for name in ("blue", "orange", "green", "red", "purple", "brown", "pink", "gray",
                                          "olive", "cyan")]  # fmt: skip
    palette += ["#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
                "#dbdb8d", "#9edae5"]  # tab20's lighter halves
    labels = list(dict.fromkeys(line.label for panel in figure.panels for line in panel.lines))
    return {label: palette[index % len(palette)] for index, label in enumerate(labels)}


def lines_by_label(points: Iterable[tuple[str, float, float]], marker: str = "o") -> list[Line]:
    """(label, x, y) points as one line per label, each sorted by x, labels in order."""
    grouped: dict[str, list[tuple[float, float]]] = {}
    for label, x, y in points:
        grouped.setdefault(label, []).append((x, y))
    lines = []
    for label, pairs in sorted(grouped.items()):
        xs, ys = zip(*sorted(pairs))
        lines.append(Line(label, xs, ys, marker=marker))
    return lines


def panel_title(structure: str, level: float) -> str:
    """"70% unstructured", or the N:M structure itself."""
    return f"{level:.0%} unstructured" if structure == "unstructured" else structure
