"""The truth statement sets: where they are, how they are read, and one line for every bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from paretoprune.errors import InputError
from paretoprune.truth import TPLO_TOPICS, TRUTH_DIR_ENV, load_statements, truth_dir

CITIES = """statement,label,city,country,correct_country
The city of Krasnodar is in Russia.,1,Krasnodar,Russia,Russia
The city of Krasnodar is in South Africa.,0,Krasnodar,South Africa,Russia
"The city of Paris, France, is in France.",1,Paris,France,France
The city of Lima is in Japan.,0,Lima,Japan,Peru
"""


def write_sets(folder: Path, topics: tuple[str, ...] = TPLO_TOPICS, text: str = CITIES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for topic in topics:
        (folder / f"{topic}.csv").write_text(text, encoding="utf-8")
    return folder


def one_line_error(call: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(InputError) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    message = str(caught.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------------------------
# Where the sets are.


def test_truth_dir_prefers_the_option_then_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(TRUTH_DIR_ENV, str(tmp_path / "from-env"))
    assert truth_dir(tmp_path / "given") == tmp_path / "given"
    assert truth_dir(None) == tmp_path / "from-env"


def test_truth_dir_without_option_or_environment_says_how(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRUTH_DIR_ENV, raising=False)
    message = one_line_error(truth_dir, None)
    assert "--truth-dir" in message and TRUTH_DIR_ENV in message


# ----------------------------------------------------------------------------------------------
# Reading.


def test_load_reads_statements_and_labels_in_file_order(tmp_path: Path) -> None:
    sets = load_statements(write_sets(tmp_path), ["cities", "neg_cities"])
    assert list(sets) == ["cities", "neg_cities"]
    cities = sets["cities"]
    assert cities.statements[2] == "The city of Paris, France, is in France."  # a quoted comma
    assert cities.labels.tolist() == [1, 0, 1, 0] and cities.labels.dtype == np.int64
    assert len(cities) == 4


def test_load_reads_the_shared_truth_sets(shared_data: Path) -> None:
    sets = load_statements(shared_data / "truth")
    assert {topic: len(statement_set) for topic, statement_set in sets.items()} == {
        "cities": 1496, "neg_cities": 1496, "sp_en_trans": 354, "neg_sp_en_trans": 354,
    }
    assert all(int(statement_set.labels.sum()) * 2 == len(statement_set) for statement_set in sets.values())


def test_limit_keeps_both_classes_in_proportion_and_file_order(tmp_path: Path) -> None:
    rows = "".join(f"Statement number {i}.,{int(i % 4 == 0)}\n" for i in range(200))  # a quarter true
    folder = write_sets(tmp_path, ("many",), "statement,label\n" + rows)
    whole = load_statements(folder, ["many"])["many"]
    limited = load_statements(folder, ["many"], limit=40, seed=3)["many"]
    assert len(limited) == 40 and int(limited.labels.sum()) == 10
    positions = [whole.statements.index(text) for text in limited.statements]
    assert positions == sorted(positions)
    assert [whole.labels[p] for p in positions] == limited.labels.tolist()
    again = load_statements(folder, ["many"], limit=40, seed=3)["many"]
    other = load_statements(folder, ["many"], limit=40, seed=4)["many"]
    assert again.statements == limited.statements and other.statements != limited.statements
    assert load_statements(folder, ["many"], limit=500)["many"].statements == whole.statements
    tiny = load_statements(folder, ["many"], limit=2)["many"]
    assert sorted(tiny.labels.tolist()) == [0, 1]


# ----------------------------------------------------------------------------------------------
# Bad input: one line each.


def test_a_missing_folder_says_how_to_pass_one(tmp_path: Path) -> None:
    message = one_line_error(load_statements, tmp_path / "nowhere")
    assert "nowhere" in message and "does not exist" in message and "--truth-dir" in message


def test_missing_files_are_all_named_with_the_folder(tmp_path: Path) -> None:
    folder = write_sets(tmp_path / "partial", ("cities", "sp_en_trans"))
    message = one_line_error(load_statements, folder)
    assert "neg_cities.csv, neg_sp_en_trans.csv" in message
    assert str(folder) in message and "--truth-dir" in message and TRUTH_DIR_ENV in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("statement,truth\nThe sky is blue.,1\n", "has no label column"),
        ("sentence,label\nThe sky is blue.,1\n", "has no statement column"),
        ("statement,label\nThe sky is blue.,1\nGrass is red.,2\n", "line 3: label '2' is not 0"),
        ("statement,label\nThe sky is blue.,yes\n", "line 2: label 'yes'"),
        ("statement,label\nThe sky is blue.,1\n,0\n", "line 3: the statement is empty"),
        ("statement,label\nThe sky is blue.,1\nWater is wet.,1\n", "only true statements"),
        ("statement,label\nThe sky is green.,0\n", "only false statements"),
        ("statement,label\n", "holds no statements"),
        ("", "has no statement or label column"),
    ],
)
def test_bad_files_give_one_line(tmp_path: Path, text: str, expected: str) -> None:
    folder = write_sets(tmp_path, ("cities",), text)
    message = one_line_error(load_statements, folder, ["cities"])
    assert expected in message and "cities.csv" in message


def test_a_file_that_is_not_utf8_gives_one_line(tmp_path: Path) -> None:
    folder = write_sets(tmp_path, ("cities",))
    (folder / "cities.csv").write_bytes(b"statement,label\n\xff\xfe bad,1\n")
    assert "UTF-8" in one_line_error(load_statements, folder, ["cities"])


def test_a_limit_below_two_is_refused(tmp_path: Path) -> None:
    assert "at least 2" in one_line_error(load_statements, write_sets(tmp_path), limit=1)
