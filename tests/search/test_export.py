"""What a search leaves: the front's table, and picking one member (a pick naming nothing is refused)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from paretoprune.candidate import Candidate
from paretoprune.cli import main
from paretoprune.errors import InputError
from paretoprune.metrics.scores import SCORING_RULES, MetricSpec
from paretoprune.models import find_layout
from paretoprune.search.archive import Archive
from paretoprune.search.export import SPARSITY_PICK_SLACK, front_table, pick
from paretoprune.search.pareto import Objectives
from paretoprune.search.run import CONFIG_FILE
from paretoprune.testing import tiny_model

OBJECTIVES = ["kl", "sparsity"]
# A front as Run.front returns it: sorted by the objectives, index 0..n-1.
FRONT = pd.DataFrame({"eval_id": [4, 9, 2], "kl": [0.1, 0.3, 0.8], "sparsity": [0.42, 0.55, 0.68]})


@pytest.mark.parametrize("how, expected", [("sparsity:0.5", 1), ("sparsity:0.42", 0), ("sparsity:0.69", 2),
                                           ("sparsity:0.40", 0), ("index:2", 2), ("best:kl", 0),
                                           ("best:sparsity", 2)])  # fmt: skip
def test_picks_inside_the_front_choose_the_nearest_member(how: str, expected: int) -> None:
    assert pick(FRONT, OBJECTIVES, how) == expected


@pytest.mark.parametrize(
    "how, fragments",
    [
        ("sparsity:1.5", ["outside the front's sparsities 0.42 to 0.68", f"within {SPARSITY_PICK_SLACK}"]),
        ("sparsity:0.39", ["outside the front's sparsities"]),
        ("sparsity:-0.1", ["outside the front's sparsities"]),
        ("sparsity:nan", ["finite"]),
        ("index:3", ["3 members", "index:0 to index:2"]),
        ("index:-1", ["3 members"]),
        ("best:ppl", ["unknown objective", "kl, sparsity"]),
        ("middle", ["not understood"]),
    ],
)
def test_picks_that_name_nothing_in_the_front_are_refused(how: str, fragments: list[str]) -> None:
    with pytest.raises(InputError) as caught:
        pick(FRONT, OBJECTIVES, how)
    assert all(fragment in str(caught.value) for fragment in fragments), caught.value


def test_a_sparsity_pick_takes_the_best_of_members_equally_near_after_rounding() -> None:
    # Three members asked for 0.7 reach it to within rounding; the nearest is not the best.
    front = pd.DataFrame({"eval_id": [418, 362, 355, 224], "kl": [2.348, 2.458, 2.506, 2.751],
                          "sparsity": [0.699951, 0.699989, 0.700033, 0.701700]})  # fmt: skip
    assert pick(front, OBJECTIVES, "sparsity:0.7") == 0
    # Beyond the tie, nearness decides: 0.7017 is nearest to 0.7016 and 0.0017 from the others.
    assert pick(front, OBJECTIVES, "sparsity:0.7016") == 3
    # With sparsity first, the nearest member whatever its kl.
    assert pick(front, ["sparsity", "kl"], "sparsity:0.7") == 1


def test_a_sparsity_pick_needs_the_sparsity_objective() -> None:
    with pytest.raises(InputError, match="needs a run with the sparsity objective"):
        pick(FRONT[["eval_id", "kl"]], ["kl"], "sparsity:0.5")


def test_an_empty_front_is_refused() -> None:
    with pytest.raises(InputError, match="the front is empty.*resume"):
        pick(FRONT.iloc[:0], OBJECTIVES, "knee")


def _run(run_dir: Path) -> None:
    """A run folder with a config and an archive (no recipes: picking fails before them)."""
    archive = Archive(run_dir, OBJECTIVES)
    for sparsity in FRONT["sparsity"]:  # kl grows with sparsity: every row is on the front
        archive.append(generation=0, genome=[sparsity], objectives={"kl": sparsity, "sparsity": sparsity})
    settings = {"model": "tiny", "out": str(run_dir), "objectives": OBJECTIVES}
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(settings))


def test_export_of_a_sparsity_outside_the_front_exits_2_and_writes_nothing(tmp_path: Path, capsys) -> None:
    _run(tmp_path)
    out = tmp_path / "recipe.yaml"
    with pytest.raises(SystemExit) as exited:
        main(["export", str(tmp_path), "--pick", "sparsity:1.5", "--out", str(out)])
    assert exited.value.code == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and "--pick sparsity:1.5 is outside the front's sparsities 0.42 to 0.68" in errors[0]
    assert not out.exists()


def test_the_front_table_has_short_cells_naming_the_rule_and_the_recipe(tmp_path: Path) -> None:
    layout = find_layout(tiny_model("llama", layers=2))
    searched = MetricSpec(name="meta", weight_power=1.37, weight_transform="sqrt", row_coef=0.41, col_coef=0.23,
                          abs_coef=0.36, abs_scale="rowsum", act_power=0.71, act_transform="log", act_norm="column")
    candidates = [Candidate(metric=SCORING_RULES["wanda"], sparsities={name: 0.5 for name in layout.names}),
                  Candidate(metric=searched, sparsities={name: 0.3 for name in layout.names})]  # fmt: skip
    front = pd.DataFrame({
        "eval_id": [3, 7], "generation": [0, 1], "genome": [[0.1] * 40, [0.2] * 40],
        "candidate": [json.dumps(candidate.to_dict()) for candidate in candidates], "kl": [0.1, 0.2],
        "worker": ["worker-0:1"] * 2, "node_id": ["n"] * 2, "seconds": [1.0, 1.0], "status": ["ok"] * 2,
        "error": [None, None],
    })  # fmt: skip
    recipes = [tmp_path / "000-kl0.1.yaml", tmp_path / "001-kl0.2.yaml"]
    table = front_table(front, Objectives.of(["kl"]), layout, recipes)
    assert list(table.columns) == ["eval_id", "generation", "kl", "fidelity", "achieved_sparsity", "rule", "recipe"]
    assert table["rule"][0] == "wanda" and table["rule"][1].startswith("meta: ")
    assert table["recipe"].tolist() == ["000-kl0.1.yaml", "001-kl0.2.yaml"]
    # Achieved after rounding to whole weights per row: 0.5 exactly, 0.3 within one weight of a row.
    widths = {linear.in_features for linear in layout.linears}
    assert table["achieved_sparsity"][0] == 0.5
    assert abs(table["achieved_sparsity"][1] - 0.3) <= 0.5 / min(widths)
    cells = pd.read_csv(io.StringIO(table.to_csv(index=False))).astype(str).to_numpy().ravel()
    assert max(len(cell) for cell in cells) <= 200
    # With sparsity an objective, its own column is the achieved sparsity: no second one.
    with_sparsity = front.assign(sparsity=[0.5, 0.3])
    assert "achieved_sparsity" not in front_table(with_sparsity, Objectives.of(["kl", "sparsity"]), layout, recipes)
