"""The protocol of a study: everything its rows depend on besides how each model is pruned.

It is written beside the study's table (``protocol.json``) when the study runs, and the pages
quote it. A study resumed with another protocol (another model file, other windows, another
search budget) would mix two tables in one: the runner refuses it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from paretoprune.errors import InputError

from benchmarks.files import write_text
from benchmarks.model_record import ModelRecord
from benchmarks.searches import Budget

__all__ = [
    "CALIBRATION_FILE",
    "PROTOCOL_FILE",
    "EVALUATION_FILES",
    "EVALUATION_NAMES",
    "DataFile",
    "Protocol",
    "Windows",
    "data_file",
    "protocol_in",
    "protocol_differences",
    "read_protocol",
    "write_protocol",
]

# Files of the shared data folder (``--data-dir``): C4 train text calibrates and searches; the
# evaluation sets only measure.
CALIBRATION_FILE = "c4/c4-en-train-shard00000-first1000.jsonl"
EVALUATION_FILES = {  # column prefix -> file
    "wikitext2": "wikitext2/wiki.test.raw",
    "ptb": "ptb/ptb.test.txt",
    "c4": "c4/c4-en-validation-shard00000-first1000.json.gz",
}
EVALUATION_NAMES = {"wikitext2": "WikiText-2", "ptb": "PTB", "c4": "C4"}
PROTOCOL_FILE = "protocol.json"  # beside each study's table
# Settings free to change between the sessions of one study.
FREE_SETTINGS = ("command", "budget.workers")


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to the shared data folder
    sha256: str  # the file's bytes
    text_sha256: str  # the text paretoprune.data.load_text reads from it (what recipes record)


@dataclass(frozen=True)
class Windows:
    calib_nsamples: int = 32  # calibration windows, at random starts
    calib_seqlen: int = 512  # tokens per calibration window
    seed: int = 0  # draws the calibration windows, seeds the searches
    eval_windows: int = 32  # the first contiguous windows of each evaluation set
    eval_seqlen: int = 512  # tokens per evaluation window


@dataclass(frozen=True)
class Protocol:
    model: ModelRecord
    windows: Windows
    calibration: DataFile
    evaluation: dict[str, DataFile] = field(default_factory=dict)  # by set
    eval_tokens: dict[str, int] = field(default_factory=dict)  # tokens scored per set
    budget: Budget | None = None  # each search's, where the study searches
    tasks: tuple[str, ...] = ()  # zero-shot tasks, where the study scores them
    task_limit: int | None = None  # examples per task (a fixed, seeded subset)
    command: str = ""  # what makes (or finishes) the study's table


def data_file(data_dir: Path, relative: str) -> Path:
    """A file of the shared data folder, or one line saying where it was looked for."""
    path = data_dir / relative
    if not path.is_file():
        raise InputError(f"{relative} not found under {data_dir}; pass the shared data folder with --data-dir")
    return path


def write_protocol(path: Path, protocol: Protocol) -> None:
    write_text(path, json.dumps(asdict(protocol), indent=2) + "\n")


def read_protocol(path: Path) -> Protocol | None:
    """The protocol stored at ``path`` (None when there is none yet)."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Protocol(
            model=ModelRecord(**data["model"]),
            windows=Windows(**data["windows"]),
            calibration=DataFile(**data["calibration"]),
            evaluation={name: DataFile(**item) for name, item in data["evaluation"].items()},
            eval_tokens={name: int(tokens) for name, tokens in data["eval_tokens"].items()},
            budget=Budget(**data["budget"]) if data["budget"] else None,
            tasks=tuple(data["tasks"]),
            task_limit=data["task_limit"],
            command=data["command"],
        )
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{path} is not a protocol file ({type(error).__name__}: {error})") from None


def protocol_in(folder: Path) -> Protocol:
    """The protocol of the study whose results are in ``folder``."""
    protocol = read_protocol(folder / PROTOCOL_FILE)
    if protocol is None:
        raise InputError(f"{folder} has no {PROTOCOL_FILE}: run its study first")
    return protocol


def protocol_differences(stored: Protocol, current: Protocol) -> list[str]:
    """The settings in which two protocols differ, e.g. ``windows.seed: 0 -> 1``."""
    old, new = _flat(asdict(stored)), _flat(asdict(current))
    return [f"{key}: {old.get(key)} -> {new.get(key)}" for key in sorted(old.keys() | new.keys())
            if key not in FREE_SETTINGS and old.get(key) != new.get(key)]  # fmt: skip


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix: list(value) if isinstance(value, tuple) else value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat |= _flat(item, f"{prefix}.{key}" if prefix else key)
    return flat
