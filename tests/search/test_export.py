"""Picking one front member for export: every --pick that names nothing in the front is refused."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from paretoprune.cli import main
from paretoprune.errors import InputError
from paretoprune.search.archive import Archive
from paretoprune.search.run import CONFIG_FILE
from paretoprune.search.export import SPARSITY_PICK_SLACK, pick

OBJECTIVES = ["kl", "sparsity"]
# A front as front_of returns it: sorted by the objectives, index 0..n-1.
FRONT = pd.DataFrame({"eval_id": [4, 9, 2], "kl": [0.1, 0.3, 0.8], "sparsity": [0.42, 0.55, 0.68]})


@pytest.mark.parametrize("how, expected", [("sparsity:0.5", 1), ("sparsity:0.42", 0), ("sparsity:0.69", 2),
                                           ("sparsity:0.40", 0), ("index:2", 2), ("best:kl", 0)])  # fmt: skip
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
