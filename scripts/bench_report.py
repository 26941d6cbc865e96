"""The searched table's README: protocol, perplexity tables against the baselines, search
cost, curves, recipes and what is still missing.

Pure text from the rows: ``render_readme`` reads no file and runs no model, so the page can be
redrawn at any time from the CSVs (``scripts/bench_search.py`` does after every row).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench_io import BASELINE_METHODS, row_key
from bench_plan import (
    CALIBRATION_FILE,
    DENSE,
    EVALUATION_FILES,
    EVALUATION_NAMES,
    KEY_COLUMNS,
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
    Protocol,
    SearchSpec,
    search_kind,
    sensitivity_candidates,
)

__all__ = ["SEARCH_METHODS", "Entry", "baseline_entries", "render_readme", "searched_entries"]

SEARCH_METHODS = {  # (kind, pruner) -> label; kind is the mode, or "range" for the range search
    ("naive", "recipe"): "naive swap search",
    ("naive", "update"): "naive swap search + update",
    ("naive", "sparsegpt"): "naive swap search → SparseGPT",
    ("sensitivity", "recipe"): "sensitivity search",
    ("sensitivity", "update"): "sensitivity search + update",
    ("sensitivity", "sparsegpt"): "sensitivity search → SparseGPT",
    ("layerwise", "recipe"): "layerwise search",
    ("layerwise", "update"): "layerwise search + update",
    ("layerwise", "sparsegpt"): "layerwise search → SparseGPT",
    ("metric", "recipe"): "metric search",
    ("metric", "update"): "metric search + update",
    ("metric", "sparsegpt"): "metric search → SparseGPT",
    ("joint", "recipe"): "joint search",
    ("joint", "update"): "joint search + update",
    ("joint", "sparsegpt"): "joint search → SparseGPT",
    ("range", "recipe"): "layerwise range search",
}


SEQUENTIAL = ", sequential"  # the label's suffix for a method applied sequentially


@dataclass(frozen=True)
class Entry:
    """One cell group of the tables: a method at one shape, whichever CSV it came from."""

    label: str
    shape: tuple[str, float]
    achieved: float
    perplexity: dict[str, float]  # by set; baselines have WikiText-2 only
    row: Mapping[str, str] = field(default_factory=dict)  # the searched row, if any


def searched_entries(rows: Sequence[Mapping[str, str]]) -> list[Entry]:
    entries = []
    for row in rows:
        if row["search"] == DENSE:
            continue
        label = method_label(SEARCH_METHODS[(search_kind(row["search"]), row["pruner"])], row["calibration"])
        shape = (row["structure"], float(row["target_sparsity"]))
        scores = {name: float(row[f"{name}_ppl"]) for name in EVALUATION_FILES}
        entries.append(Entry(label, shape, float(row["achieved_sparsity"]), scores, row))
    return entries


def baseline_entries(rows: Sequence[Mapping[str, str]], protocol: Protocol) -> list[Entry]:
    """The rows of baselines.csv made with this table's calibration and windows, one-shot and
    sequential, each to be read against the searched rows applied the same way."""
    entries = []
    for row in rows:
        method = BASELINE_METHODS.get((row["method"], row["allocation"]))
        if method is None or not baseline_matches(row, protocol):
            continue
        label = method_label(method, row["calibration"])
        shape = (row["structure"], float(row["target_sparsity"]))
        scores = {"wikitext2": float(row["wikitext2_ppl"])}
        entries.append(Entry(label, shape, float(row["achieved_sparsity"]), scores))
    return entries


def method_label(method: str, calibration: str) -> str:
    """The table's name for a method applied one way: "Wanda", "Wanda, sequential"."""
    return f"{method}{SEQUENTIAL}" if calibration == "sequential" else method


def baseline_matches(row: Mapping[str, str], protocol: Protocol) -> bool:
    """Same calibration windows, same WikiText-2 windows: the perplexities compare."""
    return (
        row.get("nsamples") == str(protocol.calib_nsamples)
        and row.get("seqlen") == str(protocol.calib_seqlen) == str(protocol.eval_seqlen)
        and row.get("seed") == str(protocol.budget.seed)
        and row.get("eval_tokens") == str(protocol.evaluation_tokens["wikitext2"])
    )


def wanda_by_shape(entries: Sequence[Entry]) -> dict[tuple[str, float], float]:
    return {entry.shape: entry.perplexity["wikitext2"] for entry in entries if entry.label == "Wanda"}


def render_readme(
    rows: Sequence[Mapping[str, str]],
    baselines: Sequence[Mapping[str, str]],
    protocol: Protocol,
    planned: Sequence[tuple[str, str, str, str]],
    ppl_curves: Sequence[Mapping[str, str]] = (),
    allocations: Sequence[Mapping[str, str]] = (),
) -> str:
    """The whole README.md: protocol, tables, cost, curves, allocations, recipes, then what is missing."""
    base = baseline_entries(baselines, protocol)
    entries = base + searched_entries(rows)
    wanda = wanda_by_shape(base)
    parts = [
        "# Searched recipes on SmolLM2-135M (WikiText-2, PTB and C4 perplexity)\n",
        "Generated by `scripts/bench_search.py` from `searched.csv` and, for the uniform "
        "baselines, `../baselines/baselines.csv` (do not edit by hand).\n",
        _protocol_section(protocol),
        _baseline_note(baselines, base),
        _dense_line(rows),
        "## WikiText-2 perplexity by method and sparsity\n",
        "In brackets: the ratio to uniform Wanda (one-shot) at the same sparsity; below 1 is better. "
        "An empty cell has not been run yet.\n",
        _overview_table(entries, wanda),
        *(_shape_section(entries, shape, wanda) for shape in SHAPES),
        "## Search cost and fronts\n",
        _cost_table(rows),
        "## Best WikiText-2 perplexity against candidates evaluated\n",
        _ppl_curve_section(ppl_curves, wanda),
        "## Best kl so far\n",
        _curves_note(),
        _allocation_section(allocations),
        "## Recipes\n",
        _recipe_table(rows),
        _missing_section(rows, planned, protocol.command),
    ]
    return "\n".join(part for part in parts if part)


def _protocol_section(protocol: Protocol) -> str:
    budget = protocol.budget
    sets = "\n".join(
        f"  - {EVALUATION_NAMES[name]}: `{EVALUATION_FILES[name]}`, sha256 `{protocol.evaluation_sha256[name]}`, "
        f"{protocol.evaluation_tokens[name]} predicted tokens"
        for name in EVALUATION_FILES
    )
    return f"""## Protocol

- **Model:** `{protocol.model.spec}`, loaded with `load_model("{protocol.model.spec}")`: {protocol.model.file},
  sha256 `{protocol.model.sha256}`, dequantized to fp32 (architecture fingerprint `{protocol.model.fingerprint}`).
  It is the 4-bit GGUF of the *Instruct* model, so its dense perplexity is not the bf16 base
  model's. {protocol.model.blocks} decoder blocks; their {protocol.model.linears} linears are pruned (embeddings
  and `lm_head` never).
- **Search:** `paretoprune.search.driver.run_search` (pymoo NSGA-III, seed {budget.seed}),
  population {budget.pop}, generations {budget.generations}, Ray workers {budget.workers}. Fitness:
  mean next-token KL(dense ‖ pruned) per token on {budget.nsamples} windows of {budget.seqlen} tokens
  of `{CALIBRATION_FILE}` (file sha256 `{protocol.calibration_sha256}`), drawn with seed {budget.seed};
  the pruning statistics (Wanda's activation norms, OWL's outlier ratios) come from the
  {protocol.calib_nsamples} x {protocol.calib_seqlen} calibration windows the recipes are applied
  with, so each candidate is scored with the masks it will really get;
  the first population holds the known methods each mode can express. *layerwise*: one sparsity
  per block (within ±{SearchSpec('layerwise').delta} of the target), Wanda's rule; *metric*: the
  scoring rule (the family holding magnitude, Wanda and RIA), the same sparsity everywhere;
  *joint*: both. At a fixed sparsity every candidate is repaired to exactly that
  parameter-weighted mean, so `kl` is the only objective; `2:4` fixes every layer. The *range*
  search is layerwise, with the target sparsity a gene in [{SPARSITY_RANGE[0]}, {SPARSITY_RANGE[1]}]
  and objectives `kl` and `sparsity`.
- **Naive reference:** `--algorithm swap` with the same fitness and as many candidates: a (1 + {SWAP_CHILDREN})
  evolution of one sparsity per block (within ±{NAIVE.delta} of the target), each child moving
  0.02 of sparsity from one block to another one to three times, the best of parent and children
  kept; it starts from uniform Wanda and OWL. It stands for the EvoPress-style search the
  product must beat.
- **Sensitivity search:** `--algorithm sensitivity --delta {SENSITIVITY_DELTA}`, the same fitness,
  one sparsity per block within ±{SENSITIVITY_DELTA} of the target. From uniform Wanda and OWL, each
  round probes every block 0.1 of sparsity below and above the best allocation so far (2 x
  {protocol.model.blocks} candidates, all at the target after the repair), fits a quadratic per block
  and asks for {SENSITIVITY_STEPS} steps toward the model's minimum (moves that sum to zero, at
  most 0.15 per block); probe and radius shrink by 0.7 a round.
  {_sensitivity_rounds(protocol)}.
- **Picking:** at a fixed sparsity, the archive's best `kl` (`best:kl`, as `paretoprune export`);
  from the range search, the front member nearest to each of
  {", ".join(f"{level:.0%}" for level in RANGE_LEVELS)} (`sparsity:S`), whose sparsity may miss the
  level a little (see `achieved_sparsity`). The recipes are under `recipes/`; their provenance names
  the calibration file relative to the shared data folder and the run relative to the repository,
  with the text's sha256 as the search recorded it. File names write `2:4` as `2of4` (a colon is
  not allowed in Windows file names).
- **Applying:** `paretoprune.apply_recipe` on a freshly loaded model, calibrated on
  {protocol.calib_nsamples} windows of {protocol.calib_seqlen} tokens of the same C4 file (seed
  {budget.seed}), as the baselines: one-shot (every block's statistics from the dense model) and,
  in the rows marked *sequential*, each block calibrated on the outputs of the blocks already
  pruned (`--sequential`). The search scores its candidates one-shot, so the one-shot rows are the
  recipes as chosen. *search* rows use the recipe's own rule; *+ update* rows keep those masks
  and update the surviving weights with SparseGPT's sweep (`--update`); *→ SparseGPT* rows give
  the recipe's per-layer sparsities (and structure) to SparseGPT, which picks its own masks and
  updates the survivors.
- **Evaluation:** the first {protocol.eval_windows} contiguous, non-overlapping windows of
  {protocol.eval_seqlen} tokens of each set, each window scored on its own:
{sets}

  Each file is read as `paretoprune.data.load_text` reads it (tokenized once, without special
  tokens): WikiText-2 and PTB verbatim, the C4 documents joined with a blank line. The papers
  join PTB sentences and C4 documents with a space instead, so PTB and C4 numbers compare within
  this table, not digit for digit with published ones.
- **Perplexity:** exp of the mean next-token negative log-likelihood over all predicted tokens
  (fp32 log-softmax; position 0 of each window is context only).
- **Cost:** *candidates* counts the evaluations in the run's archive (every generation, failed
  ones included); *search min* is the wall clock of the search sessions (model load, statistics,
  Ray start-up and the generations; a session killed without warning is not counted); *fitness
  min* sums the evaluations' own seconds. Machine: CPU only, shared with other jobs, so the times
  are indicative only.
- **Reproduce:** `{protocol.command}` (it resumes: searches continue from their last finished
  generation, rows already in the CSV are skipped).
"""


def _sensitivity_rounds(protocol: Protocol) -> str:
    """The rounds and what they cost, e.g. "4 rounds at every level (258 candidates, ...)"."""
    candidates = sensitivity_candidates(protocol.model.blocks, SENSITIVITY_ROUNDS)
    levels = ", ".join(f"{level:.0%}" for level in SENSITIVITY_LEVELS)
    return (f"{SENSITIVITY_ROUNDS} rounds at every level ({levels}): {candidates} candidates, "
            f"{_against_budget(candidates, protocol.budget)}")  # fmt: skip


def _against_budget(candidates: int, budget: Budget) -> str:
    """How a search's candidate count compares with the NSGA-III searches' pop x generations."""
    others = budget.pop * budget.generations
    if candidates == others:
        return "as many as the others"
    return f"{abs(candidates - others)} {'more' if candidates > others else 'fewer'} than the others' {others}"


def _baseline_note(baselines: Sequence[Mapping[str, str]], shown: Sequence[Entry]) -> str:
    if not baselines:
        return "**Baselines:** `../baselines/baselines.csv` is not there yet: no uniform rows, no ratios.\n"
    if not shown:
        return (
            "**Baselines:** `../baselines/baselines.csv` was made with other calibration or evaluation "
            "windows than this table, so its rows and the ratios to Wanda are left out.\n"
        )
    return (
        "**Baselines:** the rows of `../baselines/baselines.csv` (WikiText-2 only) made with the same "
        "calibration and evaluation windows, one-shot and sequential.\n"
    )


def _dense_line(rows: Sequence[Mapping[str, str]]) -> str:
    for row in rows:
        if row["search"] == DENSE:
            scores = ", ".join(f"{EVALUATION_NAMES[n]} {float(row[f'{n}_ppl']):.2f}" for n in EVALUATION_FILES)
            return f"**Dense model:** perplexity {scores}.\n"
    return "**Dense model:** not run yet.\n"


def _shape_head(shape: tuple[str, float]) -> str:
    structure, sparsity = shape
    return f"{sparsity:.0%}" if structure == "unstructured" else structure


def _labels(entries: Sequence[Entry]) -> list[str]:
    order = [label for method in (*BASELINE_METHODS.values(), *SEARCH_METHODS.values())
             for label in (method, f"{method}{SEQUENTIAL}")]  # fmt: skip
    present = {entry.label for entry in entries}
    return [label for label in order if label in present]


def _ratio(entry: Entry, wanda: Mapping[tuple[str, float], float]) -> float | None:
    reference = wanda.get(entry.shape)
    return entry.perplexity["wikitext2"] / reference if reference else None


def _overview_table(entries: Sequence[Entry], wanda: Mapping[tuple[str, float], float]) -> str:
    """Method x sparsity -> WikiText-2 perplexity (ratio to Wanda); range rows share a line."""
    lines = ["| method | " + " | ".join(_shape_head(shape) for shape in SHAPES) + " |",
             "| --- |" + " ---: |" * len(SHAPES)]  # fmt: skip
    for label in _labels(entries):
        cells = []
        for shape in SHAPES:
            found = [entry for entry in entries if entry.label == label and entry.shape == shape]
            cells.append(_overview_cell(found[0], wanda) if found else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _overview_cell(entry: Entry, wanda: Mapping[tuple[str, float], float]) -> str:
    ratio = _ratio(entry, wanda)
    text = f"{entry.perplexity['wikitext2']:.2f}"
    return f"{text} ({ratio:.2f}×)" if ratio is not None else text


def _shape_section(
    entries: Sequence[Entry], shape: tuple[str, float], wanda: Mapping[tuple[str, float], float]
) -> str:
    """Every method at one sparsity: the three sets, the achieved sparsity, the search cost."""
    here = [entry for entry in entries if entry.shape == shape]
    if not here:
        return ""
    title = f"{shape[1]:.0%} unstructured" if shape[0] == "unstructured" else f"{shape[0]} ({shape[1]:.0%})"
    lines = [f"## {title}\n",
             "| method | sparsity | WikiText-2 | PTB | C4 | WikiText-2 / Wanda | candidates | search min |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for label in _labels(here):
        for entry in (e for e in here if e.label == label):
            ratio = _ratio(entry, wanda)
            cells = [f"{entry.perplexity[n]:.2f}" if n in entry.perplexity else "–" for n in EVALUATION_FILES]
            cost = [entry.row.get("candidates", "–"), entry.row.get("search_minutes", "–")]
            lines.append(f"| {label} | {entry.achieved:.4f} | " + " | ".join(cells)
                         + f" | {'' if ratio is None else f'{ratio:.3f}'} | " + " | ".join(cost) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _cost_table(rows: Sequence[Mapping[str, str]]) -> str:
    """One line per search: what it cost and where its front plot is."""
    lines = ["| search | candidates (failed) | search min | fitness min | best kl | front |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    seen: dict[str, Mapping[str, str]] = {}
    for row in rows:
        if row["search"] != DENSE:
            best = seen.get(row["search"])
            if best is None or float(row["kl"]) < float(best["kl"]):
                seen[row["search"]] = row
    for name, row in seen.items():
        plot = f"[fronts/{name}.png](fronts/{name}.png)"
        lines.append(f"| {name} | {row['candidates']} ({row['failed']}) | {row['search_minutes']} | "
                     f"{row['fitness_minutes']} | {float(row['kl']):.4f} | {plot} |")  # fmt: skip
    if not seen:
        return "No search has finished yet.\n"
    note = ("Searches at a fixed sparsity have the single objective `kl`: their plot shows `kl` "
            "against itself, the curves below say more.")  # fmt: skip
    return "\n".join(lines) + f"\n\n{note}\n"


def _ppl_curve_section(rows: Sequence[Mapping[str, str]], wanda: Mapping[tuple[str, float], float]) -> str:
    """Per level, a candidates x search table of the best-so-far recipe's WikiText-2 perplexity."""
    if not rows:
        return "No curve yet.\n"
    parts = [
        "After *n* candidates, the candidate with the lowest `kl` so far is pruned one-shot with "
        "its own rule and scored on the WikiText-2 windows (`ppl_curves.csv`, `scripts/bench_curve.py`). "
        "The evaluation set only measures; `kl` on C4 alone picks. In brackets: the ratio to "
        "uniform Wanda.\n\n![best perplexity so far](ppl_curves.png)\n"
    ]
    for level in sorted({row["level"] for row in rows}, key=float):
        here = [row for row in rows if row["level"] == level]
        searches = list(dict.fromkeys(row["search"] for row in here))
        reference = wanda.get(("unstructured", float(level)))
        lines = [f"**{float(level):.0%} unstructured**\n",
                 "| candidates | " + " | ".join(searches) + " |", "| ---: |" + " ---: |" * len(searches)]  # fmt: skip
        for count in sorted({int(row["candidates"]) for row in here}):
            cells = []
            for search in searches:
                found = [r for r in here if r["search"] == search and int(r["candidates"]) == count]
                value = float(found[0]["wikitext2_ppl"]) if found else None
                ratio = f" ({value / reference:.2f}×)" if value is not None and reference else ""
                cells.append("" if value is None else f"{value:.2f}{ratio}")
            lines.append(f"| {count} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def _curves_note() -> str:
    return (
        "`curves.csv` holds, for every search, the lowest `kl` among the first *n* candidates "
        "evaluated, for every *n* (the range search: among the candidates at least as sparse as "
        "each level). WikiText-2 perplexity per candidate would cost a full evaluation each; `kl` "
        "is what the search minimises.\n\n![best kl so far](curves.png)\n"
    )


def _allocation_section(allocations: Sequence[Mapping[str, str]]) -> str:
    if not allocations:
        return ""
    return (
        "## Where the sparsity goes\n\n"
        "Each searched recipe at a fixed unstructured sparsity, as the sparsity of every decoder "
        "block (its linears' sparsities weighted by their sizes; `allocations.csv`). The dashed "
        "line is the uniform allocation.\n\n![sparsity per block](allocations.png)\n"
    )


def _recipe_table(rows: Sequence[Mapping[str, str]]) -> str:
    lines = ["| recipe | rule | layer sparsity | kl (fitness) |", "| --- | --- | --- | ---: |"]
    seen = set()
    for row in rows:
        if row["search"] == DENSE or row["recipe"] in seen:
            continue
        seen.add(row["recipe"])
        rule = row["rule"].replace("|", "\\|")
        layers = f"{float(row['layer_min']):.3f}–{float(row['layer_max']):.3f}"
        link = f"[{Path(row['recipe']).name}]({row['recipe']})"
        lines.append(f"| {link} | {rule} | {layers} | {float(row['kl']):.4f} |")
    return "\n".join(lines) + "\n" if seen else "No recipe yet.\n"


def _missing_section(
    rows: Sequence[Mapping[str, str]], planned: Sequence[tuple[str, str, str, str]], command: str
) -> str:
    done = {row_key(row, KEY_COLUMNS) for row in rows}
    missing = [key for key in planned if key not in done]
    if not missing:
        return f"All {len(planned)} planned rows are present.\n"
    listed = "\n".join(f"- {search} at {float(level):.0%}, pruner {pruner}, {calibration}"
                       for search, level, pruner, calibration in missing)  # fmt: skip
    return (
        f"## Not yet run\n\n{len(planned) - len(missing)} of {len(planned)} planned rows are present; "
        f"these are missing:\n\n{listed}\n\nFinish the table with `{command}` (it resumes).\n"
    )
