"""paretoprune: multi-objective search for LLM pruning recipes.

The top-level names are resolved lazily so that ``import paretoprune.metrics`` stays cheap and
importing the package never drags in torch, transformers or Ray before they are needed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "InputError": "paretoprune.errors",
    "Candidate": "paretoprune.candidate",
    "load_model": "paretoprune.models",
    "find_layout": "paretoprune.models",
    "fingerprint": "paretoprune.models",
    "Recipe": "paretoprune.recipe",
    "load_recipe": "paretoprune.recipe",
    "save_recipe": "paretoprune.recipe",
    "apply_recipe": "paretoprune.workflows",
    "prune_model": "paretoprune.pruning",
    "SearchConfig": "paretoprune.search.config",
    "run_search": "paretoprune.search.driver",
    "resume": "paretoprune.search.driver",
    "Run": "paretoprune.search.run",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'paretoprune' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
