"""Crash-safe files: atomic writes, and the search checkpoint.

A search runs for hours on hardware that can vanish. Whatever moment it is killed at, the
files it leaves must be readable and consistent. Every file is therefore written whole to a
temporary name in the same folder, flushed to disk, and renamed over the old one: a rename
within one file system is atomic, so a reader sees either the old file or the new one, never
half of either. A crash can leave a temporary file behind; it is ignored and later removed.

The checkpoint is one pickle holding whatever the driver needs to continue exactly (the
algorithm's ``state_dict()``, the generation, random generator states). Pickles run code when
loaded: load only checkpoints from run folders you wrote.
"""

from __future__ import annotations

import os
import pickle
import random
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np

from paretoprune.errors import InputError

__all__ = [
    "CHECKPOINT_FILE",
    "atomic_write",
    "capture_rng_state",
    "has_checkpoint",
    "load_checkpoint",
    "remove_stale_temp_files",
    "restore_rng_state",
    "save_checkpoint",
]

CHECKPOINT_FILE = "checkpoint.pkl"
_TEMP_SUFFIX = ".tmp"


def _temp_path(path: Path) -> Path:
    """A unique hidden sibling of ``path``: same folder, hence same file system."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{_TEMP_SUFFIX}")


def _fsync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` all or nothing: ``write`` fills a temporary file that then replaces it."""
    target = Path(path)
    temp = _temp_path(target)
    try:
        with open(temp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)
    return target


def remove_stale_temp_files(folder: str | os.PathLike[str], name: str) -> int:
    """Delete temporary files a crashed writer of ``folder/name`` left; returns how many.

    Only the single writer of a run may call this: a live writer's temporary file would go too.
    """
    removed = 0
    for stale in Path(folder).glob(f".{name}.*{_TEMP_SUFFIX}"):
        stale.unlink(missing_ok=True)
        removed += 1
    return removed


def save_checkpoint(run_dir: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Atomically store ``state`` as the run's checkpoint (replacing the previous one)."""
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(folder, CHECKPOINT_FILE)
    payload = pickle.dumps(dict(state), protocol=pickle.HIGHEST_PROTOCOL)
    return atomic_write(folder / CHECKPOINT_FILE, lambda handle: handle.write(payload))


def has_checkpoint(run_dir: str | os.PathLike[str]) -> bool:
    return (Path(run_dir) / CHECKPOINT_FILE).is_file()


def load_checkpoint(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The state last passed to ``save_checkpoint`` for this run folder."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise InputError(f"no checkpoint in {run_dir}; pass the folder of a search started with --out")
    try:
        with open(path, "rb") as handle:
            state = pickle.load(handle)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as error:
        raise InputError(f"the checkpoint in {run_dir} cannot be read ({error}); "
                         "it was written by another version") from None
    if not isinstance(state, dict):
        raise InputError(f"{path} is not a paretoprune checkpoint")
    return state


def capture_rng_state() -> dict[str, Any]:
    """The process-wide random generators (Python, NumPy's legacy global, torch's CPU one).

    The algorithms own their generators; these are for anything else the driver draws from.
    """
    import torch

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Put back what ``capture_rng_state`` returned."""
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
