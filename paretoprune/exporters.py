"""Recipes in the formats other pruners read.

Two targets beside our own YAML/JSON:

- *ratios*: a plain ``{module name: sparsity}`` JSON with the global sparsity and structure,
  the shape Wanda/OWL-style research code reads for non-uniform layer sparsities.
- *llm-compressor* (0.14): a recipe its ``oneshot`` consumes unchanged. One stage with one
  ``SparseGPTModifier`` or ``WandaPruningModifier`` whose ``targets`` are the exact module
  names of the layers to prune and whose ``sparsity`` is a list with one entry per target.

How llm-compressor aligns that list (checked in its 0.14 source and by running it): the
modifier collects the modules its ``targets`` match, in ``model.named_modules()`` order,
whatever order the targets are written in, and gives the i-th of them the i-th sparsity; the
count includes modules that ``ignore`` later skips (``targets: [Linear]`` counts ``lm_head``).
Exact names avoid both traps, provided the list follows the model's module order, which is
the order a recipe keeps its layers in (or ``module_order`` when given).

Two more facts shape the export. llm-compressor's ``mask_structure: "N:M"`` prunes N of every M
weights, while ours keeps N, so a 1:4 recipe of ours is 3:4 there. And its SparseGPT prunes at
least one weight per block even at sparsity 0, so layers the recipe leaves dense are left out
of the targets instead of being given a zero.

Whatever llm-compressor cannot express (a scoring rule other than the pruner's own, a global
rule such as LRP whose score map it cannot compute, a ``layer`` comparison group with Wanda, N:M layers whose sparsity differs from 1 - N/M, GPT-2's
Conv1D layers) is logged as a warning and written as a comment at the top of the file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Literal

from paretoprune.errors import InputError
from paretoprune.io import atomic_write_text
from paretoprune.metrics.masks import parse_structure
from paretoprune.recipe import METADATA_KEY, Recipe, dump_yaml, save_recipe

__all__ = [
    "EXPORT_FORMATS",
    "LLMCOMPRESSOR_MODIFIERS",
    "LLMCOMPRESSOR_STAGE",
    "export_recipe",
    "llmcompressor_mask_structure",
    "llmcompressor_targets",
    "to_llmcompressor",
    "to_ratios_json",
]

logger = logging.getLogger(__name__)

Pruner = Literal["sparsegpt", "wanda"]

EXPORT_FORMATS = ("yaml", "json", "llmcompressor", "ratios")

# Our pruner name -> the llm-compressor modifier class that implements it.
LLMCOMPRESSOR_MODIFIERS: dict[str, str] = {
    "sparsegpt": "SparseGPTModifier",
    "wanda": "WandaPruningModifier",
}
LLMCOMPRESSOR_STAGE = "sparsity_stage"
_LLMCOMPRESSOR_GROUP = "sparsity_modifiers"
# Sparsities closer than this to 1 - N/M count as that N:M pattern's own sparsity.
_NM_TOLERANCE = 1e-6


# --------------------------------------------------------------------------------------------
# Plain ratios


def to_ratios_json(recipe: Recipe) -> dict[str, Any]:
    """Layer sparsities by module name, plus the global sparsity and the structure."""
    plan = recipe.pruning
    return {
        "model": recipe.model.name,
        "sparsity": plan.sparsity,
        "structure": plan.structure,
        "metric": plan.rule,  # a global rule's name where the masks rank its scores
        "layers": dict(plan.layers),
    }


# --------------------------------------------------------------------------------------------
# llm-compressor


def to_llmcompressor(
    recipe: Recipe,
    module_order: Sequence[str] | None = None,
    pruner: Pruner | None = None,
) -> str:
    """The recipe as an llm-compressor 0.14 YAML recipe (see the module docstring).

    ``module_order`` is the model's prunable linears in ``named_modules()`` order (e.g.
    ``find_layout(model).names``); without it the recipe's own layer order is trusted.
    ``pruner`` picks the modifier; by default Wanda for a Wanda recipe, else SparseGPT (a global
    rule's recipe too, whatever its metric's label).
    """
    chosen = pruner or ("wanda" if recipe.pruning.rule == "wanda" else "sparsegpt")
    if chosen not in LLMCOMPRESSOR_MODIFIERS:
        raise InputError(f"llm-compressor pruner {chosen!r} is unknown; choose sparsegpt or wanda")
    targets = llmcompressor_targets(recipe, module_order)
    notes = _inexpressible(recipe, chosen)
    for note in notes:
        logger.warning("llm-compressor export: %s", note)
    stage = _stage_yaml(chosen, targets, recipe)
    metadata = dump_yaml({METADATA_KEY: recipe.to_data()})
    dense = len(recipe.pruning.layers) - len(targets)
    return _header(recipe, dense, notes) + stage + metadata


def llmcompressor_targets(recipe: Recipe, module_order: Sequence[str] | None = None) -> list[str]:
    """The layers llm-compressor should prune, in the model's module order; dense ones left out."""
    names = list(recipe.pruning.layers)
    if module_order is not None:
        names = _in_module_order(names, module_order)
    pruned = [name for name in names if recipe.pruning.layers[name] > 0.0]
    if not pruned:
        raise InputError("the recipe prunes no layer (every sparsity is 0); nothing to export")
    return pruned


def llmcompressor_mask_structure(structure: str) -> str:
    """Our structure as llm-compressor's ``mask_structure``: "0:0", or pruned:block for N:M."""
    pattern = parse_structure(structure)
    if pattern is None:
        return "0:0"
    kept, block = pattern
    return f"{block - kept}:{block}"


def _in_module_order(names: list[str], module_order: Sequence[str]) -> list[str]:
    order = {name: index for index, name in enumerate(module_order)}
    missing = [name for name in names if name not in order]
    if missing:
        raise InputError(
            f"recipe layer {missing[0]} is not among the model's modules; export with the "
            "model the recipe was made for"
        )
    return sorted(names, key=order.__getitem__)


def _inexpressible(recipe: Recipe, pruner: str) -> list[str]:
    """What of the recipe llm-compressor's modifier cannot reproduce, one sentence each."""
    plan = recipe.pruning
    notes = []
    if plan.rule != pruner:
        notes.append(_metric_note(plan.rule, pruner))
    if pruner == "wanda" and plan.group != "row":
        notes.append(
            f"comparison group {plan.group!r} is not available: WandaPruningModifier compares "
            "weights within each output row"
        )
    notes.extend(_structure_notes(recipe))
    if recipe.model.family == "gpt2":
        notes.append(
            "GPT-2's Conv1D layers are matched by name but llm-compressor 0.14 prunes only "
            "torch Linear/Conv modules, so they stay dense"
        )
    return notes


def _metric_note(metric: str, pruner: str) -> str:
    modifier = LLMCOMPRESSOR_MODIFIERS[pruner]
    if metric in LLMCOMPRESSOR_MODIFIERS:
        return (
            f"{modifier} replaces the recipe's scoring rule {metric!r} with its own criterion; "
            f"export with pruner={metric!r} to keep it"
        )
    return (
        f"the recipe's scoring rule {metric!r} has no llm-compressor modifier; {modifier} prunes "
        "with its own criterion at the recipe's layer sparsities"
    )


def _structure_notes(recipe: Recipe) -> list[str]:
    pattern = parse_structure(recipe.pruning.structure)
    if pattern is None:
        return []
    kept, block = pattern
    own = 1.0 - kept / block
    other = [
        name for name, value in recipe.pruning.layers.items() if abs(value - own) > _NM_TOLERANCE
    ]
    if not other:
        return []
    return [
        f"{len(other)} layers (e.g. {other[0]}) have a sparsity other than {own:g}, which "
        f"{recipe.pruning.structure} implies; llm-compressor applies one mask_structure to all "
        "targets and ignores their sparsity"
    ]


def _header(recipe: Recipe, dense: int, notes: list[str]) -> str:
    lines = [
        f"# llm-compressor recipe exported by paretoprune {recipe.provenance.version} for "
        f"{recipe.model.name} (fingerprint {recipe.model.fingerprint}).",
        "# Use: oneshot(model=..., recipe='this file', dataset=...). The sparsity list follows the",
        "# targets in the model's module order, which is how llm-compressor aligns them.",
        f"# Top-level key '{METADATA_KEY}' is the source recipe; llm-compressor ignores it.",
    ]
    if dense:
        lines.append(
            f"# {dense} layers the recipe leaves dense are not targeted (llm-compressor's "
            "SparseGPT prunes a weight per block even at sparsity 0)."
        )
    lines += [f"# WARNING: {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _stage_yaml(pruner: str, targets: list[str], recipe: Recipe) -> str:
    """The stage, written by hand so that each sparsity carries its module name as a comment."""
    modifier = LLMCOMPRESSOR_MODIFIERS[pruner]
    structure = llmcompressor_mask_structure(recipe.pruning.structure)
    lines = [
        f"{LLMCOMPRESSOR_STAGE}:",
        f"  {_LLMCOMPRESSOR_GROUP}:",
        f"    {modifier}:",
        f"      mask_structure: {json.dumps(structure)}",
        "      targets:",
        *[f"        - {json.dumps(name)}" for name in targets],
        "      sparsity:",
        *[f"        - {_yaml_float(recipe.pruning.layers[name])}  # {name}" for name in targets],
    ]
    return "\n".join(lines) + "\n"


def _yaml_float(value: float) -> str:
    """A float YAML 1.1 reads as a float: PyYAML takes '1e-05' (no dot) for a string."""
    text = repr(float(value))
    if "." in text and "e" not in text:
        return text
    return f"{value:.15f}".rstrip("0").rstrip(".") + (".0" if float(value).is_integer() else "")


# --------------------------------------------------------------------------------------------
# One entry point for the command line


def export_recipe(
    recipe: Recipe,
    path: str | Path,
    fmt: str,
    module_order: Sequence[str] | None = None,
    pruner: Pruner | None = None,
) -> Path:
    """Write ``recipe`` to ``path`` in one of :data:`EXPORT_FORMATS`, atomically."""
    target = Path(path)
    if fmt in ("yaml", "json"):
        return save_recipe(recipe, _with_suffix(target, fmt))
    if fmt == "ratios":
        return atomic_write_text(target, json.dumps(to_ratios_json(recipe), indent=2) + "\n")
    if fmt == "llmcompressor":
        return atomic_write_text(target, to_llmcompressor(recipe, module_order, pruner))
    raise InputError(f"export format {fmt!r} is unknown; choose one of {', '.join(EXPORT_FORMATS)}")


def _with_suffix(path: Path, fmt: str) -> Path:
    """The path, with the format's suffix added if it has none; another suffix is an error."""
    wanted = (".json",) if fmt == "json" else (".yaml", ".yml")
    if path.suffix.lower() in wanted:
        return path
    if path.suffix:
        raise InputError(
            f"output {path} does not end in {' or '.join(wanted)} as --format {fmt} writes"
        )
    return path.with_name(path.name + wanted[0])
