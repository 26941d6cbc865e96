"""paretoprune.search: the search space, the algorithms, the driver and the run folder.

The names a user needs, resolved lazily so that importing one submodule stays cheap:

- :func:`run_search` and :func:`resume` run a search from a :class:`SearchConfig`;
- :class:`Run` opens the folder a search wrote: its settings, evaluations, front and recipes.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_EXPORTS = {
    "Objectives": "paretoprune.search.pareto",
    "Run": "paretoprune.search.run",
    "SearchConfig": "paretoprune.search.config",
    "SearchResult": "paretoprune.search.driver",
    "resume": "paretoprune.search.driver",
    "run_search": "paretoprune.search.driver",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'paretoprune.search' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
