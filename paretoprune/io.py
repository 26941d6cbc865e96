"""Crash-safe files: a reader sees the old file or the new one, never half of either.

A search runs for hours on hardware that can vanish, and a user may press Ctrl-C at any moment.
Every file paretoprune writes therefore goes through :func:`atomic_write`: the bytes are written
whole to a temporary name in the same folder, flushed to disk, and renamed over the old file.
A rename within one file system is atomic. A crash can leave a temporary file behind; readers
never look at it, and the file's single writer removes it with :func:`remove_stale_temp_files`.

This module sits at the bottom of the package beside :mod:`paretoprune.errors`: it imports
nothing of ours, so every layer can use it.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "remove_stale_temp_files"]

_TEMP_SUFFIX = ".tmp"


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` all or nothing: ``write`` fills a temporary file that then replaces it.

    The folder is created if needed. If ``write`` raises (or Ctrl-C arrives), the old file is
    left as it was and the temporary file is removed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
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


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` all or nothing."""
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` all or nothing."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temp_files(folder: str | os.PathLike[str], name: str) -> int:
    """Delete the temporary files a crashed writer of ``folder/name`` left; returns how many.

    ``name`` may be a glob pattern (``checkpoint-*.npz``). Only the single writer of a file may
    call this: a live writer's temporary file would go too.
    """
    removed = 0
    for stale in Path(folder).glob(f".{name}.*{_TEMP_SUFFIX}"):
        stale.unlink(missing_ok=True)
        removed += 1
    return removed


def _temp_path(path: Path) -> Path:
    """A unique hidden sibling of ``path``: same folder, hence same file system.

    The process id and a random part keep two writers (say, two stages' exports) apart.
    """
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
