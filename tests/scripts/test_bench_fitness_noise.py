"""Scoring a finished search's best candidates again on fresh samples of its text."""

from __future__ import annotations

import math
from pathlib import Path

import bench_fitness_noise
import pandas as pd
import pytest
import yaml

from paretoprune.candidate import Candidate
from paretoprune.data import calibration_windows
from paretoprune.errors import InputError
from paretoprune.evaluators.fitness import CandidateEvaluator
from paretoprune.evaluators.stats import collect_stats
from paretoprune.metrics.scores import KNOWN_METRICS
from paretoprune.models import find_layout, load_model
from paretoprune.search.archive import Archive
from paretoprune.search.driver import SearchConfig
from paretoprune.testing import byte_tokenizer, tiny_model

WORDS = "the pruned model keeps most of what the dense one knows when the right weights go first".split()


def _finished_run(tmp_path: Path) -> tuple[Path, dict[int, float]]:
    """A run folder as a search leaves it: config, and an archive scored on the search's sample."""
    model_dir, run_dir, calib = tmp_path / "model", tmp_path / "run", tmp_path / "calib.txt"
    tiny_model("llama", layers=2).save_pretrained(model_dir)
    byte_tokenizer().save_pretrained(model_dir)
    calib.write_text(" ".join(WORDS[(7 * i) % len(WORDS)] for i in range(3000)))
    config = SearchConfig(model=str(model_dir), out=str(run_dir), calib=str(calib), nsamples=2, seqlen=24,
                          stats_nsamples=4, stats_seqlen=32, mode="layerwise", sparsity=0.5)  # fmt: skip
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))

    loaded = load_model(str(model_dir))
    layout = find_layout(loaded.model)
    stats = collect_stats(loaded.model, layout, calibration_windows(loaded.tokenizer, str(calib), 4, 32, 0))
    tokens = calibration_windows(loaded.tokenizer, str(calib), 2, 24, 0)
    evaluator = CandidateEvaluator(loaded.model, layout, stats, tokens, objectives=("kl",),
                                   rank_metric=KNOWN_METRICS["wanda"])  # fmt: skip
    archive = Archive(run_dir, ("kl",))
    recorded = {}
    for level in (0.3, 0.5, 0.7, 0.4):
        candidate = Candidate(KNOWN_METRICS["wanda"], {name: level for name in layout.names})
        kl = evaluator.evaluate(candidate)["kl"]
        recorded[archive.append(generation=0, genome=[level], candidate=candidate.to_dict(), objectives={"kl": kl})] = kl
    archive.append(generation=0, genome=[0.9], status="failed", error="out of memory")
    evaluator.close()
    return run_dir, recorded


def test_a_runs_best_candidates_are_scored_again_and_the_search_sample_reproduces_its_fitness(
    tmp_path: Path,
) -> None:
    run_dir, recorded = _finished_run(tmp_path)
    frame, summary, samples = bench_fitness_noise.check_run(run_dir, top=3, fresh=2, large=(4, 32))

    best_three = sorted(recorded, key=recorded.get)[:3]
    assert frame["eval_id"].tolist() == best_three  # best first; the failed evaluation is left out
    assert [s.name for s in samples] == ["search", "fresh1", "fresh2", "large4x32"]
    assert [s.seed for s in samples] == [0, 1, 2, 3]
    for _, row in frame.iterrows():  # the search's own sample gives back what it recorded
        assert row["kl@search"] == pytest.approx(row["search_kl"], rel=1e-5)
    fresh = frame[["kl@fresh1", "kl@fresh2"]].to_numpy()
    assert (fresh > 0).all() and not (fresh == frame[["kl@search"]].to_numpy()).all()  # other windows
    assert summary["candidates"] == 3 and 1 <= summary["pick_rank"] <= 3
    assert all(-1 <= summary[key] <= 1 for key in ("fresh_rho", "search_rho", "fresh_large_rho"))

    text = bench_fitness_noise.render_section("run", frame, summary, samples)
    assert f"| {best_three[0]} | " in text and "large4x32 = 4x32 (seed 3)" in text


def test_the_summary_tells_samples_that_agree_from_samples_that_do_not() -> None:
    frame = pd.DataFrame({
        "eval_id": [4, 9, 2, 7], "search_kl": [1.00, 1.01, 1.02, 1.04],
        "kl@a": [2.0, 2.1, 2.2, 2.3], "kl@b": [1.3, 1.2, 1.1, 1.0], "kl@large": [0.7, 0.5, 0.6, 0.8],
    })  # fmt: skip
    summary = bench_fitness_noise.summarize(frame, ["kl@a", "kl@b"], "kl@large")
    assert summary["spread"] == pytest.approx(0.04)
    assert summary["fresh_rho"] == pytest.approx(-1.0)  # a and b order the candidates in reverse
    assert summary["search_rho"] == pytest.approx(0.4)
    assert summary["pick_rank"] == 3  # the search's best (0.7) is third of four on the large sample
    agreeing = bench_fitness_noise.summarize(frame.assign(**{"kl@b": frame["kl@a"] + 1}), ["kl@a", "kl@b"], "kl@large")
    assert agreeing["fresh_rho"] == pytest.approx(1.0)
    assert math.isnan(bench_fitness_noise.summarize(frame, ["kl@a"], "kl@large")["fresh_rho"])


def test_a_folder_without_a_search_config_is_named_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no config.yaml in .*--out"):
        bench_fitness_noise.check_run(tmp_path, top=3, fresh=2, large=(4, 32))
