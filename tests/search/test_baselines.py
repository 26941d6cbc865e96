"""The baselines of a search: their first-population rows, the uniform curves beside the front,
kept in the run folder so that nothing is scored twice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from paretoprune.candidate import Candidate
from paretoprune.models import find_layout
from paretoprune.search.archive import Archive
from paretoprune.search.baselines import CURVE_LEVELS, baseline_table, curve_points
from paretoprune.search.config import SearchConfig
from paretoprune.search.driver import run_search
from paretoprune.search.pareto import Objectives
from paretoprune.search.run import FRONT_PLOT, Run
from paretoprune.search.space import SearchSpace, SpaceConfig
from paretoprune.testing import save_tiny_model, tiny_model

LEVELS = [0.4, 0.475, 0.55, 0.625, 0.7]
OBJECTIVES = Objectives.of(["kl", "sparsity"])


LAYOUT = find_layout(tiny_model("llama", layers=2))


def _uniform_owl(level: float) -> dict[str, float]:
    """An OWL allocation without statistics: the table only hands it to the scorer."""
    return {name: level for name in LAYOUT.names}


def _first_population(space: SearchSpace) -> pd.DataFrame:
    """Generation-0 rows of the space's baselines, then a random genome, scored by level."""
    genomes = [*space.baselines().values(), np.full(space.n_var, 0.3)]
    return pd.DataFrame({
        "eval_id": range(len(genomes)), "generation": 0, "fidelity": "base", "status": "ok",
        "genome": [list(g) for g in genomes], "kl": [g[-1] ** 2 for g in genomes],
        "sparsity": [g[-1] for g in genomes],
    })  # fmt: skip


def test_curve_points_reuse_the_first_population_and_a_previous_table_scores_nothing_again() -> None:
    space = SearchSpace(LAYOUT, SpaceConfig(sparsity=None, sparsity_range=(0.4, 0.7)))
    frame = _first_population(space)
    asked: list[list[Candidate]] = []

    def score(candidates: list[Candidate]) -> list[dict[str, float]]:
        asked.append(list(candidates))
        return [{"kl": 1.0 + i, "sparsity": 0.5} for i in range(len(candidates))]

    table = baseline_table(frame, space, OBJECTIVES, _uniform_owl, score=score)
    uniform = table[table["curve"] == "uniform wanda"].sort_values("level")
    assert uniform["level"].tolist() == pytest.approx(LEVELS) and len(uniform) == CURVE_LEVELS
    # The three levels the first population starts from are its rows; the two between are scored.
    assert uniform["eval_id"].tolist()[::2] == [0, 1, 2] and uniform["eval_id"].isna().tolist()[1::2] == [True] * 2
    assert uniform["kl"].tolist()[::2] == pytest.approx([0.4**2, 0.55**2, 0.7**2])
    assert len(asked) == 1 and len(asked[0]) == 2 + CURVE_LEVELS  # two uniform points, five OWL points
    assert sorted(table["name"]) == sorted({name for name, *_ in curve_points(space, _uniform_owl)})

    # Read back from the run folder's file, the table is enough: nothing is scored a second time.
    again = baseline_table(frame, space, OBJECTIVES, _uniform_owl, previous=table, score=score)
    assert len(asked) == 1 and again.equals(table)
    # Without a scorer (an interrupted search) the missing points are left out.
    assert baseline_table(frame, space, OBJECTIVES, _uniform_owl)["curve"].notna().sum() == 3


@pytest.mark.ray
def test_a_range_search_keeps_uniform_curves_beside_its_front_and_plots_them(tmp_path: Path) -> None:
    model_dir = save_tiny_model(tmp_path / "model", tiny_model("llama", layers=2))
    config = SearchConfig(model=str(model_dir), out=str(tmp_path / "run"), calib="builtin", nsamples=2, seqlen=32,
                          sparsity_range=(0.4, 0.7), pop=6, generations=1, workers=1, seed=1)  # fmt: skip
    result = run_search(config, progress=False)
    run = Run.open(tmp_path / "run")
    assert (tmp_path / "run" / FRONT_PLOT).stat().st_size > 10_000

    table = run.baselines()
    frame = Archive.load(run.folder).frame().set_index("eval_id")
    for curve in ("uniform wanda", "owl + wanda"):
        points = table[table["curve"] == curve].sort_values("level")
        assert points["level"].tolist() == pytest.approx(LEVELS) and points["kl"].notna().all()
        # Each point is its level: uniform exactly, OWL as the weighted mean of its allocation.
        assert points["sparsity"].tolist() == pytest.approx(LEVELS, abs=0.01)
    # uniform wanda at 0.40, 0.55 and 0.70 is the first population's: its values are those rows'.
    reused = table.dropna(subset=["eval_id"]).set_index("eval_id")
    assert sorted(reused["name"]) == ["wanda@0.40", "wanda@0.55", "wanda@0.70"]
    assert reused["kl"].tolist() == frame.loc[reused.index, "kl"].tolist()
    assert all(json.loads(c)["metric"]["name"] == "wanda" for c in frame.loc[reused.index, "candidate"])

    # The end of the search sets the front against uniform Wanda at the middle and top levels.
    uniform = table[table["curve"] == "uniform wanda"].set_index("level")
    for point in result.uniform:
        assert point["level"] in (pytest.approx(0.55), pytest.approx(0.7))
        assert point["uniform"] == pytest.approx(uniform.loc[point["level"], "kl"])
        assert point["kl"] == pytest.approx(frame.loc[point["eval_id"], "kl"])
