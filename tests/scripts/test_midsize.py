"""results/midsize/midsize.py with the tiny shape: a real search (Ray) and apply, their memory watched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "results" / "midsize" / "midsize.py"
ENV = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", TOKENIZERS_PARALLELISM="false")

pytestmark = pytest.mark.ray


def test_the_tiny_run_writes_a_page_whose_actor_peak_is_within_the_printed_estimate(tmp_path: Path) -> None:
    out = tmp_path / "page"
    done = subprocess.run([sys.executable, str(SCRIPT), "--shape", "tiny", "--out", str(out),
                           "--models", str(tmp_path / "models")], env=ENV, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    verdicts = json.loads(done.stdout.strip().splitlines()[-1])
    assert verdicts == {"within_estimate": True, "driver_within_estimate": True, "apply_within_estimate": True}
    report = json.loads((out / "midsize.json").read_text())
    search, applied = report["measured"]["search"], report["measured"]["apply"]
    assert search["evaluations"] == 8
    assert search["printed_estimate"].startswith("memory check: each evaluator needs about")
    # The actor's peak seen from outside (sampled) cannot exceed its own record of it by much.
    assert 0 < search["evaluator_peak_sampled"] <= 1.05 * search["evaluator_peak_reported"]
    assert search["evaluator_peak_reported"] <= search["estimate"]["total"]
    assert search["driver_peak"] > 0 and applied["peak"] > 0
    assert search["printed_driver_estimate"].startswith("memory check: the driver needs about")
    assert 0 < search["driver_peak"] <= search["driver_estimate"]["total"]
    assert 0 < applied["peak"] <= applied["estimate"]["total"]  # apply's own estimate, from its --json
    page = (out / "README.md").read_text()
    assert "| search: the evaluator actor (its own peak) |" in page
    assert search["printed_estimate"] in page and search["printed_driver_estimate"] in page
    # Commands show folders as variables, never this machine's paths.
    assert "$MODEL" in page and "$RUN" in page and str(tmp_path) not in page
    # The page is rendered from the JSON alone, so it can be written again without measuring.
    (out / "README.md").unlink()
    subprocess.run([sys.executable, str(SCRIPT), "--render", "--out", str(out)], env=ENV, check=True, timeout=120)
    assert (out / "README.md").read_text() == page
