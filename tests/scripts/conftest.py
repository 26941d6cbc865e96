"""The benchmark scripts import each other as top-level modules (``python scripts/x.py`` puts
``scripts/`` on the path); the tests see them the same way."""

from __future__ import annotations

import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))
