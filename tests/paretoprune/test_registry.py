"""The registry behind every named building block."""

from __future__ import annotations

import pytest

from paretoprune.errors import InputError
from paretoprune.evaluators.fitness import OBJECTIVES
from paretoprune.evaluators.zeroshot_tasks import TASKS
from paretoprune.metrics.scores import SCORING_RULES, MetricSpec
from paretoprune.registry import Registry


def test_register_look_up_and_list_in_registration_order() -> None:
    rules: Registry[int] = Registry("thing", option="--thing")
    rules.register("Beta", 2, summary="the second letter")

    @rules.register("alpha", summary="the first letter")
    def alpha() -> int:
        return 1

    assert rules.names() == ("beta", "alpha")
    assert rules["BETA"] == 2 and rules.lookup(" alpha ") is alpha
    assert "beta" in rules and "gamma" not in rules and 3 not in rules
    assert rules.get("gamma") is None and len(rules) == 2
    assert rules.choices() == "beta | alpha"
    assert rules.entry("beta").summary == "the second letter"
    assert rules.markdown_table().splitlines()[2] == "| `beta` | the second letter |"


def test_unknown_name_is_one_line_naming_the_option_and_the_choices() -> None:
    rules: Registry[int] = Registry("thing", option="--thing")
    rules.register("one", 1, summary="1")
    with pytest.raises(InputError) as raised:
        rules.lookup("two")
    assert str(raised.value) == "unknown thing 'two' for --thing: choose one of one"
    with pytest.raises(KeyError):
        rules["two"]


def test_names_are_unique_single_words() -> None:
    rules: Registry[int] = Registry("thing")
    rules.register("one", 1, summary="1")
    with pytest.raises(ValueError, match="registered twice"):
        rules.register("ONE", 2, summary="again")
    for bad in ("", "two words", "a,b", "kl:0.5"):
        with pytest.raises(ValueError, match="cannot be a registered name"):
            rules.register(bad, 3, summary="bad")


def test_the_building_block_registries_hold_the_known_methods() -> None:
    assert SCORING_RULES.names()[:3] == ("magnitude", "wanda", "ria")
    assert all(isinstance(spec, MetricSpec) and spec.name == name for name, spec in SCORING_RULES.items())
    assert {"kl", "sparsity"} <= set(OBJECTIVES) and OBJECTIVES["sparsity"].direction == "maximize"
    assert "boolq" in TASKS and TASKS.lookup("boolq").name == "boolq"


def test_the_readme_tables_are_the_registries() -> None:
    from pathlib import Path

    from paretoprune.catalog import README_END, README_START, building_blocks, markdown

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start, end = readme.index(README_START), readme.index(README_END) + len(README_END)
    assert readme[start:end] == markdown(), "regenerate with: paretoprune blocks --markdown"
    for registry in building_blocks().values():
        assert all(f"| `{name}` |" in markdown() for name in registry)


def test_blocks_command_lists_every_kind(capsys) -> None:
    import json

    from paretoprune.catalog import building_blocks
    from paretoprune.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["blocks", "--json"])
    assert exited.value.code in (0, None)
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert listed == {title: list(registry.names()) for title, registry in building_blocks().items()}
