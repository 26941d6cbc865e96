"""A search's run folder: what resuming must match, and what the search cost."""

from __future__ import annotations

from pathlib import Path

import bench_plan
import bench_runs
import pandas as pd
import pytest
import yaml

from paretoprune.errors import InputError

BUDGET = bench_plan.Budget(pop=16, generations=15, nsamples=8, seqlen=256, workers=1, seed=0)


def _settings(run_dir: Path) -> dict:
    spec = bench_plan.spec_named("metric-unstructured-0.70")
    assert spec is not None
    return spec.settings("smollm2-135m", BUDGET, run_dir, run_dir.parent / "c4.jsonl", stats=(32, 512))


def test_resuming_refuses_a_folder_made_with_other_settings(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stored = _settings(run_dir)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(stored))
    bench_runs.check_run(run_dir, {**stored, "workers": 4})  # workers may change between sessions
    with pytest.raises(InputError, match="seed=0.*choose another --runs"):
        bench_runs.check_run(run_dir, {**stored, "seed": 1})
    with pytest.raises(InputError, match="calibrated on"):
        bench_runs.check_run(run_dir, {**stored, "calib": str(tmp_path / "wikitext.txt")})
    with pytest.raises(InputError, match="already ran 15 generations"):
        bench_runs.check_run(run_dir, {**stored, "generations": 10})
    bench_runs.check_run(run_dir, {**stored, "generations": 20})  # more generations: the search goes on


def test_the_run_log_adds_sessions_and_the_cost_counts_failures(tmp_path: Path) -> None:
    log = bench_runs.RunLog.read(tmp_path)
    assert log == bench_runs.RunLog()
    log.wall_seconds, log.sessions = 90.0, 2
    log.write(tmp_path)
    frame = pd.DataFrame({"status": ["ok", "failed", "ok"], "seconds": [30.0, 6.0, 24.0]})
    cost = bench_runs.search_cost(tmp_path, frame)
    assert cost.row_fields() == {"candidates": "3", "failed": "1", "search_minutes": "1.5", "fitness_minutes": "1.0"}
