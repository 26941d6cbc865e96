"""The scaling page's GPU section, from a report the GPU check really wrote (its CPU smoke run)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.pages.gpu import GPU_CHECK, GPU_TARGETS, NOT_MEASURED, gpu_section, read_gpu_check
from benchmarks.pages.scaling import render_scaling
from benchmarks.studies import RESULTS
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("gpu-check")
    script = REPO_ROOT / "scripts" / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script), "--device", "cpu", "--shape", "tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "gpu_check.json").read_text())


def as_gpu_run(report: dict[str, Any], layerwise: float, metric: float, extra_fraction: float) -> dict[str, Any]:
    """The smoke report as a 7B run on a GPU would read, with the longest token set's ratios and
    peaks set: what the page must judge against the targets."""
    report = copy.deepcopy(report)
    report["device"] |= {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3", "cuda": "13.0", "memory_bytes": 80 * 2**30}
    report["shape"] |= {"asked": "7b", "used": "7b", "name": "Llama-2-7B"}
    weights = report["model"]["weight_bytes"]
    for measured in report["measurements"].values():
        measured |= {"device_build_peak_bytes": weights // 4, "device_evaluate_peak_bytes": weights // 8}
    longest = [name for name in report["measurements"] if name.startswith("evaluation_")][-1]
    report["measurements"][longest] |= {
        "layerwise_ratio": layerwise, "metric_ratio": metric,
        "device_evaluate_peak_bytes": int(extra_fraction * weights),
    }  # fmt: skip
    return report


def test_without_a_report_the_section_says_how_to_make_one() -> None:
    section = gpu_section(None)
    assert section == NOT_MEASURED
    assert "python scripts/gpu_check.py" in section and "python -m benchmarks pages" in section


def test_a_cpu_smoke_run_is_quoted_as_one_and_not_judged(smoke_report: dict[str, Any]) -> None:
    section = gpu_section(smoke_report)
    assert section.startswith("**A CPU smoke run, not a GPU measurement**")
    assert "(met)" not in section and "(missed)" not in section
    for name, measured in smoke_report["measurements"].items():
        if name.startswith("evaluation_"):
            label = name.removeprefix("evaluation_").replace("x", " x ")
            row = next(line for line in section.splitlines() if line.startswith(f"| {label} |"))
            assert f"{measured['layerwise_ratio']:.2f}x" in row and f"{measured['metric_ratio']:.2f}x" in row
            estimate = measured["estimated_extra_bytes"] / smoke_report["model"]["weight_bytes"]
            assert row.endswith(f"| {estimate:.2f}x |")
    assert smoke_report["command"] in section


def test_a_gpu_run_at_the_7b_shape_is_judged_against_the_targets(smoke_report: dict[str, Any]) -> None:
    layerwise_ok = GPU_TARGETS["layerwise"] - 0.05
    metric_over = GPU_TARGETS["metric"] + 0.1
    section = gpu_section(as_gpu_run(smoke_report, layerwise_ok, metric_over, extra_fraction=1.2))
    assert "smoke run" not in section and "NVIDIA H100 80GB HBM3" in section
    longest = [line for line in section.splitlines() if line.startswith("| ")][-1]
    assert f"{layerwise_ok:.2f}x (met)" in longest
    assert f"{metric_over:.2f}x (missed)" in longest
    assert "1.20x (met)" in longest  # the evaluate peak, above the build peak of a quarter
    first = [line for line in section.splitlines() if line.startswith("| ")][1]
    assert "(met)" not in first and "0.25x" in first  # only the longest token set is judged


def test_a_fallen_back_run_says_so_and_is_not_judged(smoke_report: dict[str, Any]) -> None:
    report = as_gpu_run(smoke_report, 1.0, 1.0, 1.0)
    report["shape"] |= {"used": "1b", "name": "TinyLlama-1.1B", "fallback": "the 7B shape needs about 60 GiB"}
    section = gpu_section(report)
    assert "fell back to TinyLlama-1.1B's shape" in section and "60 GiB" in section
    assert "(met)" not in section and "(missed)" not in section


def test_the_scaling_page_reads_the_report_beside_its_folder(tmp_path: Path, smoke_report: dict[str, Any]) -> None:
    folder = tmp_path / "scaling"
    folder.mkdir()
    shutil.copy(RESULTS / "scaling" / "scaling.csv", folder)
    render_scaling(folder)
    assert NOT_MEASURED in (folder / "README.md").read_text()
    (tmp_path / GPU_CHECK).parent.mkdir()
    (tmp_path / GPU_CHECK).write_text(json.dumps(smoke_report))
    render_scaling(folder)
    page = (folder / "README.md").read_text()
    assert NOT_MEASURED not in page and "**A CPU smoke run, not a GPU measurement**" in page


def test_a_file_of_another_format_is_refused_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "gpu_check.json"
    path.write_text(json.dumps({"format": "something/v0"}))
    with pytest.raises(ValueError, match="gpu_check.json is not a paretoprune.gpu_check/v1 report"):
        read_gpu_check(path)
