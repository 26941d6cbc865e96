"""Cross-check our zero-shot evaluator against lm-evaluation-harness itself, on the same files.

lm-eval runs its own task definitions (prompts, choices, targets: its built-in task yaml, pulled
in with ``include:``) with only the data source replaced by our local files, so the comparison
tests our reading of the protocol, not a copy of it. Both sides score the first ``--limit``
examples of each task (lm-eval's ``--limit``; our ``subset="first"``) with the same weights,
and the script compares the accuracies and every single log-likelihood.

lm-eval pins its own dependencies, so it lives in a separate virtual environment:

    python -m venv LMEVAL_VENV && LMEVAL_VENV/bin/pip install "lm-eval[hf]"
    python scripts/lm_eval_crosscheck.py --lm-eval-python LMEVAL_VENV/bin/python --limit 200

Without lm-eval the script says so and exits 0. It exits 1 when a task's accuracy differs by
more than ``--tolerance`` points, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["main"]

logger = logging.getLogger("lm_eval_crosscheck")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TASK_DIR = REPO_ROOT.parent / "shared" / "data" / "zeroshot"
DEFAULT_TASKS = "arc_easy,piqa,boolq"
INSTALL_HINT = (
    "install it in a separate venv (python -m venv V && V/bin/pip install 'lm-eval[hf]') "
    "and pass --lm-eval-python V/bin/python"
)


@dataclass(frozen=True)
class HarnessTask:
    """How one of our tasks is posed to lm-eval: its built-in yaml and our file in its place."""

    builtin_yaml: str  # relative to lm_eval/tasks
    split: str  # the split the built-in task evaluates: "validation" or "test"
    loader: str  # the datasets builder that reads our file: "json" or "parquet"
    process_docs: str | None  # a function of the generated helper module, or None


HARNESS_TASKS: dict[str, HarnessTask] = {
    "arc_easy": HarnessTask("arc/arc_easy.yaml", "test", "json", "arc_docs"),
    "arc_challenge": HarnessTask("arc/arc_challenge.yaml", "test", "json", "arc_docs"),
    "piqa": HarnessTask("piqa/piqa.yaml", "validation", "json", None),
    "boolq": HarnessTask("super_glue/boolq/default.yaml", "validation", "json", "boolq_docs"),
    "openbookqa": HarnessTask("openbookqa/openbookqa.yaml", "test", "json", "openbookqa_docs"),
    "winogrande": HarnessTask("winogrande/default.yaml", "validation", "json", None),
    "rte": HarnessTask("glue/rte/default.yaml", "validation", "parquet", None),
    "lambada": HarnessTask("lambada/lambada_openai.yaml", "test", "json", None),
}

# process_docs functions that turn our local records into the Hugging Face layout the built-in
# prompts expect (ARC and OpenBookQA nest the question; BoolQ's label is a JSON boolean here).
HELPER_MODULE = """
def _flat(doc, stem_field):
    question = doc["question"]
    return {
        "id": doc["id"],
        stem_field: question["stem"],
        "choices": {
            "text": [choice["text"] for choice in question["choices"]],
            "label": [choice["label"] for choice in question["choices"]],
        },
        "answerKey": doc["answerKey"],
    }


def arc_docs(dataset):
    convert = lambda doc: _flat(doc, "question")
    return dataset.map(convert, remove_columns=dataset.column_names)


def openbookqa_docs(dataset):
    convert = lambda doc: _flat(doc, "question_stem")
    return dataset.map(convert, remove_columns=dataset.column_names)


def boolq_docs(dataset):
    convert = lambda doc: {**doc, "label": int(bool(doc["label"]))}
    return dataset.map(convert, remove_columns=dataset.column_names)
"""

# Runs inside lm-eval's interpreter: evaluate the generated tasks, print one JSON line with the
# metrics and, per document, the log-likelihood of each request.
DRIVER = """
import json, sys
import lm_eval
from lm_eval.tasks import TaskManager
args = json.loads(sys.argv[1])
out = lm_eval.simple_evaluate(
    model="hf",
    model_args="pretrained=" + args["model"] + ",dtype=float32",
    tasks=args["tasks"],
    task_manager=TaskManager(include_path=args["include"]),
    limit=args["limit"],
    batch_size=args["batch_size"],
    device="cpu",
    log_samples=True,
)
report = {}
for task, values in out["results"].items():
    metrics = {key.split(",")[0]: value for key, value in values.items() if key.endswith(",none")}
    samples = sorted(out["samples"][task], key=lambda sample: sample["doc_id"])
    logliks = [[float(response[0][0]) for response in sample["resps"]] for sample in samples]
    report[task] = {"metrics": metrics, "logliks": logliks}
print("LMEVAL_RESULTS " + json.dumps(report))
"""


# --------------------------------------------------------------------------------------------
# Posing our tasks to lm-eval


def _probe(python: str) -> tuple[Path | None, str]:
    """lm-eval's built-in task folder under ``python``, or why it cannot be used."""
    code = "import lm_eval.tasks, transformers, os; print(os.path.dirname(lm_eval.tasks.__file__))"
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"cannot run {python} ({error})"
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return None, f"{python} cannot import lm_eval ({lines[-1] if lines else 'no output'})"
    return Path(done.stdout.strip().splitlines()[-1]), ""


def _task_yaml(name: str, task: HarnessTask, builtin: Path, data_file: Path) -> str:
    """A task yaml: the built-in one, with its data source replaced by a local file."""
    splits = {"training_split": "null", "validation_split": "null", "test_split": "null"}
    splits[f"{task.split}_split"] = task.split
    lines = [
        f"include: {json.dumps(str(builtin / task.builtin_yaml))}",
        f"task: paretoprune_{name}",
        f"dataset_path: {task.loader}",
        "dataset_name: null",
        "dataset_kwargs:",
        "  data_files:",
        f"    {task.split}: {json.dumps(str(data_file))}",
        *(f"{key}: {value}" for key, value in splits.items()),
    ]
    if task.process_docs:
        lines.append(f"process_docs: !function paretoprune_local.{task.process_docs}")
    return "\n".join(lines) + "\n"


def _piqa_with_labels(task_dir: Path, out: Path) -> Path:
    """PIQA keeps its labels in a separate file; the datasets json loader needs one file."""
    from paretoprune.evaluators.zeroshot_tasks import load_task

    records_file, labels_file = (task_dir / name for name in load_task("piqa", task_dir).files)
    records = [json.loads(line) for line in records_file.read_text("utf-8").splitlines() if line]
    labels = labels_file.read_text("utf-8").split()
    merged = out / "piqa.jsonl"
    rows = [{**record, "label": int(label)} for record, label in zip(records, labels, strict=True)]
    merged.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return merged


def _write_tasks(tasks: list[str], task_dir: Path, builtin: Path, out: Path) -> None:
    """The include folder: one yaml per task and the helper module they name."""
    from paretoprune.evaluators.zeroshot_tasks import load_task

    (out / "paretoprune_local.py").write_text(HELPER_MODULE, encoding="utf-8")
    for name in tasks:
        if name == "piqa":
            data_file = _piqa_with_labels(task_dir, out)
        else:
            data_file = task_dir / load_task(name, task_dir).files[0]
        text = _task_yaml(name, HARNESS_TASKS[name], builtin, data_file)
        (out / f"paretoprune_{name}.yaml").write_text(text, encoding="utf-8")


def _run_lm_eval(python: str, model_dir: Path, tasks: list[str], include: Path, args: Any) -> Any:
    request = {
        "include": str(include),
        "model": str(model_dir),
        "tasks": [f"paretoprune_{name}" for name in tasks],
        "limit": args.limit,
        "batch_size": args.batch_size,
    }
    command = [python, "-c", DRIVER, json.dumps(request)]
    done = subprocess.run(command, capture_output=True, text=True)
    marker = [line for line in done.stdout.splitlines() if line.startswith("LMEVAL_RESULTS ")]
    if done.returncode != 0 or not marker:
        sys.stderr.write(done.stderr[-4000:])
        raise RuntimeError(f"lm-eval failed with exit code {done.returncode}")
    report = json.loads(marker[-1].removeprefix("LMEVAL_RESULTS "))
    return {name.removeprefix("paretoprune_"): values for name, values in report.items()}


def _model_folder(loaded: Any, scratch: Path) -> Path:
    """A save_pretrained folder of the model that lm-eval can load (the cached copy if any)."""
    source = Path(loaded.source)
    if source.is_dir() and (source / "config.json").exists():
        return source
    folder = scratch / "model"
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------------------------
# Comparing


def _max_loglik_gap(ours: list[list[float]], theirs: list[list[float]]) -> float:
    """The largest difference between the two sides' log-likelihoods of the same request."""
    if [len(row) for row in ours] != [len(row) for row in theirs]:
        return float("inf")  # not even the same requests
    return max(
        (
            abs(a - b)
            for mine, other in zip(ours, theirs, strict=True)
            for a, b in zip(mine, other, strict=True)
        ),
        default=0.0,
    )


def _compare(
    ours: dict[str, Any], theirs: dict[str, Any], tolerance: float
) -> list[dict[str, Any]]:
    rows = []
    for name, entry in ours.items():
        gap = _max_loglik_gap(entry["logliks"], theirs[name]["logliks"])
        for metric in ("acc", "acc_norm", "perplexity"):
            if metric not in entry or metric not in theirs[name]["metrics"]:
                continue
            scale = 1.0 if metric == "perplexity" else 100.0
            diff = (entry[metric] - theirs[name]["metrics"][metric]) * scale
            passed = metric == "perplexity" or abs(diff) <= tolerance + 1e-9
            row = {"task": name, "metric": metric, "n": entry["n"], "ours": entry[metric]}
            row.update(lm_eval=theirs[name]["metrics"][metric], diff=diff, ok=passed)
            rows.append({**row, "max_loglik_gap": gap})
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| task | metric | n | ours | lm-eval | diff (points) | max loglik gap | agree |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        scale = 1.0 if row["metric"] == "perplexity" else 100.0
        cells = [
            row["task"],
            row["metric"],
            str(row["n"]),
            f"{row['ours'] * scale:.2f}",
            f"{row['lm_eval'] * scale:.2f}",
            f"{row['diff']:+.2f}",
            f"{row['max_loglik_gap']:.1e}",
            "yes" if row["ok"] else "NO",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="what load_model accepts")
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help=", ".join(HARNESS_TASKS))
    parser.add_argument("--task-dir", type=Path, default=DEFAULT_TASK_DIR)
    parser.add_argument("--limit", type=int, default=200, help="first N examples of each task")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tolerance", type=float, default=0.5, help="in accuracy points")
    parser.add_argument(
        "--lm-eval-python",
        default=os.environ.get("LM_EVAL_PYTHON", sys.executable),
        help="interpreter with lm-eval installed (default: $LM_EVAL_PYTHON, else this one)",
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    return parser.parse_args(argv)


def _bad_input(args: argparse.Namespace, tasks: list[str]) -> str:
    unknown = [task for task in tasks if task not in HARNESS_TASKS]
    if unknown:
        return (
            f"cannot cross-check {', '.join(unknown)}: choose from {', '.join(HARNESS_TASKS)} "
            "(the local HellaSwag file is a derived form lm-eval's task cannot read)"
        )
    if not tasks:
        return "no task given: pass --tasks"
    if not args.task_dir.is_dir():
        return f"task folder {args.task_dir} does not exist: pass --task-dir"
    if args.limit < 1:
        return f"--limit must be a positive number of examples, got {args.limit}"
    return ""


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = _arguments(argv)
    tasks = [task.strip() for task in args.tasks.split(",") if task.strip()]
    problem = _bad_input(args, tasks)
    if problem:
        sys.stderr.write(problem + "\n")
        return 2
    builtin, why = _probe(args.lm_eval_python)
    if builtin is None:
        print(f"lm-eval is not installed: {why}; {INSTALL_HINT}.")
        return 0
    return _cross_check(args, tasks, builtin)


def _cross_check(args: argparse.Namespace, tasks: list[str], builtin: Path) -> int:
    from paretoprune.errors import InputError
    from paretoprune.evaluators.zeroshot import evaluate_tasks
    from paretoprune.models import load_model

    try:
        loaded = load_model(args.model)
        with tempfile.TemporaryDirectory(prefix="lmeval-crosscheck-") as scratch:
            include = Path(scratch) / "tasks"
            include.mkdir()
            _write_tasks(tasks, args.task_dir, builtin, include)
            started = time.perf_counter()
            ours = evaluate_tasks(
                loaded.model,
                loaded.tokenizer,
                tasks,
                args.task_dir,
                limit=args.limit,
                batch_size=args.batch_size,
                subset="first",
                logliks=True,
            )
            ours_s = time.perf_counter() - started
            logger.info("ours: %.0f s; now lm-eval", ours_s)
            started = time.perf_counter()
            model_dir = _model_folder(loaded, Path(scratch))
            theirs = _run_lm_eval(args.lm_eval_python, model_dir, tasks, include, args)
            theirs_s = time.perf_counter() - started
    except InputError as error:
        sys.stderr.write(f"{error}\n")
        return 2
    rows = _compare(ours["tasks"], theirs, args.tolerance)
    agree = all(row["ok"] for row in rows)
    print(f"model {args.model}, the first {args.limit} examples of each task (both sides)")
    print(_table(rows))
    print(f"ours {ours_s:.0f} s, lm-eval {theirs_s:.0f} s: {'AGREE' if agree else 'DISAGREE'}")
    if args.json:
        summary = {"model": args.model, "limit": args.limit, "rows": rows, "agree": agree}
        print(json.dumps({**summary, "ours_s": round(ours_s), "lm_eval_s": round(theirs_s)}))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
