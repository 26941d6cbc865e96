"""The search checkpoint: enough to continue a search exactly, stored without pickle.

It holds the generation to start from and the algorithm's ``state_dict()``, stored as plain,
versioned data so that loading one never runs code. A
state is a tree of dicts with string keys, lists, tuples, strings, numbers, booleans, None and
numpy arrays. ``checkpoint.json`` holds the tree; each numpy array or scalar is replaced there
by a marker such as ``{"__array__": "a3"}`` that names it inside a ``.npz`` file beside it
(read with pickling disabled). Tuples and non-finite floats get markers too, so that they come
back as they went in (``random.setstate`` needs tuples; strict JSON has no infinity). Anything
else, a library object in particular, is refused: each algorithm snapshots the plain state it
needs and rebuilds its library objects from it. (An array reached twice is stored twice and
comes back as two arrays.)

Saving writes the arrays under a new name, then the JSON that names them, then deletes the
older array files; each file is written atomically (:mod:`paretoprune.io`), so a crash at
any moment leaves the previous or the new checkpoint whole.
"""

from __future__ import annotations

import json
import math
import os
import random
import uuid
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from paretoprune.errors import InputError
from paretoprune.io import atomic_write, remove_stale_temp_files
from paretoprune.search.run import CHECKPOINT_FILE, LEGACY_CHECKPOINT_FILE

__all__ = [
    "FORMAT",
    "capture_rng_state",
    "has_checkpoint",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

FORMAT = "paretoprune.checkpoint/v1"

# The arrays files beside the JSON: checkpoint-<id>.npz.
_ARRAYS_PREFIX, _ARRAYS_SUFFIX = f"{Path(CHECKPOINT_FILE).stem}-", ".npz"

# Markers: a JSON object with exactly one of these keys stands for a value JSON cannot hold.
_ARRAY, _SCALAR, _TUPLE, _FLOAT = "__array__", "__scalar__", "__tuple__", "__float__"
_MARKERS = (_ARRAY, _SCALAR, _TUPLE, _FLOAT)

# What every refusal to resume adds: nothing already evaluated is lost.
_CANNOT_RESUME = "the evaluations already in the run folder stay readable; start a new search with --out"


# ---------------------------------------------------------------------------------------------
# State tree <-> JSON and arrays
# ---------------------------------------------------------------------------------------------


def _to_plain(value: Any, arrays: dict[str, np.ndarray], path: str) -> Any:
    """``value`` as JSON-ready data; its numpy arrays and scalars move into ``arrays``.

    Types are matched exactly, not by ``isinstance``: a subclass (an enum that is an int, a
    numpy float that is a float) would otherwise come back as its base type.
    """
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return value
    if kind is float:
        return value if math.isfinite(value) else {_FLOAT: repr(value)}  # "inf", "-inf", "nan"
    if kind is tuple:
        return {_TUPLE: [_to_plain(item, arrays, f"{path}[{i}]") for i, item in enumerate(value)]}
    if kind is list:
        return [_to_plain(item, arrays, f"{path}[{i}]") for i, item in enumerate(value)]
    if kind is dict:
        return {_checked_key(key, path): _to_plain(item, arrays, f"{path}[{key!r}]") for key, item in value.items()}
    if kind is np.ndarray:
        return {_ARRAY: _stored(value, arrays, path)}
    if isinstance(value, np.generic):
        return {_SCALAR: _stored(np.asarray(value), arrays, path)}
    raise TypeError(f"{path} is a {kind.__module__}.{kind.__qualname__}, which a checkpoint cannot hold: "
                    "snapshot it as dicts, lists, tuples, numbers, strings and numpy arrays")  # fmt: skip


def _checked_key(key: Any, path: str) -> str:
    if type(key) is not str:
        raise TypeError(f"{path} has the key {key!r}: a checkpoint's dict keys must be strings")
    if key in _MARKERS:
        raise ValueError(f"{path} has the key {key!r}, which a checkpoint reserves for its markers")
    return key


def _stored(array: np.ndarray, arrays: dict[str, np.ndarray], path: str) -> str:
    """Add ``array`` to ``arrays`` under a new name and return the name."""
    if array.dtype.hasobject:  # object arrays can only be pickled
        raise TypeError(f"{path} is a numpy array of Python objects, which a checkpoint cannot hold")
    name = f"a{len(arrays)}"
    arrays[name] = array
    return name


def _from_plain(value: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """The inverse of ``_to_plain``: markers become arrays, scalars, tuples and floats again."""
    if isinstance(value, list):
        return [_from_plain(item, arrays) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((key, inner),) = value.items()
        if key == _ARRAY:
            return arrays[inner]
        if key == _SCALAR:
            return arrays[inner][()]
        if key == _TUPLE:
            return tuple(_from_plain(item, arrays) for item in inner)
        if key == _FLOAT:
            return float(inner)
    return {key: _from_plain(item, arrays) for key, item in value.items()}


# ---------------------------------------------------------------------------------------------
# The checkpoint
# ---------------------------------------------------------------------------------------------


def save_checkpoint(run_dir: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Atomically store ``state`` as the run's checkpoint (replacing the previous one).

    Raises TypeError, before anything is written, if the state holds anything but plain data.
    """
    folder = Path(run_dir)
    arrays: dict[str, np.ndarray] = {}
    tree = _to_plain(dict(state), arrays, "state")
    # A name no earlier checkpoint used: the JSON in place still names its own arrays file, so
    # a crash from writing these arrays to renaming the new JSON leaves the old checkpoint whole.
    arrays_name = f"{_ARRAYS_PREFIX}{uuid.uuid4().hex[:12]}{_ARRAYS_SUFFIX}"
    document = json.dumps({"format": FORMAT, "arrays": arrays_name, "state": tree}, allow_nan=False)

    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(folder, CHECKPOINT_FILE)
    remove_stale_temp_files(folder, f"{_ARRAYS_PREFIX}*{_ARRAYS_SUFFIX}")
    atomic_write(folder / arrays_name, lambda handle: np.savez(handle, **arrays))
    path = atomic_write(folder / CHECKPOINT_FILE, lambda handle: handle.write(document.encode("utf-8")))
    _remove_arrays_files(folder, keep=arrays_name)
    return path


def _remove_arrays_files(folder: Path, keep: str) -> None:
    """Delete the arrays of earlier checkpoints (and of saves that crashed before their JSON)."""
    for old in folder.glob(f"{_ARRAYS_PREFIX}*{_ARRAYS_SUFFIX}"):
        if old.name != keep:
            old.unlink(missing_ok=True)


def has_checkpoint(run_dir: str | os.PathLike[str]) -> bool:
    """Whether ``run_dir`` holds a checkpoint, including one of an older release.

    An old pickle counts, so that resuming such a run reaches the error explaining it rather
    than silently starting the search over.
    """
    folder = Path(run_dir)
    return (folder / CHECKPOINT_FILE).is_file() or (folder / LEGACY_CHECKPOINT_FILE).is_file()


def load_checkpoint(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The state last passed to ``save_checkpoint`` for this run folder."""
    folder = Path(run_dir)
    path = folder / CHECKPOINT_FILE
    if not path.is_file():
        _refuse_legacy_checkpoint(folder)
        raise InputError(f"no checkpoint in {run_dir}; pass the folder of a search started with --out")
    document = _read_document(path)
    arrays = _read_arrays(folder / document["arrays"])
    try:
        state = _from_plain(document["state"], arrays)
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise InputError(f"{path} does not match its arrays file {document['arrays']} ({error!r}); "
                         f"{_CANNOT_RESUME}") from None  # fmt: skip
    if not isinstance(state, dict):
        raise InputError(f"{path} holds no search state; {_CANNOT_RESUME}")
    return state


def _refuse_legacy_checkpoint(folder: Path) -> None:
    legacy = folder / LEGACY_CHECKPOINT_FILE
    if legacy.is_file():
        raise InputError(f"{legacy} was written by an older paretoprune as a pickle, which this version no longer "
                         f"loads for safety; {_CANNOT_RESUME}, or resume with the older release")  # fmt: skip


def _read_document(path: Path) -> dict[str, Any]:
    """The parsed ``checkpoint.json``, checked to be of the format this version writes."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"the checkpoint {path} cannot be read ({error}); {_CANNOT_RESUME}") from None
    if not isinstance(document, dict) or "format" not in document:
        raise InputError(f"{path} is not a paretoprune checkpoint; {_CANNOT_RESUME}")
    if document["format"] != FORMAT:
        raise InputError(f"{path} has the checkpoint format {document['format']!r}, but this paretoprune reads "
                         f"{FORMAT!r}; resume with the release that wrote it, or start a new search with --out")
    if not _is_arrays_name(document.get("arrays")) or "state" not in document:
        raise InputError(f"{path} is an incomplete checkpoint; {_CANNOT_RESUME}")
    return document


def _is_arrays_name(name: Any) -> bool:
    """Whether ``name`` is an arrays file this module writes (never a path elsewhere)."""
    return (isinstance(name, str) and Path(name).name == name
            and name.startswith(_ARRAYS_PREFIX) and name.endswith(_ARRAYS_SUFFIX))  # fmt: skip


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a checkpoint's ``.npz`` file, read with pickling disabled."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise InputError(f"the checkpoint's arrays file {path} cannot be read ({error}); {_CANNOT_RESUME}") from None


# ---------------------------------------------------------------------------------------------
# Process-wide random generators
# ---------------------------------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """The process-wide random generators (Python, NumPy's legacy global, torch's CPU one).

    The algorithms own their generators; these are for anything else the driver draws from.
    The result is plain data that ``save_checkpoint`` accepts (torch's state as uint8 array).
    """
    import torch

    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(legacy=False),
        "torch": torch.get_rng_state().numpy().copy(),
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Put back what ``capture_rng_state`` returned."""
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(torch.from_numpy(np.array(state["torch"], dtype=np.uint8)))
