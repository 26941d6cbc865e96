"""A real search and apply on a model eight times SmolLM2-135M's size, on the CPU: time and memory.

The model has TinyLlama-1.1B's shape (hidden 2048, 22 blocks, intermediate 5632, 32 query and 4
key/value heads) with SmolLM2's vocabulary and tokenizer, so that the real C4 and WikiText-2
texts tokenize as they do for SmolLM2. Its weights are random (seed 0) and saved once in bf16,
as checkpoints ship: nothing is downloaded, and speed and memory do not depend on what the
weights learned. Perplexities of random weights mean nothing, and none is reported as a result.

The script runs the two commands a user runs, each as its own process, and samples the resident
memory of every process they start (the driver, the Ray evaluator actor, Ray's own services)
four times a second:

1. ``paretoprune search``: layerwise, 50 %, 2 generations of 4 candidates on one actor;
2. ``paretoprune apply`` of the searched recipe, with WikiText-2 perplexity on a few windows.

It sets each process's peak against the weights in the dtype they run in (fp32 on a CPU), and
the actor's peak against the estimate the search printed before it started its actor
(``memory check: each evaluator needs ...``, the run folder's memory.json)::

    python results/midsize/midsize.py --data ../shared/data    # -> results/midsize/README.md, midsize.json

``--render`` writes the page again from midsize.json. ``--shape tiny`` runs the same steps on a tiny model with the built-in text in seconds (what the
tests run). The page and the JSON are written whole or not at all.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
import torch

from paretoprune.evaluators.memory import format_bytes
from paretoprune.io import atomic_write_text
from paretoprune.models import cache_dir
from paretoprune.search.run import MEMORY_FILE

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
CALIBRATION = "c4/c4-en-train-shard00000-first1000.jsonl"
EVALUATION = "wikitext2/wiki.test.raw"
SAMPLE_EVERY_S = 0.25
FORMAT = "paretoprune.midsize/v1"


@dataclass(frozen=True)
class Shape:
    """The model, and how much each command runs on it."""

    key: str
    name: str  # whose shape it is
    hidden: int
    blocks: int
    intermediate: int
    heads: int
    kv_heads: int
    nsamples: int  # calibration and fitness windows
    seqlen: int  # tokens per window
    pop: int
    generations: int
    eval_windows: int

    def describe(self) -> str:
        vocabulary = "a byte vocabulary" if self.key == "tiny" else "SmolLM2's vocabulary and tokenizer"
        return (f"{self.name}'s shape (hidden {self.hidden}, {self.blocks} blocks, intermediate "
                f"{self.intermediate}, {self.heads} query and {self.kv_heads} key/value heads) with {vocabulary}")  # fmt: skip


SHAPES = {
    "1b": Shape("1b", "TinyLlama-1.1B", 2048, 22, 5632, 32, 4, nsamples=4, seqlen=128, pop=4, generations=2,
                eval_windows=4),  # fmt: skip
    "tiny": Shape("tiny", "a tiny Llama", 64, 2, 128, 4, 2, nsamples=4, seqlen=32, pop=4, generations=2,
                  eval_windows=2),  # fmt: skip
}


# ------------------------------------------------------------------------------------------------
# The checkpoint


def build_checkpoint(shape: Shape, folder: Path) -> Path:
    """A save_pretrained folder of ``shape`` with random bf16 weights, made once and reused."""
    if (folder / "config.json").exists() and any(folder.glob("*.safetensors")):
        return folder
    if shape.key == "tiny":
        from paretoprune.testing import save_tiny_model, tiny_model

        return save_tiny_model(folder, tiny_model("llama", layers=shape.blocks, hidden=shape.hidden))
    from transformers import AutoModelForCausalLM, LlamaConfig

    from paretoprune.models import load_model

    tokenizer = load_model("smollm2-135m").tokenizer  # SmolLM2's vocabulary, so real text tokenizes
    config = LlamaConfig(
        hidden_size=shape.hidden, num_hidden_layers=shape.blocks, intermediate_size=shape.intermediate,
        num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads, vocab_size=len(tokenizer),
        max_position_embeddings=2048, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    partial = folder.with_name(folder.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(folder)  # whole or not at all: a later run reuses only a finished folder
    return folder


# ------------------------------------------------------------------------------------------------
# Running a command while watching its memory


@dataclass
class Watched:
    """What one command did: its output, its wall time, and each process's peak resident memory."""

    command: list[str]
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    peaks: dict[int, int] = field(default_factory=dict)  # pid -> peak RSS in bytes
    together: int = 0  # the largest sum over all processes at one sample: what the machine held at once
    root: int = 0  # the command's own process

    def peak_of(self, pids: set[int]) -> int:
        return max((size for pid, size in self.peaks.items() if pid in pids), default=0)


def run_watched(command: list[str], env: dict[str, str]) -> Watched:
    """Run ``command``, sampling the resident memory of it and every process it starts."""
    watched = Watched(command)
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched.root = process.pid
    done = threading.Event()
    sampler = threading.Thread(target=_sample, args=(process.pid, watched, done), daemon=True)
    sampler.start()
    watched.stdout, watched.stderr = process.communicate()
    done.set()
    sampler.join()
    watched.returncode, watched.seconds = process.returncode, time.perf_counter() - start
    return watched


def _sample(root: int, watched: Watched, done: threading.Event) -> None:
    try:
        parent = psutil.Process(root)
    except psutil.NoSuchProcess:
        return
    while not done.is_set():
        total = 0
        try:
            family = [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for process in family:
            try:
                rss = process.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            watched.peaks[process.pid] = max(watched.peaks.get(process.pid, 0), rss)
            total += rss
        watched.together = max(watched.together, total)
        done.wait(SAMPLE_EVERY_S)


# ------------------------------------------------------------------------------------------------
# The two commands


def _env() -> dict[str, str]:
    return dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", TOKENIZERS_PARALLELISM="false")


def search_command(shape: Shape, model: Path, calib: str, run_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "paretoprune", "search", "--model", str(model), "--calib", calib,
        "--nsamples", str(shape.nsamples), "--seqlen", str(shape.seqlen), "--mode", "layerwise",
        "--sparsity", "0.5", "--pop", str(shape.pop), "--generations", str(shape.generations),
        "--workers", "1", "--seed", "0", "--out", str(run_dir), "--json",
    ]  # fmt: skip


def apply_command(shape: Shape, model: Path, recipe: Path, calib: str, evaluation: str) -> list[str]:
    return [
        sys.executable, "-m", "paretoprune", "apply", str(recipe), "--model", str(model), "--calib", calib,
        "--nsamples", str(shape.nsamples), "--seqlen", str(shape.seqlen), "--eval", evaluation,
        "--max-windows", str(shape.eval_windows), "--json", "--quiet",
    ]  # fmt: skip


def _last_json(watched: Watched) -> dict[str, Any]:
    if watched.returncode != 0:
        raise SystemExit(f"{shlex.join(watched.command[2:5])} failed ({watched.returncode}):\n{watched.stderr[-3000:]}")
    return json.loads(watched.stdout.strip().splitlines()[-1])


def _printed_estimate(stderr: str, who: str = "each evaluator") -> str:
    """The line the search printed before its actor started, for ``who`` ("the driver")."""
    return next((line.strip() for line in stderr.splitlines() if line.startswith(f"memory check: {who}")), "")


def measure(shape: Shape, model: Path, calib: str, evaluation: str, scratch: Path,
            places: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    """Run the search and the apply, and gather what the page reports; ``places`` names the
    folders the page shows as variables ($MODEL, $DATA), never as this machine's paths."""
    from paretoprune.evaluators.placement import count_parameters
    from paretoprune.search.archive import Archive

    parameters = count_parameters(str(model)) or 0
    weights = parameters * 4  # fp32: what --dtype auto runs in on a CPU
    run_dir = scratch / "search"
    places = {str(run_dir): "$RUN", str(model): "$MODEL", **places}
    searched = run_watched(search_command(shape, model, calib, run_dir), _env())
    summary = _last_json(searched)
    memory = json.loads((run_dir / MEMORY_FILE).read_text())
    frame = Archive.load(run_dir).frame()
    recipe = Path(summary["recipes"][0])
    applied = run_watched(apply_command(shape, model, recipe, calib, evaluation), _env())
    result = _last_json(applied)
    estimate = memory["estimate"]
    actors = {int(worker.rpartition(":")[2]) for worker in frame["worker"].dropna()}  # "worker-0:<pid>"
    driver = {searched.root}
    services = set(searched.peaks) - actors - driver
    actor_sampled, actor_reported = searched.peak_of(actors), max(memory["peaks"], default=0)
    return {
        "parameters": parameters,
        "weights_bytes": weights,
        "search": {
            "command": _shown(searched.command, places), "seconds": round(searched.seconds, 1),
            "evaluations": summary["evaluations"], "candidate_seconds_median": round(float(frame["seconds"].median()), 2),
            "printed_estimate": _printed_estimate(searched.stderr), "estimate": estimate,
            "driver_peak": searched.peak_of(driver), "evaluator_peak_sampled": actor_sampled,
            "evaluator_peak_reported": actor_reported, "ray_services_peak": searched.peak_of(services),
            "all_processes_peak": searched.together,
            "within_estimate": max(actor_sampled, actor_reported) <= estimate["total"],
            "printed_driver_estimate": _printed_estimate(searched.stderr, "the driver"),
            "driver_estimate": memory["driver"]["estimate"],
            "driver_within_estimate": searched.peak_of(driver) <= memory["driver"]["estimate"]["total"],
        },
        "apply": {
            "command": _shown(applied.command, places), "seconds": round(applied.seconds, 1),
            "peak": applied.peak_of({applied.root}), "sparsity": result.get("sparsity"),
            "estimate": result["memory"]["estimate"], "reported_peak": result["memory"]["peak"],
            "within_estimate": applied.peak_of({applied.root}) <= result["memory"]["estimate"]["total"],
        },
    }  # fmt: skip


def _shown(command: list[str], places: dict[str, str]) -> str:
    """A command as a reader would type it, ``paretoprune ...``, with folders as variables."""
    text = shlex.join(["paretoprune", *command[3:]])
    for path, name in sorted(places.items(), key=lambda item: -len(item[0])):
        text = text.replace(path, name)
    return text


# ------------------------------------------------------------------------------------------------
# The page


def readme(report: dict[str, Any]) -> str:
    found, search, applied = report["measured"], report["measured"]["search"], report["measured"]["apply"]
    weights = found["weights_bytes"]
    estimate = search["estimate"]

    def against(size: int) -> str:
        return f"{format_bytes(size)} = {size / weights:.2f}x"

    verdict = "within" if search["within_estimate"] else "**above**"
    lines = [
        "# A search and an apply on a 1B-parameter model, on the CPU (issue #23, part 4)",
        "",
        f"Written by `python results/midsize/midsize.py` on {report['date']} ({report['machine']}). Do not edit by",
        "hand: run it again.",
        "",
        f"- **Model:** {report['shape']} ({found['parameters']:,} parameters, "
        f"{found['parameters'] / 134_515_008:.1f}x SmolLM2-135M), random weights saved in bf16, run in fp32 "
        f"(`--dtype auto` on a CPU): {format_bytes(weights)} of weights.",
        "- **Commands** (`$MODEL` is the checkpoint folder the script writes, `$DATA` the data folder, "
        "`$RUN` the search's run folder):",
        f"  - search: `{search['command']}`",
        f"  - apply: `{applied['command']}`",
        "",
        "| what | seconds | peak resident memory | against the weights |",
        "|---|---:|---:|---:|",
        f"| search: driver (model, statistics, NSGA-III) | {search['seconds']:.0f} | {format_bytes(search['driver_peak'])} "
        f"| {search['driver_peak'] / weights:.2f}x |",
        f"| search: the evaluator actor (sampled) | | {format_bytes(search['evaluator_peak_sampled'])} | "
        f"{search['evaluator_peak_sampled'] / weights:.2f}x |",
        f"| search: the evaluator actor (its own peak) | | {format_bytes(search['evaluator_peak_reported'])} | "
        f"{search['evaluator_peak_reported'] / weights:.2f}x |",
        f"| search: Ray's services | | {format_bytes(search['ray_services_peak'])} | |",
        f"| search: all processes at once | | {format_bytes(search['all_processes_peak'])} | "
        f"{search['all_processes_peak'] / weights:.2f}x |",
        f"| apply (one process) | {applied['seconds']:.0f} | {format_bytes(applied['peak'])} | "
        f"{applied['peak'] / weights:.2f}x |",
        "",
        f"The search evaluated {search['evaluations']} candidates, a median of "
        f"{search['candidate_seconds_median']:.1f} s each inside the actor.",
        "",
        "Before it started its actor, the search printed:",
        "",
        f"    {search['printed_estimate']}",
        "",
        f"The actor's peak is {verdict} that estimate: {against(max(search['evaluator_peak_sampled'], search['evaluator_peak_reported']))} "
        f"the weights, against an estimated {against(estimate['total'])}.",
        "",
        *_driver_lines(search, against),
        *_apply_lines(applied, against),
        "How to read it:",
        "",
        "- The actor holds the fp32 weights once (candidates are masks applied through",
        "  parametrizations), the rank cache (2 bytes a prunable weight), the dense targets and one",
        "  candidate's working memory; the estimate adds them to the runtime of an idle actor.",
        f"- The driver's peak comes while it loads the model: the bf16 files "
        f"({format_bytes(estimate['loading'])}) stay mapped while each tensor is converted to fp32, "
        "beside the converted weights; then it holds the weights and the statistics. `apply` is one",
        "  such process, with its pruning on top.",
        "- Seconds are indicative: the machine is shared (other jobs ran beside this one), and the",
        "  memory figures do not depend on that.",
        "",
    ]  # fmt: skip
    return "\n".join(lines + report.get("notes", [])) + "\n"


def _driver_lines(search: dict[str, Any], against: Any) -> list[str]:
    """The driver's printed estimate against its peak (runs from before the driver had one: none)."""
    if "driver_estimate" not in search:
        return []
    verdict = "within" if search["driver_within_estimate"] else "**above**"
    return [
        "and for itself:",
        "",
        f"    {search['printed_driver_estimate']}",
        "",
        f"The driver's peak is {verdict} it: {against(search['driver_peak'])} the weights, against an estimated "
        f"{against(search['driver_estimate']['total'])}.",
        "",
    ]


def _apply_lines(applied: dict[str, Any], against: Any) -> list[str]:
    """The estimate ``apply`` printed before pruning against its peak (runs from before it had one: none)."""
    if "estimate" not in applied:
        return []
    verdict = "within" if applied["within_estimate"] else "**above**"
    estimate = applied["estimate"]
    return [
        f"`apply` estimated {format_bytes(estimate['total'])} before pruning (weights "
        f"{format_bytes(estimate['weights'])}, working {format_bytes(estimate['working'])}, runtime "
        f"{format_bytes(estimate['runtime'])}; while loading, {format_bytes(estimate['loading'])} of files). "
        f"Its peak is {verdict} it: {against(applied['peak'])} the weights, against an estimated "
        f"{against(estimate['total'])}.",
        "",
    ]


# ------------------------------------------------------------------------------------------------
# Entry point


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data", help="the data folder")
    parser.add_argument("--shape", choices=list(SHAPES), default="1b")
    parser.add_argument("--out", type=Path, default=HERE, help="where README.md and midsize.json go")
    parser.add_argument("--models", type=Path, default=None, help="where the checkpoint is kept (default: the cache)")
    parser.add_argument("--render", action="store_true", help="write README.md again from midsize.json; measure nothing")
    args = parser.parse_args(argv)
    if args.render:
        atomic_write_text(args.out / "README.md", readme(json.loads((args.out / "midsize.json").read_text())))
        return 0
    shape = SHAPES[args.shape]
    if shape.key == "tiny":
        calib = evaluation = "builtin"
    else:
        calib, evaluation = str(args.data / CALIBRATION), str(args.data / EVALUATION)
        for path in (calib, evaluation):
            if not Path(path).is_file():
                raise SystemExit(f"{path} is not a file: pass --data, the folder holding c4/ and wikitext2/")
    models = args.models or cache_dir() / "models"
    model = build_checkpoint(shape, models / f"midsize-{shape.key}")
    with tempfile.TemporaryDirectory(prefix="paretoprune-midsize-") as scratch:
        measured = measure(shape, model, calib, evaluation, Path(scratch), {str(args.data): "$DATA"})
    report = {
        "format": FORMAT, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {psutil.cpu_count()} cores, {format_bytes(psutil.virtual_memory().total)} RAM",
        "shape": shape.describe(), "measured": measured,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "midsize.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(args.out / "README.md", readme(report))
    search = measured["search"]
    verdicts = {"within_estimate": search["within_estimate"], "driver_within_estimate": search["driver_within_estimate"],
                "apply_within_estimate": measured["apply"]["within_estimate"]}  # fmt: skip
    sys.stdout.write(json.dumps(verdicts) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
