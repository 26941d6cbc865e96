"""The GPU measurement on the scaling page: what ``scripts/gpu_check.py`` wrote, against the targets.

The check writes its own page (``results/gpu/README.md``) with every timing. The scaling page
quotes the part that answers its question, what a candidate costs at a real size on one GPU,
and sets it beside the targets. Until the check has run on a GPU, the section says how to run it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.pages.markdown import MISSING, table

__all__ = ["GPU_CHECK", "GPU_TARGETS", "gpu_section", "read_gpu_check"]

# Where the check writes its report, relative to the results folder.
GPU_CHECK = Path("gpu") / "gpu_check.json"
FORMAT = "paretoprune.gpu_check/v1"

# The targets, at Llama-2-7B's shape in bf16 over the longest token set (16 x 2048).
GPU_TARGETS = {"layerwise": 1.10, "metric": 1.3, "memory": 1.5}
TARGET_SHAPE = "7b"

HEADER = ("fitness tokens", "dense forward", "layerwise candidate", "metric candidate",
          "evaluator's extra memory", "its estimate")  # fmt: skip

NOT_MEASURED = """Not measured on a GPU yet. On a machine with one, from a checkout (torch, transformers,
numpy and psutil are all it needs; no network, no Ray):

```bash
python scripts/gpu_check.py                 # -> results/gpu/README.md and gpu_check.json
python -m benchmarks pages                  # fills this section from results/gpu/gpu_check.json
```"""


def read_gpu_check(path: Path) -> dict[str, Any] | None:
    """The check's report at ``path``, or None where none was written."""
    if not path.is_file():
        return None
    report = json.loads(path.read_text(encoding="utf-8"))
    if report.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} report; write it again with scripts/gpu_check.py")
    return report


def gpu_section(report: Mapping[str, Any] | None) -> str:
    """The scaling page's GPU section: the measurement against the targets, or how to make it."""
    if report is None:
        return NOT_MEASURED
    check = GpuReport(report)
    lines = [*check.caveats(), check.where(), "", check.timing_table(), "", *check.notes()]
    return "\n".join(lines).rstrip("\n")


@dataclass(frozen=True)
class Evaluation:
    """One token set's evaluation step, as the check recorded it."""

    label: str  # "16 x 2048"
    measured: Mapping[str, Any]
    weight_bytes: int

    @property
    def extra_bytes(self) -> int | None:
        """The GPU memory the evaluator took beyond the weights at its highest: while it built its
        targets or while it scored a candidate. None on a CPU, where the check reads no peaks."""
        peaks = [self.measured.get(key) for key in ("device_build_peak_bytes", "device_evaluate_peak_bytes")]
        known = [peak for peak in peaks if peak is not None]
        return max(known) if known else None

    def ratio(self, kind: str) -> float | None:
        if kind == "memory":
            extra = self.extra_bytes
            return None if extra is None else extra / self.weight_bytes
        return float(self.measured[f"{kind}_ratio"])


class GpuReport:
    """A gpu_check report read for the scaling page."""

    def __init__(self, report: Mapping[str, Any]) -> None:
        self.report = report
        self.device, self.shape = report["device"], report["shape"]
        weights = int(report["model"]["weight_bytes"])
        self.evaluations = [
            Evaluation(name.removeprefix("evaluation_").replace("x", " x "), measured, weights)
            for name, measured in report["measurements"].items()
            if name.startswith("evaluation_")
        ]  # fmt: skip

    @property
    def on_gpu(self) -> bool:
        return self.device["kind"] == "cuda"

    @property
    def judged(self) -> bool:
        """Whether the targets apply: a GPU run at the shape they are set for."""
        return self.on_gpu and self.shape["used"] == TARGET_SHAPE

    def caveats(self) -> list[str]:
        lines = []
        if not self.on_gpu:
            lines += ["**A CPU smoke run, not a GPU measurement**: the targets are not judged on it.", ""]
        if self.shape["fallback"]:
            lines += [f"**The check fell back to {self.shape['name']}'s shape**: {self.shape['fallback']}. "
                      "The targets are set for the 7B shape and are not judged here.", ""]  # fmt: skip
        return lines

    def where(self) -> str:
        device, model = self.device, self.report["model"]
        return (f"Measured by `{self.report['command']}` on {device['name']} (torch {device['torch']}) on "
                f"{self.report['when'][:10]}: random weights of {self.shape['name']}'s shape, "
                f"{_count(model['parameters'])} parameters in {self.report['dtype']}, "
                f"{_gib(model['weight_bytes'])} of weights. Every step: [../gpu/README.md](../gpu/README.md).")  # fmt: skip

    def timing_table(self) -> str:
        rows = [self._row(evaluation, last=evaluation is self.evaluations[-1]) for evaluation in self.evaluations]
        return table(HEADER, rows, "lrrrrr", compact=True)

    def _row(self, evaluation: Evaluation, last: bool) -> list[str]:
        """Times as ratios to the dense forward over the same tokens; the longest token set's
        judged against the targets."""
        measured = evaluation.measured
        cells = [evaluation.label, f"{float(measured['forward_s']):.3g} s"]
        for kind in ("layerwise", "metric", "memory"):
            value = evaluation.ratio(kind)
            cell = MISSING if value is None else f"{value:.2f}x"
            if last and self.judged and value is not None:
                cell += f" ({_verdict(value, GPU_TARGETS[kind])})"
            cells.append(cell)
        estimate = measured.get("estimated_extra_bytes")
        cells.append(MISSING if estimate is None else f"{estimate / evaluation.weight_bytes:.2f}x")
        return cells

    def notes(self) -> list[str]:
        lines = ["Ratios are to the dense forward over the same tokens, memory to the weights."]
        if self.judged:
            targets = GPU_TARGETS
            lines.append(f"Targets, over the longest token set: layerwise at most {targets['layerwise']:.2f}x, "
                         f"metric at most {targets['metric']:.2f}x, extra memory at most {targets['memory']:.2f}x.")  # fmt: skip
        search = self.report["measurements"].get("search")
        if search and search.get("evaluations"):
            per_evaluation = float(search["per_evaluation_s"])
            line = (f"The search driven in-process, with {search['algorithm']}, took {per_evaluation:.3g} s an "
                    f"evaluation over {self.evaluations[0].label} tokens")  # fmt: skip
            if self.on_gpu:  # one evaluator per GPU; Ray's dispatch costs milliseconds a candidate
                line += f": {8 * 60 / per_evaluation:,.0f} candidates a minute on 8 such GPUs, start-up aside"
            lines.append(line + ".")
        left_out = {**self.report["skipped"], **self.report["errors"]}
        if left_out:
            lines.append("Not measured: " + "; ".join(f"{name} ({why})" for name, why in left_out.items()) + ".")
        return [f"- {line}" for line in lines]


def _verdict(value: float, target: float) -> str:
    return "met" if value <= target else "missed"


def _count(number: int) -> str:
    for scale, suffix in ((1e9, " B"), (1e6, " M"), (1e3, " k")):
        if number >= scale:
            return f"{number / scale:.2f}{suffix}"
    return str(number)


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"
