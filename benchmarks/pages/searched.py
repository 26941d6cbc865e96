"""The searched page: searched recipes against the known pruners, their cost and their curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from benchmarks.allocations import BlockSparsity, allocation_figure
from benchmarks.files import write_text
from benchmarks.kl_curves import KlPoint, kl_figure
from benchmarks.labels import label, label_order
from benchmarks.measurement import EVALUATION_SETS, Measurement
from benchmarks.pages.markdown import MISSING, fill, missing_section, protocol_values, table
from benchmarks.plan import Pruning, planned
from benchmarks.plots import draw, panel_title
from benchmarks.ppl_curves import PplPoint, ppl_figure
from benchmarks.protocol import PROTOCOL_FILE, Protocol, protocol_in, read_protocol
from benchmarks.searches import (
    NAIVE,
    RANGE_LEVELS,
    SENSITIVITY_DELTA,
    SENSITIVITY_LEVELS,
    SENSITIVITY_ROUNDS,
    SENSITIVITY_STEPS,
    SHAPES,
    SPARSITY_RANGE,
    SWAP_CHILDREN,
    Budget,
    SearchSpec,
    sensitivity_candidates,
)
from benchmarks.studies import STUDIES
from benchmarks.table import read_table

__all__ = ["against_budget", "comparable_baselines", "render_searched", "searched_page"]

STUDY = STUDIES["searched"]
Shape = tuple[str, float]
# The uniform baselines drawn as references in the perplexity curves.
REFERENCES = ("Wanda", "OWL + Wanda")


def render_searched(folder: Path, baselines_folder: Path) -> None:
    """Write ``folder/README.md`` and its figures from the tables beside it."""
    protocol = protocol_in(folder)
    rows = read_table(folder / STUDY.table, Measurement)
    all_baselines = read_table(baselines_folder / STUDIES["baselines"].table, Measurement)
    baselines = comparable_baselines(all_baselines, read_protocol(baselines_folder / PROTOCOL_FILE), protocol)
    ppl_points = read_table(folder / "ppl_curves.csv", PplPoint)
    total = sum(row.pruning.kind == "baseline" for row in all_baselines)
    page = searched_page(rows, baselines, total, protocol, planned(STUDY.name), ppl_points)
    write_text(folder / "README.md", page)
    references: dict[float, dict[str, float]] = {}
    for row in baselines:
        if row.pruning.structure == "unstructured" and label(row.pruning) in REFERENCES:
            references.setdefault(row.pruning.target_sparsity, {})[label(row.pruning)] = row.wikitext2_ppl
    draw(kl_figure(read_table(folder / "curves.csv", KlPoint)), folder / "curves.png")
    draw(ppl_figure(ppl_points, references), folder / "ppl_curves.png")
    draw(allocation_figure(read_table(folder / "allocations.csv", BlockSparsity)), folder / "allocations.png")


def comparable_baselines(rows: Sequence[Measurement], theirs: Protocol | None, ours: Protocol) -> list[Measurement]:
    """The baseline rows, when they were made on the same model file with the same calibration
    and WikiText-2 windows (so that the perplexities compare); none otherwise."""
    same = theirs is not None and (
        theirs.model.sha256 == ours.model.sha256
        and theirs.calibration.sha256 == ours.calibration.sha256
        and theirs.windows == ours.windows
        and theirs.evaluation.get("wikitext2") == ours.evaluation.get("wikitext2")
        and theirs.eval_tokens.get("wikitext2") == ours.eval_tokens.get("wikitext2")
    )
    return [row for row in rows if row.pruning.kind == "baseline"] if same else []


def searched_page(rows: Sequence[Measurement], baselines: Sequence[Measurement], baselines_total: int,
                  protocol: Protocol, planned: Sequence[Pruning], ppl_points: Sequence[PplPoint] = ()) -> str:  # fmt: skip
    entries = [*baselines, *(row for row in rows if row.pruning.kind == "search")]
    wanda = {_shape(row): row.wikitext2_ppl for row in baselines if label(row.pruning) == "Wanda"}
    dense = next((row for row in rows if row.pruning.kind == "dense"), None)
    return fill(
        "searched.md",
        **protocol_values(protocol),
        **_plan_values(protocol),
        baselines_shown=len(baselines),
        baselines_total=baselines_total,
        **{f"dense_{name}": _number(dense.perplexity(name) if dense else None) for name in EVALUATION_SETS},
        overview=_overview(entries, wanda),
        shapes="\n\n".join(section for shape in SHAPES if (section := _shape_section(entries, shape, wanda))),
        cost=_cost(rows),
        ppl_curves=_ppl_curves(ppl_points, wanda),
        recipes=_recipes(rows),
        missing=missing_section(planned, {row.pruning for row in rows}, protocol.command),
    )


def _plan_values(protocol: Protocol) -> dict[str, object]:
    """What the protocol section quotes from the plan."""
    candidates = sensitivity_candidates(protocol.model.blocks, SENSITIVITY_ROUNDS)
    return {
        "layerwise_delta": SearchSpec("layerwise").delta, "naive_delta": NAIVE.delta,
        "range_low": SPARSITY_RANGE[0], "range_high": SPARSITY_RANGE[1], "swap_children": SWAP_CHILDREN,
        "sensitivity_delta": SENSITIVITY_DELTA, "sensitivity_steps": SENSITIVITY_STEPS,
        "sensitivity_rounds": SENSITIVITY_ROUNDS, "sensitivity_candidates": candidates,
        "sensitivity_levels": ", ".join(f"{level:.0%}" for level in SENSITIVITY_LEVELS),
        "against_budget": against_budget(candidates, protocol.budget or Budget()),
        "range_levels": ", ".join(f"{level:.0%}" for level in RANGE_LEVELS),
    }  # fmt: skip


def against_budget(candidates: int, budget: Budget) -> str:
    """How a search's candidate count compares with the NSGA-III searches' pop x generations."""
    others = budget.pop * budget.generations
    if candidates == others:
        return "as many as the others"
    return f"{abs(candidates - others)} {'more' if candidates > others else 'fewer'} than the others' {others}"


def _shape(row: Measurement) -> Shape:
    return row.pruning.structure, row.pruning.target_sparsity


def _number(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


def _ratio(row: Measurement, wanda: Mapping[Shape, float]) -> float | None:
    reference = wanda.get(_shape(row))
    return row.wikitext2_ppl / reference if reference else None


def _overview(entries: Sequence[Measurement], wanda: Mapping[Shape, float]) -> str:
    """Method x shape -> WikiText-2 perplexity (ratio to Wanda); the range search's levels
    share a line."""
    lines = []
    for name in label_order(label(row.pruning) for row in entries):
        cells = []
        for shape in SHAPES:
            row = next((r for r in entries if label(r.pruning) == name and _shape(r) == shape), None)
            ratio = None if row is None else _ratio(row, wanda)
            text = "" if row is None else f"{row.wikitext2_ppl:.2f}"
            cells.append(f"{text} ({ratio:.2f}×)" if ratio is not None else text)
        lines.append([name, *cells])
    heads = [f"{level:.0%}" if structure == "unstructured" else structure for structure, level in SHAPES]
    return table(["method", *heads], lines, "l" + "r" * len(SHAPES))


def _shape_section(entries: Sequence[Measurement], shape: Shape, wanda: Mapping[Shape, float]) -> str:
    """Every method at one shape: the three sets, the achieved sparsity, the search cost."""
    here = [row for row in entries if _shape(row) == shape]
    if not here:
        return ""
    lines = []
    for name in label_order(label(row.pruning) for row in here):
        for row in (r for r in here if label(r.pruning) == name):
            ratio = _ratio(row, wanda)
            sets = [MISSING if row.perplexity(n) is None else f"{row.perplexity(n):.2f}" for n in EVALUATION_SETS]
            cost = [MISSING, MISSING] if row.search is None else [str(row.search.candidates),
                                                                 f"{row.search.search_minutes:.1f}"]  # fmt: skip
            lines.append([name, f"{row.achieved_sparsity:.4f}", *sets, "" if ratio is None else f"{ratio:.3f}", *cost])
    header = ["method", "sparsity", "WikiText-2", "PTB", "C4", "WikiText-2 / Wanda", "candidates", "search min"]
    structure, level = shape
    title = f"{level:.0%} unstructured" if structure == "unstructured" else f"{structure} ({level:.0%})"
    return f"## {title}\n\n" + table(header, lines, "l" + "r" * 7)


def _cost(rows: Sequence[Measurement]) -> str:
    """One line per search (its lowest-kl recipe): what it cost and where its front plot is."""
    best: dict[str, Measurement] = {}
    for row in rows:
        if row.search is not None:
            seen = best.get(row.pruning.source)
            if seen is None or seen.search is None or row.search.kl < seen.search.kl:
                best[row.pruning.source] = row
    lines = []
    for name, row in best.items():
        facts = row.search
        assert facts is not None
        lines.append([name, f"{facts.candidates} ({facts.failed})", f"{facts.search_minutes:.1f}",
                      f"{facts.fitness_minutes:.1f}", f"{facts.kl:.4f}", f"[fronts/{name}.png](fronts/{name}.png)"])  # fmt: skip
    header = ["search", "candidates (failed)", "search min", "fitness min", "best kl", "front"]
    return table(header, lines, "lrrrrl")


def _ppl_curves(points: Sequence[PplPoint], wanda: Mapping[Shape, float]) -> str:
    """Per level, a candidates x search table of the best-so-far recipe's perplexity."""
    parts = []
    for level in sorted({point.level for point in points}):
        here = [point for point in points if point.level == level]
        searches = list(dict.fromkeys(point.search for point in here))
        reference = wanda.get(("unstructured", level))
        lines = []
        for count in sorted({point.candidates for point in here}):
            cells = []
            for search in searches:
                found = next((p.wikitext2_ppl for p in here if p.search == search and p.candidates == count), None)
                ratio = f" ({found / reference:.2f}×)" if found is not None and reference else ""
                cells.append("" if found is None else f"{found:.2f}{ratio}")
            lines.append([str(count), *cells])
        curve = table(["candidates", *searches], lines, "r" * (len(searches) + 1))
        parts.append(f"**{panel_title('unstructured', level)}**\n\n{curve}")
    return "\n\n".join(parts)


def _recipes(rows: Sequence[Measurement]) -> str:
    """Each exported recipe once: its rule, its range of layer sparsities, its fitness."""
    lines, seen = [], set()
    for row in rows:
        facts = row.search
        if facts is None or facts.recipe in seen:
            continue
        seen.add(facts.recipe)
        link = f"[{Path(facts.recipe).name}]({facts.recipe})"
        layers = f"{facts.layer_min:.3f}–{facts.layer_max:.3f}"
        lines.append([link, facts.rule.replace("|", "\\|"), layers, f"{facts.kl:.4f}"])
    return table(["recipe", "rule", "layer sparsity", "kl (fitness)"], lines, "lllr")
