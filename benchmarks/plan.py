"""The plan: one table of every row the studies measure, in the order they run.

A ``PlanRow`` names its study (``python -m benchmarks STUDY`` measures it) and how the model
is pruned for it (a ``Pruning``): unpruned, by a known pruner (a *baseline*), or by the recipe
a search found. A measured row is filed under the same ``Pruning``, so the runner skips a
planned row whose ``Pruning`` is already in its study's table.

The order makes a partial table useful: the cheap rows first, then one sparsity at a time with
every method. To measure a new method, register it where paretoprune looks pruners up (a
scoring rule in ``SCORING_RULES``, a layer allocation in ``LAYER_ALLOCATIONS``) and add its rows
to ``PLAN``, e.g. a rule named ``"dsnot"`` at every unstructured level, both calibrations::

    *(baseline("baselines", "dsnot", level, calibration=c) for level in SPARSITIES for c in CALIBRATIONS),

``python -m benchmarks baselines`` then measures just those rows (the others are in the table),
and the pages show them under the rule's name (``labels.BASELINE_LABELS`` may give a nicer
one). A new search is declared in ``searches.SEARCHED`` and planned with ``search_rows``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from paretoprune.errors import InputError
from paretoprune.metrics.masks import parse_structure

from benchmarks.searches import SEARCHED, ZEROSHOT_SEARCH, SearchSpec, search_named
from benchmarks.table import column

__all__ = [
    "CALIBRATIONS",
    "PLAN",
    "SEARCH_PRUNERS",
    "SOLVED_SEARCHES",
    "HIGH_SPARSITY",
    "SPARSITIES",
    "PlanRow",
    "Pruning",
    "baseline",
    "dense",
    "planned",
    "search_rows",
    "select",
]

SPARSITIES = (0.5, 0.6, 0.7)
# Where row and layer allocations matter most (TRIM's and OWL's gains grow with sparsity).
HIGH_SPARSITY = 0.8
CALIBRATIONS = ("one-shot", "sequential")
# How a searched recipe is applied: its own rule; its rule, then SparseGPT's update of the
# survivors; or its sparsities given to SparseGPT, which picks its own masks. (pruner, update)
SEARCH_PRUNERS = (("recipe", False), ("recipe", True), ("sparsegpt", False))
# The searches whose recipes are also applied with a block solver, one-shot: the best
# allocations (sensitivity and memetic searches at a fixed sparsity) with the strongest solver of
# the baselines, Wanda++'s regional optimisation (Wanda++ RGS → RO is 0.87x Wanda at 50 %).
SOLVED_SEARCHES = {"sensitivity": ("regional",), "memetic": ("regional",)}


@dataclass(frozen=True)
class Pruning:
    """How a model is pruned for one row; a measured row is filed under the same columns."""

    kind: str  # dense | baseline (a known pruner) | search (a searched recipe)
    # Where the layer sparsities come from: a layer allocation (uniform, owl) or a search's name
    source: str = "uniform"
    # A scoring rule (magnitude, wanda, ria, ...), sparsegpt, or recipe (the recipe's own rule)
    pruner: str = "none"
    update: bool = False  # the survivors of the pruner's masks then updated as SparseGPT does
    structure: str = "unstructured"  # or N:M
    target_sparsity: float = column("g", default=0.0)  # the level the row is filed under
    # none | one-shot (every block calibrated on the dense model) | sequential (each block on
    # the outputs of the blocks already pruned)
    calibration: str = "none"
    rows: str = "uniform"  # how a layer's sparsity is shared among its rows (uniform, trim)
    # Solvers run on the masks before the update, comma-separated (fw, regional); none: no solver
    solvers: str = "none"

    @property
    def name(self) -> str:
        """What ``--only`` picks: dense, a baseline (wanda, owl-wanda, wanda-trim, wanda-fw-update),
        a search."""
        if self.kind == "dense":
            return "dense"
        if self.kind == "search":
            return self.source
        allocation = "" if self.source == "uniform" else f"{self.source}-"
        rows = "" if self.rows == "uniform" else f"-{self.rows}"
        solvers = "".join(f"-{name}" for name in self.chain if name != "update")
        return f"{allocation}{self.pruner}{rows}{solvers}{'-update' if self.update else ''}"

    @property
    def chain(self) -> tuple[str, ...]:
        """The solver chain after the masks, in order: the solvers, then the update."""
        solvers = () if self.solvers == "none" else tuple(self.solvers.split(","))
        return solvers + (("update",) if self.update else ())

    @property
    def pruner_label(self) -> str:
        """What ``--pruners`` picks: the pruner, "update" when the survivors are updated, or a
        searched recipe's solvers ("regional") when it names some."""
        if self.kind == "search" and self.solvers != "none":
            return self.solvers
        return "update" if self.update else self.pruner

    @property
    def shape(self) -> str:
        """What ``--shapes`` picks: the structure, or the sparsity when unstructured ("0.7")."""
        return self.structure if self.structure != "unstructured" else f"{self.target_sparsity:g}"

    @property
    def search(self) -> SearchSpec | None:
        return search_named(self.source) if self.kind == "search" else None

    def describe(self) -> str:
        """One line for the pages' lists of rows not yet measured."""
        if self.kind == "dense":
            return "dense"
        level = f"{self.target_sparsity:.0%}"
        if self.kind == "search":
            return f"{self.source} at {level}, pruner {self.pruner_label}, {self.calibration}"
        shape = self.structure if self.structure != "unstructured" else level
        return f"{self.name} {shape} {self.calibration}"


@dataclass(frozen=True)
class PlanRow:
    study: str  # baselines | searched | zeroshot: the study that measures it
    pruning: Pruning


def dense(study: str) -> PlanRow:
    """The unpruned model: what every other row of the study is read against."""
    return PlanRow(study, Pruning("dense"))


def baseline(study: str, pruner: str, sparsity: float, *, structure: str = "unstructured",
             allocation: str = "uniform", update: bool = False, calibration: str = "one-shot",
             rows: str = "uniform", solvers: str = "none") -> PlanRow:  # fmt: skip
    """A known pruner: a registered scoring rule (a global one too) or sparsegpt, at one
    sparsity (or N:M), with a layer allocation, a row allocation and solvers."""
    nm = parse_structure(structure)
    level = sparsity if nm is None else 1.0 - nm[0] / nm[1]
    return PlanRow(study, Pruning("baseline", allocation, pruner, update, structure, level, calibration, rows, solvers))


def search_rows(study: str, spec: SearchSpec) -> list[PlanRow]:
    """Every row measured from a search's recipes: each pick, calibration and pruner, then
    the block solvers of ``SOLVED_SEARCHES`` one-shot.

    The range search's recipes are its by-products: applied one-shot with their own rule only.
    """
    ranged = spec.sparsity_range is not None
    calibrations = CALIBRATIONS[:1] if ranged else CALIBRATIONS
    pruners = SEARCH_PRUNERS[:1] if ranged else SEARCH_PRUNERS
    solvers = () if ranged else SOLVED_SEARCHES.get(spec.kind, ())
    applied = [
        Pruning("search", spec.name, pruner, update, spec.structure, pick.level, calibration)
        for pick in spec.picks()
        for calibration in calibrations
        for pruner, update in pruners
    ]
    applied += [Pruning("search", spec.name, "recipe", False, spec.structure, pick.level, CALIBRATIONS[0],
                        solvers=solver) for pick in spec.picks() for solver in solvers]  # fmt: skip
    return [PlanRow(study, pruning) for pruning in applied]


def _baselines() -> list[PlanRow]:
    """Magnitude first (no calibration), then one shape at a time (50 % first, the papers'
    headline, then 2:4, ...) with every calibrated method in both modes, then the rows that
    need each layer's Hessian: SparseGPT and Wanda's masks with SparseGPT's update."""
    rows = [dense("baselines")]
    rows += [baseline("baselines", "magnitude", level, calibration="none") for level in SPARSITIES]
    for structure, level in (("unstructured", 0.5), ("2:4", 0.5), ("unstructured", 0.6), ("4:8", 0.5),
                             ("unstructured", 0.7)):  # fmt: skip
        methods = [("uniform", "wanda"), ("uniform", "ria")]
        if structure == "unstructured":
            methods.append(("owl", "wanda"))  # OWL's allocation has nothing to move under N:M
        rows += [baseline("baselines", pruner, level, structure=structure, allocation=allocation, calibration=c)
                 for allocation, pruner in methods for c in CALIBRATIONS]  # fmt: skip
    shapes = [("unstructured", level) for level in SPARSITIES] + [("2:4", 0.5)]
    rows += [baseline("baselines", pruner, level, structure=structure, update=update, calibration=c)
             for c in CALIBRATIONS for pruner, update in (("sparsegpt", False), ("wanda", True))
             for structure, level in shapes]  # fmt: skip
    return rows


def _building_blocks() -> list[PlanRow]:
    """The seed papers' building blocks, after the reference methods they are read against.

    In the order that answers their questions soonest: the solvers at 2:4 (Frank-Wolfe's mask
    refinement then the update, Wanda++'s regional optimization on its own scores), then the
    row and layer allocations (TRIM, TPLO) and the references at 80 %, then the global scoring
    rules (UniPruning, Wanda++'s regional gradients, LRP) at every shape, then the solvers at
    the unstructured levels. Allocations work on unstructured sparsity only.
    """
    shapes = [("2:4", 0.5)] + [("unstructured", level) for level in SPARSITIES]
    solvers = (("wanda", "fw", True), ("wanda", "fw", False), ("wanda++", "regional", False))
    rows = [baseline("baselines", pruner, level, structure=structure, solvers=chain, update=update, calibration=c)
            for structure, level in shapes[:1] for c in CALIBRATIONS for pruner, chain, update in solvers]  # fmt: skip
    rows += [baseline("baselines", pruner, HIGH_SPARSITY, allocation=allocation)
             for allocation, pruner in (("uniform", "wanda"), ("owl", "wanda"), ("uniform", "ria"))]  # fmt: skip
    for level in (HIGH_SPARSITY, *SPARSITIES):
        rows += [baseline("baselines", "wanda", level, rows="trim"), baseline("baselines", "wanda", level, allocation="tplo")]
    rows += [baseline("baselines", rule, level, structure=structure) for structure, level in shapes
             for rule in ("unipruning", "wanda++", "lrp")]  # fmt: skip
    rows.append(baseline("baselines", "unipruning", HIGH_SPARSITY))
    rows += [baseline("baselines", pruner, level, structure=structure, solvers=chain, update=update, calibration=c)
             for structure, level in shapes[1:] for c in CALIBRATIONS for pruner, chain, update in solvers]  # fmt: skip
    return rows


def _searched() -> list[PlanRow]:
    rows = [dense("searched")]
    for spec in SEARCHED:
        rows += search_rows("searched", spec)
    return rows


def _zeroshot() -> list[PlanRow]:
    """Dense, uniform Wanda at 50 % and a small layerwise search's 50 % recipe, one-shot."""
    return [dense("zeroshot"), baseline("zeroshot", "wanda", 0.5), *search_rows("zeroshot", ZEROSHOT_SEARCH)[:1]]


PLAN: tuple[PlanRow, ...] = (*_baselines(), *_building_blocks(), *_searched(), *_zeroshot())


def planned(study: str) -> list[Pruning]:
    """The prunings ``study`` measures, in plan order."""
    return [row.pruning for row in PLAN if row.study == study]


def select(prunings: Sequence[Pruning], only: Iterable[str] = (), shapes: Iterable[str] = (),
           pruners: Iterable[str] = (), calibrations: Iterable[str] = ()) -> list[Pruning]:  # fmt: skip
    """The prunings every filter keeps (an empty filter keeps all). The dense row passes the
    shape, pruner and calibration filters; ``only`` names it as "dense"."""
    only, shapes, pruners, calibrations = set(only), set(shapes), set(pruners), set(calibrations)
    _check_known("--only", only, {p.name for p in prunings})
    _check_known("--shapes", shapes, {p.shape for p in prunings if p.kind != "dense"})
    _check_known("--pruners", pruners, {p.pruner_label for p in prunings if p.kind != "dense"})
    _check_known("--calibrations", calibrations, {p.calibration for p in prunings if p.calibration != "none"})
    return [
        p for p in prunings
        if (not only or p.name in only)
        and (not shapes or p.shape in shapes or p.kind == "dense")
        and (not pruners or p.pruner_label in pruners or p.kind == "dense")
        and (not calibrations or p.calibration in calibrations or p.calibration == "none")
    ]  # fmt: skip


def _check_known(option: str, asked: set[str], known: set[str]) -> None:
    unknown = sorted(asked - known)
    if unknown:
        raise InputError(f"{option} {','.join(unknown)} is not known; choose among {', '.join(sorted(known))}")
