"""The search checkpoint: plain, versioned data in JSON and npz, written crash-safely, never pickled."""

from __future__ import annotations

import ast
import importlib.util
import json
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from paretoprune import io as io_module
from paretoprune.errors import InputError
from paretoprune.search.checkpoint import (
    FORMAT,
    capture_rng_state,
    has_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from paretoprune.search.run import CHECKPOINT_FILE, LEGACY_CHECKPOINT_FILE
from tests.search.algorithms.problems import assert_same_state, pickle_disabled


def _arrays_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("checkpoint-*.npz"))


def _rich_state() -> dict[str, Any]:
    generator = np.random.default_rng(5)
    generator.random(3)
    legacy = np.random.RandomState(6)
    legacy.standard_normal()  # leaves a cached Gaussian in its state
    return {
        "generation": 7,
        "nested": {"tuple": (1, (2.5, "x"), [None, True]), "empty": (), "list": [1, [2, {"deep": -3}]]},
        "arrays": [np.arange(6, dtype=np.int32).reshape(2, 3), np.array([0.1, np.inf, np.nan]),
                   np.empty((4, 0)), np.array(3.5), np.array([True, False]), np.array(["ab", "c"])],
        "scalars": (np.float32(1.25), np.int64(-4), np.bool_(True)),
        "floats": [float("inf"), float("-inf"), 1e-310, 2**80],
        "offsets": (np.array([0.1, 0.2]), np.array([0.3, 0.4])),
        "generator": generator.bit_generator.state,
        "random_state": legacy.get_state(legacy=False),
        "legacy_tuple": legacy.get_state(),
        "python": random.Random(8).getstate(),
    }


def test_plain_state_round_trips_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = _rich_state()
    state["floats"].append(float("nan"))
    with pickle_disabled(monkeypatch):
        save_checkpoint(tmp_path, state)
        loaded = load_checkpoint(tmp_path)
    assert_same_state(loaded, state)

    # The JSON is strict JSON (no NaN or Infinity literals) and names its version and arrays file.
    def no_constants(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    document = json.loads((tmp_path / CHECKPOINT_FILE).read_text(), parse_constant=no_constants)
    assert document["format"] == FORMAT == "paretoprune.checkpoint/v1"
    assert [path.name for path in _arrays_files(tmp_path)] == [document["arrays"]]

    # The restored generator states continue the same streams.
    generator = np.random.default_rng()
    generator.bit_generator.state = loaded["generator"]
    expected = np.random.default_rng(5)
    expected.random(3)
    assert np.array_equal(generator.random(4), expected.random(4))
    legacy = np.random.RandomState()
    legacy.set_state(loaded["legacy_tuple"])
    reference = np.random.RandomState(6)
    reference.standard_normal()
    assert legacy.standard_normal() == reference.standard_normal()
    python = random.Random()
    python.setstate(loaded["python"])
    assert python.random() == random.Random(8).random()


def test_library_objects_and_unclear_keys_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    generator = np.random.default_rng(0)
    where = r"state\['algorithm'\]\['state'\]\[1\] is a numpy\.random\._generator\.Generator"
    with pytest.raises(TypeError, match=where):
        save_checkpoint(tmp_path, {"algorithm": {"state": [1, generator]}})
    with pytest.raises(TypeError, match=r"state\['x'\] is a numpy array of Python objects"):
        save_checkpoint(tmp_path, {"x": np.array([1, "a", None], dtype=object)})
    with pytest.raises(TypeError, match="keys must be strings"):
        save_checkpoint(tmp_path, {"x": {1: "one"}})
    with pytest.raises(ValueError, match="reserves"):
        save_checkpoint(tmp_path, {"x": {"__tuple__": [1]}})
    with pytest.raises(TypeError, match="builtins.set"):
        save_checkpoint(tmp_path, {"x": {1, 2}})
    assert not has_checkpoint(tmp_path) and not list(tmp_path.iterdir())


def test_a_crash_at_any_step_leaves_the_last_complete_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not has_checkpoint(tmp_path)
    with pytest.raises(InputError, match="no checkpoint"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, {"generation": 3, "state": np.arange(4)})
    first_arrays = _arrays_files(tmp_path)
    real_replace = io_module.os.replace

    def crash_on(name: str):
        def replace(source: Any, target: Any) -> None:
            if Path(target).name.endswith(name):
                raise OSError("power cut")
            real_replace(source, target)

        return replace

    # Killed while writing the arrays, then while renaming the JSON (the new arrays are in place).
    for crashing in (".npz", CHECKPOINT_FILE):
        monkeypatch.setattr(io_module.os, "replace", crash_on(crashing))
        with pytest.raises(OSError):
            save_checkpoint(tmp_path, {"generation": 4, "state": np.arange(5)})
        monkeypatch.undo()
        state = load_checkpoint(tmp_path)
        assert state["generation"] == 3 and state["state"].tolist() == [0, 1, 2, 3]
        assert not list(tmp_path.glob(".*.tmp"))
    assert len(_arrays_files(tmp_path)) == 2  # the first checkpoint's and an orphan

    save_checkpoint(tmp_path, {"generation": 5, "state": np.arange(6)})
    assert load_checkpoint(tmp_path)["state"].tolist() == list(range(6))
    arrays = _arrays_files(tmp_path)
    assert len(arrays) == 1 and arrays != first_arrays  # older arrays files are gone


def test_temporary_files_of_a_crashed_writer_are_removed(tmp_path: Path) -> None:
    torn = [tmp_path / ".checkpoint.json.1.cafe.tmp", tmp_path / ".checkpoint-0123456789ab.npz.1.cafe.tmp"]
    unrelated = tmp_path / ".evaluations.parquet.1.cafe.tmp"  # another writer's
    for path in (*torn, unrelated):
        path.write_bytes(b"torn")
    save_checkpoint(tmp_path, {"generation": 1})
    assert not any(path.exists() for path in torn) and unrelated.exists()
    assert load_checkpoint(tmp_path) == {"generation": 1}


def test_a_legacy_pickle_is_refused_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / LEGACY_CHECKPOINT_FILE).write_bytes(pickle.dumps({"generation": 3}))
    assert has_checkpoint(tmp_path)  # so that resuming reaches the error, not a silent restart
    with pickle_disabled(monkeypatch), pytest.raises(InputError) as error:
        load_checkpoint(tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert "written by an older paretoprune as a pickle" in message and "no longer loads" in message
    assert "stay readable" in message and "--out" in message and "older release" in message


def test_another_format_version_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, {"generation": 2})
    path = tmp_path / CHECKPOINT_FILE
    document = json.loads(path.read_text())
    document["format"] = "paretoprune.checkpoint/v2"
    path.write_text(json.dumps(document))
    with pytest.raises(InputError, match=r"format 'paretoprune\.checkpoint/v2'.*reads 'paretoprune\.checkpoint/v1'"):
        load_checkpoint(tmp_path)
    path.write_text(json.dumps({"generation": 2}))
    with pytest.raises(InputError, match="not a paretoprune checkpoint"):
        load_checkpoint(tmp_path)


def test_unreadable_files_are_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_checkpoint(tmp_path, {"state": np.arange(3)})
    path, arrays = tmp_path / CHECKPOINT_FILE, _arrays_files(tmp_path)[0]
    good_json, good_arrays = path.read_text(), arrays.read_bytes()

    path.write_text(good_json[: len(good_json) // 2])
    with pytest.raises(InputError, match=r"checkpoint\.json cannot be read") as error:
        load_checkpoint(tmp_path)
    assert "\n" not in str(error.value)
    path.write_text(good_json)

    arrays.write_bytes(good_arrays[: len(good_arrays) // 2])
    with pytest.raises(InputError, match=f"{arrays.name} cannot be read"):
        load_checkpoint(tmp_path)

    # An npz holding a pickled array is refused without unpickling it.
    with open(arrays, "wb") as handle:
        np.savez(handle, a0=np.array([{"x": 1}], dtype=object))
    with pickle_disabled(monkeypatch), pytest.raises(InputError, match=f"{arrays.name} cannot be read"):
        load_checkpoint(tmp_path)

    arrays.unlink()
    with pytest.raises(InputError, match=f"{arrays.name} cannot be read"):
        load_checkpoint(tmp_path)

    path.write_text(good_json.replace(arrays.name, "../elsewhere.npz"))
    with pytest.raises(InputError, match="incomplete checkpoint"):
        load_checkpoint(tmp_path)


def test_pickle_disabled_really_disables_pickle(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pickled = pickle.dumps([1, 2])
    np.save(tmp_path / "objects.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pickle_disabled(monkeypatch):
        for attempt in (lambda: pickle.loads(pickled), lambda: pickle.dumps(1),
                        lambda: np.load(tmp_path / "objects.npy", allow_pickle=True)):  # fmt: skip
            with pytest.raises(AssertionError):
                attempt()
    assert pickle.loads(pickled) == [1, 2]  # and gives it back afterwards


def test_process_rng_state_survives_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    with pickle_disabled(monkeypatch):
        save_checkpoint(tmp_path, {"rng": capture_rng_state()})
        first = (random.random(), np.random.rand(), torch.rand(1).item())
        state = load_checkpoint(tmp_path)["rng"]
    assert state["torch"].dtype == np.uint8
    restore_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def _package_sources() -> list[Path]:
    """The .py files of the installed package: paretoprune and the folders mapped into it."""
    files = []
    for package in ("paretoprune", "paretoprune.search", "paretoprune.metrics", "paretoprune.evaluators"):
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.submodule_search_locations, package
        for folder in spec.submodule_search_locations:
            files.extend(Path(folder).rglob("*.py"))
    return sorted(set(files))


def test_no_module_of_the_package_imports_pickle() -> None:
    sources = _package_sources()
    assert any(path.name == "checkpoint.py" for path in sources) and len(sources) > 20
    importing = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name == "pickle" or name.startswith("pickle.") for name in names):
                importing.append(f"{path}:{node.lineno}")
    assert importing == []
