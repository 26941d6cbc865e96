#!/usr/bin/env python3
"""Check that llm-compressor reads paretoprune's exported recipes the way we mean them.

Run it with the Python of a separate environment that has llm-compressor installed
(``scripts/llmcompressor_venv.sh`` makes one; llm-compressor pins its own transformers and
torch). Without llm-compressor it says so and exits 0, so it can sit in any check list.

Self-check (no arguments): build a tiny random Llama, export recipes for it (SparseGPT and
Wanda, unstructured and N:M, one layer left dense), and for each

1. parse the file with llm-compressor's own ``Recipe.create_instance``;
2. check the modifier's class, its ``mask_structure``, and that its sparsity list has one
   entry per module its ``targets`` match, matched in the order we listed them;
3. unless ``--parse-only``: run ``oneshot`` on the tiny model and check every layer's achieved
   sparsity (and N:M pattern) against the recipe, and that dense layers stayed dense.

With files (``check_llmcompressor.py --model DIR exported.yaml ...``): steps 1 and 2 for each
file on the model in DIR (built from its config only, no weights loaded).

Exit code 0 when every check passes (or llm-compressor is missing), 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# (pruner, our structure) of the self-check; our 1:4 keeps one weight of four (theirs: "3:4").
SELF_CHECK_CASES = (
    ("sparsegpt", "unstructured"),
    ("wanda", "unstructured"),
    ("sparsegpt", "2:4"),
    ("wanda", "1:4"),
)
# Achieved vs requested sparsity: SparseGPT prunes one weight more per block, Wanda rounds down.
SPARSITY_TOLERANCE = 0.02

logger = logging.getLogger("check_llmcompressor")


@dataclass
class Outcome:
    name: str
    problems: list[str]


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if importlib.util.find_spec("llmcompressor") is None:
        print(
            "llm-compressor is not installed in this Python; nothing checked. Create its own "
            "environment with scripts/llmcompressor_venv.sh and run this script with that "
            "environment's python (make check-llmcompressor does both)."
        )
        return 0
    _quiet_llmcompressor(args.verbose)
    outcomes = _check_files(args.files, args.model) if args.files else _self_check(args.parse_only)
    return _report(outcomes)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "files", nargs="*", type=Path, help="llm-compressor recipes exported by paretoprune"
    )
    parser.add_argument(
        "--model", help="local model folder the files were exported for (with files)"
    )
    parser.add_argument(
        "--parse-only", action="store_true", help="self-check without running oneshot"
    )
    parser.add_argument("--verbose", action="store_true", help="keep llm-compressor's own log")
    args = parser.parse_args(argv)
    if args.files and not args.model:
        parser.error("--model DIR is needed to count the modules the targets match")
    return args


def _quiet_llmcompressor(verbose: bool) -> None:
    """Keep llm-compressor's errors; drop its info, CPU warnings, metrics and progress bars."""
    if verbose:
        return
    os.environ.setdefault("LLM_COMPRESSOR_LOG_LEVEL", "ERROR")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _report(outcomes: list[Outcome]) -> int:
    failed = 0
    for outcome in outcomes:
        if outcome.problems:
            failed += 1
            print(f"FAIL {outcome.name}")
            for problem in outcome.problems:
                print(f"     - {problem}")
        else:
            print(f"ok   {outcome.name}")
    import llmcompressor

    verdict = "all checks passed" if not failed else f"{failed} of {len(outcomes)} checks failed"
    print(f"llm-compressor {llmcompressor.__version__}: {verdict}")
    return 1 if failed else 0


# --------------------------------------------------------------------------------------------
# Parsing with llm-compressor's own classes


def check_parsed(path: Path, model: Any) -> list[str]:
    """Problems llm-compressor has with one exported file on ``model`` (empty when none).

    Its modifier matches targets in ``named_modules()`` order; when the targets are exact module
    names they must already be listed in that order, or the sparsity list would be misaligned.
    """
    from compressed_tensors.utils import match_named_modules
    from llmcompressor.recipe import Recipe as LlmcRecipe

    try:
        parsed = LlmcRecipe.create_instance(str(path))
    except Exception as error:  # llm-compressor's own validation: report it, whatever its type
        return [f"llm-compressor rejected the file: {type(error).__name__}: {error}"]
    if len(parsed.modifiers) != 1:
        return [f"expected one modifier, llm-compressor found {len(parsed.modifiers)}"]
    modifier = parsed.modifiers[0]
    targets = [modifier.targets] if isinstance(modifier.targets, str) else list(modifier.targets)
    matched = [name for name, _ in match_named_modules(model, targets, modifier.ignore)]
    problems = []
    if not isinstance(modifier.sparsity, list) or len(modifier.sparsity) != len(matched):
        problems.append(
            f"sparsity has {_length(modifier.sparsity)} entries, "
            f"targets match {len(matched)} modules"
        )
    exact = set(targets) <= {name for name, _ in model.named_modules()}
    if exact and matched != targets:
        problems.append(
            f"targets match {matched[:3]}..., listed as {targets[:3]}... (order differs)"
        )
    return problems


def _length(value: Any) -> str:
    return str(len(value)) if isinstance(value, list) else f"no list ({value!r})"


# --------------------------------------------------------------------------------------------
# Explicit files


def _check_files(files: list[Path], model_dir: str) -> list[Outcome]:
    model = _model_skeleton(model_dir)
    outcomes = []
    for path in files:
        problems = check_parsed(path, model) if path.is_file() else [f"{path} does not exist"]
        problems += _against_source_recipe(path) if path.is_file() else []
        outcomes.append(Outcome(name=str(path), problems=problems))
    return outcomes


def _model_skeleton(model_dir: str) -> Any:
    """The model's modules without its weights: matching targets needs names and classes only."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _against_source_recipe(path: Path) -> list[str]:
    """The list must be the source recipe's layer sparsities, target by target."""
    import yaml

    from paretoprune.errors import InputError
    from paretoprune.recipe import METADATA_KEY, recipe_from_data

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or METADATA_KEY not in data:
        return [f"no '{METADATA_KEY}' key: not exported by paretoprune"]
    try:
        layers = recipe_from_data(data[METADATA_KEY], source=str(path)).pruning.layers
    except InputError as error:
        return [f"the embedded source recipe is invalid: {error}"]
    modifiers = [
        arguments
        for stage_name, stage in data.items()
        if stage_name.endswith("_stage") and isinstance(stage, dict)
        for group_name, group in stage.items()
        if group_name.endswith("_modifiers") and isinstance(group, dict)
        for arguments in group.values()
    ]
    if len(modifiers) != 1:
        return [f"expected one modifier in the file, found {len(modifiers)}"]
    targets, sparsity = modifiers[0].get("targets", []), modifiers[0].get("sparsity", [])
    wrong = [
        name for name, value in zip(targets, sparsity, strict=False) if layers.get(name) != value
    ]
    if wrong:
        return [f"{len(wrong)} sparsities differ from the source recipe, e.g. {wrong[0]}"]
    return []


# --------------------------------------------------------------------------------------------
# Self-check on a tiny Llama


def _self_check(parse_only: bool) -> list[Outcome]:
    from paretoprune.exporters import llmcompressor_targets, to_llmcompressor

    outcomes = []
    with tempfile.TemporaryDirectory(prefix="paretoprune-llmc-") as scratch:
        folder = Path(scratch)
        model_dir = _save_tiny_model(folder / "model")
        for pruner, structure in SELF_CHECK_CASES:
            recipe = _tiny_recipe(model_dir, structure, metric=pruner)
            path = folder / f"{pruner}-{structure.replace(':', 'of')}.yaml"
            path.write_text(to_llmcompressor(recipe, pruner=pruner), encoding="utf-8")
            targets = llmcompressor_targets(recipe)
            problems = check_parsed(path, _load(model_dir))
            problems += _against_source_recipe(path)
            if not parse_only and not problems:
                problems += _run_oneshot(path, model_dir, recipe)
            outcomes.append(
                Outcome(name=f"{pruner} {structure} ({len(targets)} targets)", problems=problems)
            )
    return outcomes


def _save_tiny_model(folder: Path) -> Path:
    """A tiny Llama saved to disk: oneshot reads the config back from the model's folder."""
    from paretoprune.testing import byte_tokenizer, tiny_model

    tiny_model("llama", seed=0).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


def _load(model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir).eval()


def _tiny_recipe(model_dir: Path, structure: str, metric: str) -> Any:
    """A recipe for the tiny model: varied sparsities, the second layer left dense."""
    from paretoprune.models import find_layout, fingerprint
    from paretoprune.recipe import FORMAT, recipe_from_data

    model = _load(model_dir)
    layout = find_layout(model)
    layers = {name: _layer_sparsity(index, structure) for index, name in enumerate(layout.names)}
    data = {
        "format": FORMAT,
        "model": {
            "name": str(model_dir),
            "fingerprint": fingerprint(model),
            "family": layout.family,
        },
        "pruning": {
            "metric": {"name": metric, "params": {}},
            "structure": structure,
            "group": "row",
            "sparsity": sum(layers.values()) / len(layers),
            "layers": layers,
        },
        "objectives": {},
        "provenance": {
            "calibration": {
                "source": "random",
                "sha256": "-",
                "nsamples": 8,
                "seqlen": 32,
                "seed": 0,
            }
        },
    }
    return recipe_from_data(data, source="self-check recipe")


def _layer_sparsity(index: int, structure: str) -> float:
    from paretoprune.metrics.masks import parse_structure

    pattern = parse_structure(structure)
    if pattern is not None:
        return 1.0 - pattern[0] / pattern[1]
    return 0.0 if index == 1 else round(0.3 + 0.04 * index, 4)


def _run_oneshot(path: Path, model_dir: Path, recipe: Any) -> list[str]:
    """Prune the tiny model with llm-compressor and compare every layer with the recipe."""
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoTokenizer

    model = _load(model_dir)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 256, (8, 32), generator=generator)
    dataset = Dataset.from_dict(
        {"input_ids": tokens.tolist(), "attention_mask": torch.ones_like(tokens).tolist()}
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    oneshot(
        model=model,
        recipe=str(path),
        dataset=dataset,
        tokenizer=tokenizer,
        num_calibration_samples=8,
        max_seq_length=32,
        pipeline="basic",
    )
    return _compare_sparsities(model, recipe)


def _compare_sparsities(model: Any, recipe: Any) -> list[str]:
    from paretoprune.metrics.masks import parse_structure

    modules = dict(model.named_modules())
    pattern = parse_structure(recipe.pruning.structure)
    problems = []
    for name, wanted in recipe.pruning.layers.items():
        weight = modules[name].weight.detach()
        achieved = float((weight == 0).float().mean())
        if wanted == 0.0 and achieved > 0.0:
            problems.append(f"{name}: left dense by the recipe, pruned to {achieved:.4f}")
        elif abs(achieved - wanted) > SPARSITY_TOLERANCE:
            problems.append(f"{name}: sparsity {achieved:.4f}, recipe says {wanted}")
        if pattern is not None and not _keeps_at_most(weight, *pattern):
            problems.append(
                f"{name}: not {recipe.pruning.structure} (more than {pattern[0]} kept in a block)"
            )
    if float((modules["lm_head"].weight == 0).float().mean()) > 0:
        problems.append("lm_head was pruned")
    return problems


def _keeps_at_most(weight: Any, kept: int, block: int) -> bool:
    nonzero = (weight != 0).reshape(weight.shape[0], -1, block).sum(dim=-1)
    return bool((nonzero <= kept).all())


if __name__ == "__main__":
    sys.exit(main())
