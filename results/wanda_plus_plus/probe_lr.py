"""Which learning rate lets Wanda++'s regional optimisation help SmolLM2-135M (fp32, 2:4, RGS).

For a few decoder blocks of the one-shot walk, prune the block at 2:4 with RGS, run RO at each
learning rate (5 rounds of SAMPLES windows drawn from 32 calibration windows), and measure the block's output MSE against the dense
block on 16 held-out windows (same C4 shard, other random starts) before and after. The walk's
statistics (input norms, regional gradients) cover all 48 windows; RO sees only the 32. Prints one
CSV row per (block, lr) and writes them to probe_lr.csv beside this file.

    PARETOPRUNE_DATA=<shared data folder> python results/wanda_plus_plus/probe_lr.py
"""

from __future__ import annotations

import csv
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import torch

from paretoprune.data import calibration_windows
from paretoprune.evaluators.regional import block_output_error, regional_optimise
from paretoprune.evaluators.stats import BlockStep, walk_blocks
from paretoprune.metrics.masks import nm_keep_mask
from paretoprune.metrics.regional import RegionalSettings
from paretoprune.metrics.scores import SCORING_RULES, compute_scores
from paretoprune.models import find_layout, load_model

BLOCKS = (0, 1)
RATES = (3e-6, 3e-5, 3e-4)
SAMPLES = 8  # per round: one batch of the walk (CPU time; the paper takes 32 of its 128)
FIT, HELD_OUT = 32, 16  # windows of 512 tokens: RO's samples, and those it is judged on
HERE = Path(__file__).resolve().parent
logger = logging.getLogger("probe_lr")


def _probe(step: BlockStep, lr: float) -> tuple[float, float, float]:
    """(held-out MSE after RGS, after RGS + RO, fitted MSE after RGS + RO) on a copy of the block's
    weights, which are put back afterwards."""
    saved = {linear.name: linear.module.weight.detach().clone() for linear in step.linears}
    spec = SCORING_RULES["wanda++"]

    def rescore(linear, matrix):
        stats = step.stats[linear.name]
        return compute_scores(matrix, stats.act_norm, spec, stats.regional_grad)

    masks = {}
    for linear in step.linears:
        weight = linear.weight_matrix()
        masks[linear.name] = nm_keep_mask(rescore(linear, weight.float()), 2, 4)
        weight.mul_(masks[linear.name])
    fit_batches = FIT // 8
    fit = replace(step, inputs=step.inputs[:fit_batches], dense_outputs=step.dense_outputs[:fit_batches])
    held = (step.inputs[fit_batches:], step.dense_outputs[fit_batches:])
    before = block_output_error(step.block.module, *held)
    regional_optimise(fit, masks, rescore, (2, 4), settings=RegionalSettings(lr=lr, samples=SAMPLES))
    after = block_output_error(step.block.module, *held)
    fitted = block_output_error(step.block.module, fit.inputs, fit.dense_outputs)
    with torch.no_grad():
        for linear in step.linears:
            linear.module.weight.copy_(saved[linear.name])
    return before, after, fitted


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = Path(os.environ["PARETOPRUNE_DATA"])
    loaded = load_model("smollm2-135m")
    layout = find_layout(loaded.model)
    source = str(data / "c4" / "c4-en-train-shard00000-first1000.jsonl")
    # Seed 0 gives the protocol's 32 calibration windows first; seed 1 another 16 to judge on.
    tokens = torch.cat([calibration_windows(loaded.tokenizer, source, FIT, 512, 0),
                        calibration_windows(loaded.tokenizer, source, HELD_OUT, 512, 1)])  # fmt: skip
    rows = []
    walk = walk_blocks(loaded.model, layout, tokens, batch_size=8, gradients=True, block_io=True, propagate="dense")
    for step in walk:
        if step.block.index > max(BLOCKS):
            break
        if step.block.index not in BLOCKS:
            continue
        for lr in RATES:
            started = time.perf_counter()
            before, after, fitted = _probe(step, lr)
            row = {"block": step.block.index, "lr": lr, "held_out_mse_rgs": before, "held_out_mse_ro": after,
                   "fitted_mse_ro": fitted, "ratio": after / before, "seconds": time.perf_counter() - started}  # fmt: skip
            logger.info("%s", row)
            rows.append(row)
    with open(HERE / "probe_lr.csv", "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        if handle.tell() == 0:
            writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
