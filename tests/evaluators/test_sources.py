"""The tokens of objective@source: the search's, and the finalists' that the search never read."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from paretoprune.data import calibration_windows
from paretoprune.evaluators.sources import SourceDraw, fitness_sources, held_out_sources
from paretoprune.testing import byte_tokenizer

DRAW = SourceDraw(nsamples=4, seqlen=32, seed=3)


def _rows(windows: torch.Tensor) -> set[tuple[int, ...]]:
    return {tuple(row.tolist()) for row in windows}


def _arc_dir(folder: Path, questions: int) -> Path:
    """ARC-Easy in its real JSONL format, ``questions`` distinct questions."""
    (folder / "arc").mkdir(parents=True)
    records = [{"id": f"q{i}", "question": {"stem": f"Question number {i}?", "choices": [
        {"text": f"answer {i}", "label": "A"}, {"text": "other", "label": "B"}]}, "answerKey": "A"}
        for i in range(questions)]  # fmt: skip
    (folder / "arc" / "ARC-Easy-Test.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    return folder


def test_a_text_sources_finalist_windows_are_new_windows_of_the_same_text() -> None:
    tokenizer = byte_tokenizer()
    searched = fitness_sources(tokenizer, ["builtin"], DRAW)["builtin"]
    assert torch.equal(searched.input_ids, calibration_windows(tokenizer, "builtin", *DRAW.windows))
    held = held_out_sources(tokenizer, ["builtin"], DRAW, count=6, seed=DRAW.seed + 1)["builtin"]
    assert held.input_ids.shape == (6, DRAW.seqlen)
    assert not _rows(held.input_ids) & _rows(searched.input_ids)  # the search read none of them
    again = held_out_sources(tokenizer, ["builtin"], DRAW, count=6, seed=DRAW.seed + 1)["builtin"]
    assert torch.equal(held.input_ids, again.input_ids)  # every actor draws the same


def test_a_tasks_finalist_examples_follow_those_the_search_read(tmp_path: Path) -> None:
    tokenizer = byte_tokenizer()
    draw = SourceDraw(nsamples=3, seqlen=48, seed=0, task_dir=str(_arc_dir(tmp_path, 20)), task_calib_fraction=0.5)
    searched = fitness_sources(tokenizer, ["arc_easy"], draw)["arc_easy"]
    held = held_out_sources(tokenizer, ["arc_easy"], draw, count=4, seed=1)["arc_easy"]
    assert searched.input_ids.shape[0] == 3 and held.input_ids.shape[0] == 4
    assert not _rows(held.input_ids) & _rows(searched.input_ids)  # other questions than the search's


def test_a_task_read_whole_by_the_search_is_scored_on_its_examples_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tokenizer = byte_tokenizer()
    draw = SourceDraw(nsamples=50, seqlen=48, seed=0, task_dir=str(_arc_dir(tmp_path, 8)), task_calib_fraction=0.5)
    searched = fitness_sources(tokenizer, ["arc_easy"], draw)["arc_easy"]
    with caplog.at_level(logging.WARNING):
        held = held_out_sources(tokenizer, ["arc_easy"], draw, count=4, seed=1)["arc_easy"]
    assert torch.equal(held.input_ids, searched.input_ids)
    assert "raise --task-calib-fraction" in caplog.text


def test_the_calibration_text_is_avoided_however_its_path_is_spelled(tmp_path: Path, monkeypatch) -> None:
    tokenizer = byte_tokenizer()
    text = tmp_path / "domain.txt"
    text.write_text(" ".join(f"word{i}" for i in range(3000)))
    monkeypatch.chdir(tmp_path)
    calibration = (6, 32, 0)  # drawn from the same file, named by its absolute path
    held = held_out_sources(tokenizer, ["domain.txt"], DRAW, count=8, seed=DRAW.seed + 1,
                            taken={str(text): (calibration,)})["domain.txt"]  # fmt: skip
    calibrated = calibration_windows(tokenizer, str(text), *calibration)
    assert not _rows(held.input_ids) & _rows(calibrated)
    unaware = held_out_sources(tokenizer, ["domain.txt"], DRAW, count=8, seed=DRAW.seed + 1)["domain.txt"]
    assert not torch.equal(unaware.input_ids, held.input_ids)  # the calibration's windows were left out
