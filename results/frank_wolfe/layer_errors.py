"""Frank-Wolfe mask refinement over every linear of SmolLM2-135M: its error against its warm start.

For each of the 210 prunable linears, one-shot from the dense model's statistics (the
protocol's C4 calibration, 32 x 512 tokens): Wanda's mask at the target is the warm start,
``frank_wolfe_mask`` refines it, and the layer's output error ``||(W - M*W) X||^2`` of both
masks is measured on the calibration inputs (the error FW minimises) and on held-out C4
validation inputs (whether the gain carries over to other text)::

    python results/frank_wolfe/layer_errors.py --data $PARETOPRUNE_DATA --targets 0.6,2:4 \\
        --out results/frank_wolfe/layer_errors.csv

One row per linear and target; the summary the README quotes is printed at the end.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import time
from pathlib import Path

import numpy as np
import torch

from paretoprune.data import calibration_windows
from paretoprune.evaluators.stats import collect_stats
from paretoprune.io import atomic_write_text
from paretoprune.metrics.frank_wolfe import FrankWolfeSettings, frank_wolfe_mask, layer_error
from paretoprune.metrics.masks import keep_mask, parse_structure
from paretoprune.metrics.scores import wanda_scores
from paretoprune.models import find_layout, load_model

logger = logging.getLogger("fw-layer-errors")

CALIBRATION = "c4/c4-en-train-shard00000-first1000.jsonl"
VALIDATION = "c4/c4-en-validation-shard00000-first1000.json.gz"
COLUMNS = ("target", "linear", "kind", "block", "iterations", "alpha", "calibration_ratio", "validation_ratio", "seconds")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the data folder (c4/)")
    parser.add_argument("--targets", default="0.6,2:4", help="sparsities or N:M, comma separated")
    parser.add_argument("--iterations", type=int, default=FrankWolfeSettings.iterations)
    parser.add_argument("--alpha", type=float, default=FrankWolfeSettings.alpha)
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args()


def _warm_start(weight: torch.Tensor, act_norm: torch.Tensor, target: str) -> torch.Tensor:
    structure = parse_structure(target) if ":" in target else None
    return keep_mask(wanda_scores(weight, act_norm), 0.0 if structure else float(target), structure)


def _ratio(weight: torch.Tensor, refined: torch.Tensor, warm: torch.Tensor, hessian: torch.Tensor) -> float:
    return float(layer_error(weight, refined, hessian) / layer_error(weight, warm, hessian))


def main() -> None:
    args = _arguments()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    loaded = load_model("smollm2-135m")
    layout = find_layout(loaded.model)
    calibration = calibration_windows(loaded.tokenizer, str(args.data / CALIBRATION), 32, 512, 0)
    validation = calibration_windows(loaded.tokenizer, str(args.data / VALIDATION), 16, 512, 0)
    fitted = collect_stats(loaded.model, layout, calibration, batch_size=4, hessian=True)
    held_out = collect_stats(loaded.model, layout, validation, batch_size=4, hessian=True)
    rows = []
    for target in args.targets.split(","):
        for linear in layout.linears:
            started = time.perf_counter()
            weight = linear.weight_matrix().detach().float()
            stats = fitted[linear.name]
            warm = _warm_start(weight, stats.act_norm, target)
            refined = frank_wolfe_mask(weight, stats.hessian(), warm, iterations=args.iterations, alpha=args.alpha)
            rows.append({
                "target": target, "linear": linear.name, "kind": linear.kind, "block": linear.block_index,
                "iterations": args.iterations, "alpha": args.alpha,
                "calibration_ratio": round(_ratio(weight, refined, warm, stats.hessian()), 6),
                "validation_ratio": round(_ratio(weight, refined, warm, held_out[linear.name].hessian()), 6),
                "seconds": round(time.perf_counter() - started, 3),
            })  # fmt: skip
        _summarise(rows, target)
        _write(args.out, rows)


def _summarise(rows: list[dict], target: str) -> None:
    mine = [row for row in rows if row["target"] == target]
    for column in ("calibration_ratio", "validation_ratio"):
        values = np.array([row[column] for row in mine])
        logger.info("%s %s over %d linears: median %.3f, quartiles %.3f-%.3f, min %.3f, max %.3f", target, column,
                    len(values), np.median(values), *np.quantile(values, [0.25, 0.75]), values.min(), values.max())  # fmt: skip


def _write(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


if __name__ == "__main__":
    main()
