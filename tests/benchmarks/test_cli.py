"""The command line: options checked in one line, the reproduce command, the plan listing."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cli import main
from benchmarks.plan import planned


def test_unknown_filters_and_bad_sizes_are_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["searched", "--pruners", "wanda", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: --pruners wanda is not known; choose among recipe, regional, sparsegpt")
    assert main(["searched", "--calibrations", "both", "--out", str(tmp_path)]) == 2
    assert "--calibrations both is not known" in capsys.readouterr().err
    assert main(["baselines", "--eval-seqlen", "1"]) == 2
    assert capsys.readouterr().err == "error: --eval-seqlen must be at least 2\n"


def test_a_study_names_the_command_that_finishes_it_and_the_plan_lists_its_rows(
    tmp_path: Path, model_dir: Path, data_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    argv = ["baselines", "--only", "dense", "--model", str(model_dir), "--data-dir", str(data_dir), "--out", str(out),
            "--calib-nsamples", "2", "--calib-seqlen", "16", "--eval-windows", "2", "--eval-seqlen", "16"]  # fmt: skip
    assert main(argv) == 0
    command = (f"python -m benchmarks baselines --calib-nsamples 2 --calib-seqlen 16 --eval-windows 2 --eval-seqlen 16 "
               f"--model {model_dir}")  # fmt: skip
    assert f"**Reproduce:** `{command}`" in (out / "README.md").read_text()
    capsys.readouterr()
    assert main(["plan", "baselines", "--out", str(out)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0] == "measured  dense" and listing[1] == "missing   magnitude 50% none"
    assert listing[-1].startswith(f"1 of {len(planned('baselines'))} rows measured in ")
