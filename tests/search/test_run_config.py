"""A run folder's config.yaml: damaged or foreign files give one line naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from paretoprune.cli import main
from paretoprune.errors import InputError
from paretoprune.search.run import CONFIG_FILE, read_run_config

GOOD = "model: tiny\nout: run\nobjectives:\n- kl\n- sparsity\n"
# Line 4 holds a second colon where a value should be: the parser stops there.
BROKEN = "model: tiny\nout: run\nobjectives: [kl, sparsity]\nmode: layerwise: joint\npop: 8\n"


def _config(run_dir: Path, text: str) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CONFIG_FILE
    path.write_text(text)
    return path


def test_a_good_config_reads_as_written(tmp_path: Path) -> None:
    _config(tmp_path, GOOD)
    assert read_run_config(tmp_path) == {"model": "tiny", "out": "run", "objectives": ["kl", "sparsity"]}


def test_invalid_yaml_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = _config(tmp_path, "model: tiny\nout: run\npop: 8\ngenerations: [3\nseed: 0\n")
    with pytest.raises(InputError) as caught:
        read_run_config(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{path} line ") and "is not valid YAML" in message
    assert "fix or restore the file" in message


def test_the_line_is_counted_from_one(tmp_path: Path) -> None:
    _config(tmp_path, BROKEN)
    with pytest.raises(InputError, match=r"config.yaml line 4 is not valid YAML \(mapping values"):
        read_run_config(tmp_path)


@pytest.mark.parametrize("text, kind", [("- model\n- out\n", "list"), ("just words\n", "str"), ("", "NoneType")])
def test_a_config_that_is_not_a_mapping_is_refused(tmp_path: Path, text: str, kind: str) -> None:
    _config(tmp_path, text)
    with pytest.raises(InputError, match=f"holds {kind}, not search settings"):
        read_run_config(tmp_path)


def test_a_folder_without_config_holds_no_search(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="holds no search"):
        read_run_config(tmp_path)


@pytest.mark.parametrize(
    "command", [["search", "--resume", "RUN"], ["front", "RUN"], ["export", "RUN", "--out", "RUN/r.yaml"]]
)
def test_every_command_reading_a_run_exits_2_on_a_broken_config(tmp_path: Path, capsys, command: list[str]) -> None:
    _config(tmp_path, BROKEN)
    with pytest.raises(SystemExit) as exited:
        main([part.replace("RUN", str(tmp_path)) for part in command])
    assert exited.value.code == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1, errors
    assert f"{tmp_path / 'config.yaml'} line 4 is not valid YAML" in errors[0]
    assert (tmp_path / CONFIG_FILE).read_text() == BROKEN  # a resume rewrites nothing first
