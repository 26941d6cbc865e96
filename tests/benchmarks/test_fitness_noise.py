"""Scoring a finished search's best candidates again on other samples of its text."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from paretoprune.candidate import Candidate
from paretoprune.data import calibration_windows
from paretoprune.errors import InputError
from paretoprune.evaluators.fitness import CandidateEvaluator
from paretoprune.evaluators.stats import collect_stats
from paretoprune.metrics.scores import SCORING_RULES
from paretoprune.models import find_layout, load_model
from paretoprune.search.archive import Archive
from paretoprune.search.driver import SearchConfig

from benchmarks.fitness_noise import NoiseScore, rescore_run, summarize
from benchmarks.pages.evaluator import noise_page

from tests.benchmarks.conftest import words


def _finished_run(tmp_path: Path, model_dir: Path) -> tuple[Path, dict[int, float]]:
    """A run folder as a search leaves it: config, and an archive scored on the search's sample."""
    run_dir, calib = tmp_path / "run", tmp_path / "calib.txt"
    calib.write_text(words(3000))
    config = SearchConfig(model=str(model_dir), out=str(run_dir), calib=str(calib), nsamples=2, seqlen=24,
                          stats_nsamples=4, stats_seqlen=32, mode="layerwise", sparsity=0.5)  # fmt: skip
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    loaded = load_model(str(model_dir))
    layout = find_layout(loaded.model)
    stats = collect_stats(loaded.model, layout, calibration_windows(loaded.tokenizer, str(calib), 4, 32, 0))
    tokens = calibration_windows(loaded.tokenizer, str(calib), 2, 24, 0)
    evaluator = CandidateEvaluator(loaded.model, layout, stats, tokens, objectives=("kl",),
                                   rank_metric=SCORING_RULES["wanda"])  # fmt: skip
    archive = Archive(run_dir, ("kl",))
    recorded = {}
    for level in (0.3, 0.5, 0.7, 0.4):
        candidate = Candidate(SCORING_RULES["wanda"], {name: level for name in layout.names})
        kl = evaluator.evaluate(candidate)["kl"]
        recorded[archive.append(generation=0, genome=[level], candidate=candidate.to_dict(), objectives={"kl": kl})] = kl
    archive.append(generation=0, genome=[0.9], status="failed", error="out of memory")
    evaluator.close()
    return run_dir, recorded


def test_a_runs_best_candidates_are_scored_again_and_the_search_sample_reproduces_its_fitness(
    tmp_path: Path, model_dir: Path
) -> None:
    run_dir, recorded = _finished_run(tmp_path, model_dir)
    scores = rescore_run(run_dir, top=3, fresh=2, large=(4, 32))

    best_three = sorted(recorded, key=recorded.get)[:3]
    assert list(dict.fromkeys(s.eval_id for s in scores)) == best_three  # best first; the failed one left out
    samples = list(dict.fromkeys((s.sample, s.role, s.seed) for s in scores))
    assert samples == [("search", "search", 0), ("fresh1", "fresh", 1), ("fresh2", "fresh", 2),
                       ("large4x32", "large", 3)]  # fmt: skip
    for score in scores:
        if score.sample == "search":  # the search's own sample gives back what it recorded
            assert score.kl == pytest.approx(score.search_kl, rel=1e-5)
    fresh = [s for s in scores if s.role == "fresh"]
    own = {s.eval_id: s.kl for s in scores if s.sample == "search"}
    assert all(s.kl > 0 for s in fresh) and any(s.kl != own[s.eval_id] for s in fresh)  # other windows
    summary = summarize(scores)
    assert summary.candidates == 3 and 1 <= summary.pick_rank <= 3
    assert all(-1 <= value <= 1 for value in (summary.fresh_rho, summary.search_rho, summary.fresh_large_rho))

    page = noise_page(scores)
    assert f"| {best_three[0]} | " in page and "large4x32 = 4x32 (seed 3)" in page


def _scores(kl: dict[str, list[float]]) -> list[NoiseScore]:
    roles = {"a": "fresh", "b": "fresh", "large": "large"}
    ids, search = [4, 9, 2, 7], [1.00, 1.01, 1.02, 1.04]
    return [NoiseScore("run", eval_id, search_kl, name, roles[name], 8, 256, 0, values[index])
            for name, values in kl.items() for index, (eval_id, search_kl) in enumerate(zip(ids, search))]  # fmt: skip


def test_the_summary_tells_samples_that_agree_from_samples_that_do_not() -> None:
    kl = {"a": [2.0, 2.1, 2.2, 2.3], "b": [1.3, 1.2, 1.1, 1.0], "large": [0.7, 0.5, 0.6, 0.8]}
    summary = summarize(_scores(kl))
    assert summary.spread == pytest.approx(0.04)
    assert summary.fresh_rho == pytest.approx(-1.0)  # a and b order the candidates in reverse
    assert summary.search_rho == pytest.approx(0.4)
    assert summary.pick_rank == 3  # the search's best (0.7) is third of four on the large sample
    assert summary.mean_kl["large"] == pytest.approx(0.65)
    agreeing = summarize(_scores({**kl, "b": [value + 1 for value in kl["a"]]}))
    assert agreeing.fresh_rho == pytest.approx(1.0)
    alone = summarize(_scores({"a": kl["a"], "large": kl["large"]}))
    assert math.isnan(alone.fresh_rho) and alone.fresh_pairs == 0


def test_a_folder_without_a_search_config_is_named_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no config.yaml in .*--out"):
        rescore_run(tmp_path, top=3, fresh=2, large=(4, 32))
