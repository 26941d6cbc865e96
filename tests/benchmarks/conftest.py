"""What the harness's tests share: a tiny model saved to disk, and a tiny shared data folder."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from paretoprune.testing import save_tiny_model, tiny_model

from benchmarks.protocol import CALIBRATION_FILE, EVALUATION_FILES

WORDS = "the pruned model keeps most of what the dense one knows when the right weights go first".split()


def words(count: int, step: int = 7) -> str:
    return " ".join(WORDS[(step * index) % len(WORDS)] for index in range(count))


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A two-block tiny Llama with a byte tokenizer, as a model folder."""
    folder = tmp_path / "model"
    save_tiny_model(folder, tiny_model("llama", layers=2))
    return folder


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The shared data folder's files the studies read, holding a few thousand words each."""
    folder = tmp_path / "data"
    calibration = folder / CALIBRATION_FILE
    calibration.parent.mkdir(parents=True)
    calibration.write_text("".join(json.dumps({"text": words(300, step)}) + "\n" for step in (3, 5, 7, 11)))
    for name, relative in EVALUATION_FILES.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if relative.endswith(".gz"):
            path.write_bytes(gzip.compress((json.dumps({"text": words(1200, 5)}) + "\n").encode()))
        else:
            path.write_text(words(1200, 3 if name == "ptb" else 7))
    return folder
