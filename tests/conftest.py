"""Shared fixtures: where the real text data lives, and a loopback-only Ray environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Ray must only ever bind to loopback on these machines; set before any test imports ray.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def shared_data_dir() -> Path | None:
    """The real corpora shipped beside the repository, or a folder named by PARETOPRUNE_DATA."""
    candidates = [os.environ.get("PARETOPRUNE_DATA"), REPO_ROOT.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    found = shared_data_dir()
    if found is None:
        pytest.skip("real text data not found: set PARETOPRUNE_DATA to the shared data folder")
    return found
