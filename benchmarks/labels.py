"""The names the pages give to prunings: "Wanda", "OWL + Wanda", "sensitivity search + update"."""

from __future__ import annotations

from collections.abc import Iterable

from benchmarks.plan import SOLVED_SEARCHES, Pruning, planned
from benchmarks.searches import SEARCHES

__all__ = ["BASELINE_LABELS", "GRANULARITY_LABELS", "SEARCH_LABELS", "baseline_label", "label", "label_order", "method_key", "search_label"]

# (allocation, pruner, update) of a baseline -> its name; a pruner not listed goes by its own.
BASELINE_LABELS = {
    ("uniform", "magnitude", False): "Magnitude",
    ("uniform", "wanda", False): "Wanda",
    ("uniform", "ria", False): "RIA",
    ("owl", "wanda", False): "OWL + Wanda",
    ("uniform", "sparsegpt", False): "SparseGPT",
    ("uniform", "wanda", True): "Wanda + update",
    ("tplo", "wanda", False): "TPLO + Wanda",
    ("uniform", "unipruning", False): "UniPruning",
    ("uniform", "wanda++", False): "Wanda++ RGS",
    ("uniform", "lrp", False): "LRP",
}
# What a row allocation and a solver add to a baseline's name.
ROWS_LABELS = {"trim": "TRIM rows"}
SOLVER_LABELS = {"fw": "FW", "regional": "RO", "update": "update"}
# A search's family (SearchSpec.kind) -> its name.
SEARCH_LABELS = {
    "naive": "naive swap search",
    "sensitivity": "sensitivity search",
    "layerwise": "layerwise search",
    "metric": "metric search",
    "joint": "joint search",
    "range": "layerwise range search",
    "memetic": "memetic search",
    "memetic range": "memetic range search",
}
# What a finer granularity than one gene per block adds to a search's name.
GRANULARITY_LABELS = {"linear": "per linear", "block+kind": "per block and kind"}
# How a searched recipe was applied, (pruner, update) -> what its name gets.
APPLIED = {("recipe", False): "", ("recipe", True): " + update", ("sparsegpt", False): " → SparseGPT"}
SEQUENTIAL = ", sequential"


def label(pruning: Pruning) -> str:
    """The name of a row in the tables; ", sequential" marks sequential calibration."""
    suffix = SEQUENTIAL if pruning.calibration == "sequential" else ""
    if pruning.kind == "dense":
        return "dense"
    if pruning.kind == "search" and pruning.solvers != "none":
        return f"{search_label(pruning.source)} → {_chain_label(pruning.chain)}{suffix}"
    if pruning.kind == "search":
        applied = APPLIED.get((pruning.pruner, pruning.update), f" → {pruning.pruner_label}")
        return f"{search_label(pruning.source)}{applied}{suffix}"
    return f"{baseline_label(pruning)}{suffix}"


def baseline_label(pruning: Pruning) -> str:
    """A baseline's name without its calibration: "Wanda", "Wanda + TRIM rows", "Wanda → FW + update"."""
    plain = pruning.rows == "uniform" and pruning.solvers == "none"
    if plain and (pruning.source, pruning.pruner, pruning.update) in BASELINE_LABELS:
        return BASELINE_LABELS[(pruning.source, pruning.pruner, pruning.update)]
    base = BASELINE_LABELS.get((pruning.source, pruning.pruner, False), pruning.name if plain else pruning.pruner)
    if pruning.rows != "uniform":
        base += f" + {ROWS_LABELS.get(pruning.rows, pruning.rows)}"
    if pruning.chain:
        base += f" → {_chain_label(pruning.chain)}"
    return base


def _chain_label(chain: Iterable[str]) -> str:
    """A solver chain's name: "FW + update"."""
    return " + ".join(SOLVER_LABELS.get(name, name) for name in chain)


def method_key(pruning: Pruning) -> tuple[str, str, bool, str, str]:
    """What tells two baselines' methods apart: one line each in the tables."""
    return (pruning.source, pruning.pruner, pruning.update, pruning.rows, pruning.solvers)


def search_label(name: str) -> str:
    """A search's name on the pages: its family's, "sensitivity search", and its layer genes when
    they are finer than blocks, "naive swap search, per linear" (a search the plan does not know
    goes by its run name)."""
    spec = next((spec for spec in SEARCHES if spec.name == name), None)
    if spec is None:
        return name
    family = SEARCH_LABELS.get(spec.kind, f"{spec.kind} search")
    genes = GRANULARITY_LABELS.get(spec.granularity, spec.granularity)
    return family if spec.granularity == "block" else f"{family}, {genes}"


def label_order(labels: Iterable[str]) -> list[str]:
    """The labels present, baselines first, each method before its sequential line; names the
    lists above do not know go after them, in the order given."""
    baselines = dict.fromkeys([*BASELINE_LABELS.values(), *(baseline_label(p) for p in planned("baselines")
                                                            if p.kind == "baseline")])  # fmt: skip
    known = [f"{name}{suffix}" for name in (*baselines, *_search_names()) for suffix in ("", SEQUENTIAL)]
    present = list(dict.fromkeys(labels))
    return sorted(present, key=lambda name: known.index(name) if name in known else len(known))


def _search_names() -> list[str]:
    """Families in SEARCH_LABELS' order; within one, block genes before the finer ones."""
    names = dict.fromkeys([*SEARCH_LABELS.values(), *(search_label(spec.name) for spec in SEARCHES)])
    family = {name: next((i for i, f in enumerate(SEARCH_LABELS.values()) if name.startswith(f)), len(SEARCH_LABELS))
              for name in names}  # fmt: skip
    ordered = sorted(names, key=lambda name: family[name])
    solved = [f" → {_chain_label([name])}" for names in SOLVED_SEARCHES.values() for name in names]
    return [f"{name}{applied}" for name in ordered for applied in dict.fromkeys([*APPLIED.values(), *solved])]
