"""Validation before export: the picked recipe against the best baseline on held-out windows,
on hand-built archive frames; finding the baselines' rows; the windows the finalists read."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from paretoprune.candidate import Candidate
from paretoprune.cli import main
from paretoprune.data import calibration_windows, disjoint_windows, held_out_windows, random_windows
from paretoprune.errors import InputError
from paretoprune.evaluators.applied import AppliedScorer
from paretoprune.evaluators.fitness import CandidateEvaluator
from paretoprune.models import LoadedModel, find_layout, load_model
from paretoprune.recipe import load_recipe
from paretoprune.search.archive import Archive
from paretoprune.search.baselines import first_population_baselines
from paretoprune.search.config import SearchConfig
from paretoprune.search.driver import rescore
from paretoprune.search.finalists import FINALIST_SEED_OFFSET, applied_inputs
from paretoprune.search.inputs import SearchInputs, prepare
from paretoprune.search.pareto import Objectives
from paretoprune.search.run import Run
from paretoprune.search.validation import choose, judge
from paretoprune.testing import save_tiny_model, tiny_model

F = "512+update"  # the validation fidelity of these frames
KL = Objectives.of(["kl"])
RANGE = Objectives.of(["kl", "sparsity"])


def _frame(rows: list[tuple[int, int, float, str, int | None]], sparsities: list[float] | None = None) -> pd.DataFrame:
    """Archive rows (eval_id, generation, kl, fidelity, source_id), all successful."""
    frame = pd.DataFrame({
        "eval_id": [r[0] for r in rows], "generation": [r[1] for r in rows], "kl": [r[2] for r in rows],
        "fidelity": [r[3] for r in rows], "source_id": pd.array([r[4] for r in rows], dtype="Int64"),
        "status": "ok", "genome": [[0.0, float(r[0])] for r in rows], "candidate": "{}",
    })  # fmt: skip
    if sparsities is not None:
        frame["sparsity"] = sparsities
    return frame


# Two baselines (0, 1) and two searched candidates (2, 3); all four scored again at F. On the
# fitness windows candidate 2 beats both baselines; on the validation windows wanda beats it.
BASELINES = {"wanda": 0, "owl-wanda": 1}
DISAGREE = _frame([
    (0, 0, 0.50, "base", None), (1, 0, 0.48, "base", None), (2, 1, 0.40, "base", None), (3, 1, 0.45, "base", None),
    (4, 1, 0.30, F, 2), (5, 1, 0.33, F, 3), (6, 0, 0.29, F, 0), (7, 0, 0.31, F, 1),
])  # fmt: skip


def test_best_falls_back_to_the_baseline_that_beats_the_recipe_on_validation() -> None:
    choice = choose(DISAGREE, KL.front(DISAGREE), KL, "best:kl", BASELINES)
    assert choice.fell_back and int(choice.row["eval_id"]) == 6  # wanda's validation row
    verdict = choice.verdict
    assert verdict is not None and verdict.outcome == "loses" and verdict.beaten
    assert (verdict.eval_id, verdict.score, verdict.baseline, verdict.baseline_score) == (4, 0.30, "wanda", 0.29)
    assert choice.line() == ("validation (512+update): recipe kl 0.3 vs best baseline wanda 0.29: the recipe does "
                             "not beat the baseline; exporting the baseline (use --force-pick to keep the searched "
                             "one)")  # fmt: skip
    forced = choose(DISAGREE, KL.front(DISAGREE), KL, "best:kl", BASELINES, force=True)
    assert not forced.fell_back and int(forced.row["eval_id"]) == 4
    assert forced.line(forced=True).endswith("the recipe does not beat the baseline; keeping it (--force-pick)")


def test_a_recipe_that_beats_the_baseline_is_kept_and_a_tie_goes_to_the_baseline() -> None:
    better = DISAGREE.assign(kl=DISAGREE["kl"].where(DISAGREE["eval_id"] != 4, 0.25))
    choice = choose(better, KL.front(better), KL, "best:kl", BASELINES)
    assert not choice.fell_back and int(choice.row["eval_id"]) == 4
    assert choice.line() == "validation (512+update): recipe kl 0.25 vs best baseline wanda 0.29: the recipe beats the baseline"
    tied = DISAGREE.assign(kl=DISAGREE["kl"].where(DISAGREE["eval_id"] != 4, 0.29))
    assert choose(tied, KL.front(tied), KL, "best:kl", BASELINES).fell_back


def test_without_validation_rows_of_the_baselines_the_pick_is_unchanged() -> None:
    fitness_only = DISAGREE[DISAGREE["fidelity"] == "base"]
    for baselines in (BASELINES, {}):
        choice = choose(fitness_only, KL.front(fitness_only), KL, "best:kl", baselines)
        assert (int(choice.row["eval_id"]), choice.verdict, choice.line()) == (2, None, None)
    # Finalists scored again, but no baseline among them (a run of an older release).
    old = DISAGREE[~DISAGREE["eval_id"].isin([6, 7])]
    assert choose(old, KL.front(old), KL, "best:kl", BASELINES).verdict is None


def test_other_picks_keep_their_member_and_say_how_it_compares() -> None:
    front = KL.front(DISAGREE)  # one objective: wanda's validation row alone
    choice = choose(DISAGREE, front, KL, "index:0", BASELINES)
    assert int(choice.row["eval_id"]) == 6 and not choice.fell_back
    assert choice.verdict is not None and choice.verdict.outcome == "is_baseline"
    assert choice.line() == "validation (512+update): the pick is the best baseline, wanda (kl 0.29)"
    # A member never scored on the validation windows is named as such, and kept.
    verdict = judge(DISAGREE, KL, DISAGREE.loc[3], BASELINES)
    assert verdict is not None and verdict.outcome == "unscored"
    assert verdict.line() == "validation (512+update): the pick (evaluation 3) was not scored on the validation windows"


def test_a_range_search_compares_with_baselines_at_a_comparable_sparsity() -> None:
    levels = {"wanda@0.40": 0, "wanda@0.55": 1, "wanda@0.70": 2}
    frame = _frame([
        (0, 0, 0.20, "base", None), (1, 0, 0.50, "base", None), (2, 0, 1.20, "base", None),
        (3, 1, 0.19, "base", None), (4, 1, 0.70, "base", None),
        (5, 0, 0.10, F, 0), (6, 0, 0.30, F, 1), (7, 0, 0.90, F, 2), (8, 1, 0.12, F, 3), (9, 1, 0.45, F, 4),
    ], sparsities=[0.40, 0.55, 0.70, 0.41, 0.62, 0.40, 0.55, 0.70, 0.41, 0.62])  # fmt: skip
    # best:kl is the least sparse searched recipe (0.41): it meets wanda@0.40 alone, and loses.
    choice = choose(frame, RANGE.front(frame), RANGE, "best:kl", levels)
    assert choice.verdict is not None and choice.verdict.baseline == "wanda@0.40" and choice.fell_back
    assert int(choice.row["eval_id"]) == 5
    # At 0.62 no baseline lies within the slack: no verdict to act on, the pick stays.
    far = judge(frame, RANGE, frame.loc[9], levels)
    assert far is not None and far.outcome == "no_baseline"
    assert far.line() == "validation (512+update): recipe kl 0.45; no baseline was scored within 0.02 of its sparsity 0.62"
    # Without the sparsity objective a range search matches by the target gene (the genome's last).
    no_objective = frame.drop(columns="sparsity").assign(genome=[[0.0, s] for s in frame["sparsity"]])
    assert judge(no_objective, KL, no_objective.loc[8], levels, ranged=True).baseline == "wanda@0.40"


def test_baselines_are_found_among_the_first_generation_by_their_genome() -> None:
    frame = pd.DataFrame({
        "eval_id": [0, 1, 2, 3], "generation": [0, 0, 1, 0], "fidelity": ["base", "base", "base", F],
        "genome": [[0.1, 0.2], [0.0, 1e-9], [0.5, 0.5], [0.5, 0.5]],
    })  # fmt: skip
    genomes = {"wanda": np.zeros(2), "owl-wanda": np.array([0.1, 0.2]), "ria": np.array([0.5, 0.5])}
    # ria's genome is only in a later generation and in a validation row: not a first-population row.
    assert first_population_baselines(frame, genomes) == {"wanda": 1, "owl-wanda": 0}


def test_the_finalists_windows_share_no_token_with_the_fitness_or_calibration_windows() -> None:
    config = SearchConfig(model="tiny", out="run", nsamples=8, seqlen=64, stats_nsamples=6, stats_seqlen=96, seed=3)
    inputs = applied_inputs(config, windows=40)
    assert inputs.held_out == ((8, 64, 3), (6, 96, 3)) and inputs.seed == 3 + FINALIST_SEED_OFFSET
    positions = torch.arange(3000)  # a text whose tokens are their own positions
    taken = torch.cat([random_windows(positions, n, length, seed).flatten() for n, length, seed in inputs.held_out])
    held = disjoint_windows(positions, inputs.windows, inputs.seqlen, inputs.seed, inputs.held_out)
    assert held.shape == (40, 64) and not set(held.flatten().tolist()) & set(taken.tolist())
    # The plain draw with the same seed would have read text the fitness windows saw.
    plain = random_windows(positions, inputs.windows, inputs.seqlen, inputs.seed)
    assert set(plain.flatten().tolist()) & set(taken.tolist())
    with pytest.raises(InputError, match="no 64-token stretch"):
        disjoint_windows(torch.arange(300), 4, 64, 1, [(8, 64, 3)])


# ------------------------------------------------------------------------------------------------
# A real case: a tiny model, whose candidate beats uniform Wanda on the fitness windows and loses
# to it on the validation windows; export then falls back.


def _fitness(inputs: SearchInputs, model: torch.nn.Module, candidates: list[Candidate]) -> list[float]:
    """Each candidate's kl as the search's evaluators score it, on the fitness windows."""
    ev = inputs.evaluator
    scorer = CandidateEvaluator(model, find_layout(model), ev.stats, ev.tokens, objectives=("kl",),
                                rank_metric=ev.rank_metric)  # fmt: skip
    try:
        return [scorer.evaluate(candidate)["kl"] for candidate in candidates]
    finally:
        scorer.close()


def _validation(config: SearchConfig, loaded: LoadedModel, candidates: list[Candidate]) -> list[float]:
    """Each candidate's kl as the finalist stage scores it: with the update, on validation windows."""
    inputs = applied_inputs(config, config.finalist_tokens[0] // config.seqlen)
    tokenizer = loaded.tokenizer
    calibration = calibration_windows(tokenizer, config.calib, inputs.calib_nsamples, inputs.calib_seqlen, config.seed)
    tokens = held_out_windows(tokenizer, config.calib, inputs.windows, inputs.seqlen, inputs.seed, inputs.held_out)
    scorer = AppliedScorer(loaded.model, find_layout(loaded.model), calibration, tokens, objectives=("kl",))
    try:
        return [scorer.evaluate(replace(candidate, solvers=("update",)))["kl"] for candidate in candidates]
    finally:
        scorer.close()


def _disagreeing(config: SearchConfig, inputs: SearchInputs, loaded: LoadedModel) -> tuple[np.ndarray, list[float]]:
    """The first of some seeded genomes that beats uniform Wanda on the fitness windows and loses
    to it on the validation windows, with [wanda, candidate] validation kl."""
    space = inputs.space
    wanda = space.decode(space.baselines()["wanda"])
    lower, upper = space.bounds
    genomes = space.repair(np.random.default_rng(0).uniform(lower, upper, (24, space.n_var)))
    fitness = _fitness(inputs, loaded.model, [wanda, *map(space.decode, genomes)])
    for genome, kl in zip(genomes, fitness[1:]):
        if kl < fitness[0]:
            validation = _validation(config, loaded, [wanda, space.decode(genome)])
            if validation[1] > validation[0]:
                return genome, validation
    raise AssertionError("no seeded candidate ranks differently on the two sets of windows")


@pytest.mark.ray
def test_a_recipe_that_wins_on_the_fitness_windows_but_loses_on_validation_falls_back_to_wanda(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # fmt: skip
    model_dir = save_tiny_model(tmp_path / "model", tiny_model("llama", layers=2))
    config = SearchConfig(model=str(model_dir), out=str(tmp_path / "run"), calib="builtin", nsamples=2, seqlen=32,
                          sparsity=0.5, objectives=("kl",), workers=1, finalists=(1,), finalist_tokens=(256,))
    inputs = prepare(config)
    loaded = load_model(str(model_dir), dtype="float32")
    genome, validation = _disagreeing(config, inputs, loaded)

    # A run whose first generation holds the baselines and the candidate, scored by the fitness.
    run = Run.create(config.with_objectives())
    archive = Archive(run.folder, ["kl"])
    genomes = {**inputs.space.baselines(), "searched": genome}
    candidates = {name: inputs.space.decode(g) for name, g in genomes.items()}
    for name, kl in zip(genomes, _fitness(inputs, loaded.model, list(candidates.values()))):
        archive.append(generation=0, genome=genomes[name], candidate=candidates[name].to_dict(), objectives={"kl": kl})
    archive.compact()
    result = rescore(run.folder, (1,), (256,), progress=False)

    # The finalist is the candidate (best on the fitness windows); the baselines were scored beside
    # it, on the same windows as the in-process scorer's.
    frame = Archive.load(run.folder).frame()
    rows = frame[frame["fidelity"] == "256+update"].set_index("source_id")
    ids = Run.open(run.folder).baseline_ids()
    assert result.finalists[0].finalists == [2] and sorted(result.finalists[0].baselines) == sorted(ids.values())
    assert [rows.loc[ids["wanda"], "kl"], rows.loc[2, "kl"]] == pytest.approx(validation, rel=1e-4)
    assert result.validation is not None and result.validation.outcome == "loses"
    assert result.validation.line(advice="export --pick best:kl").endswith(
        "the recipe does not beat the baseline; export --pick best:kl exports the baseline (--force-pick keeps the "
        "searched one)")  # fmt: skip

    # export best:kl falls back to uniform Wanda, saying so in one line; --force-pick keeps the candidate.
    out = tmp_path / "recipe.yaml"
    with pytest.raises(SystemExit) as exited:
        main(["export", str(run.folder), "--pick", "best:kl", "--out", str(out), "--json"])
    printed = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(printed[-1])
    assert exited.value.code == 0 and printed[0].startswith("validation (256+update): recipe kl ")
    assert printed[0].endswith("the recipe does not beat the baseline; exporting the baseline "
                               "(use --force-pick to keep the searched one)")  # fmt: skip
    assert summary["fell_back"] and summary["eval_id"] == int(rows.loc[ids["wanda"], "eval_id"])
    assert summary["validation"] | {"eval_id": None} == {
        "fidelity": "256+update", "objective": "kl", "outcome": "loses", "eval_id": None, "beaten": True,
        "score": pytest.approx(validation[1], rel=1e-4), "baseline": "wanda", "sparsity": None,
        "baseline_eval_id": summary["eval_id"], "baseline_score": pytest.approx(validation[0], rel=1e-4)}
    assert load_recipe(out).to_candidate().sparsities == candidates["wanda"].sparsities
    with pytest.raises(SystemExit):
        main(["export", str(run.folder), "--pick", "best:kl", "--out", str(out), "--force-pick", "--json"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not summary["fell_back"] and summary["eval_id"] == int(rows.loc[2, "eval_id"])
    assert load_recipe(out).to_candidate().sparsities == pytest.approx(candidates["searched"].sparsities)
