"""A memetic NSGA-III: global exploration by NSGA-III, local exploitation by sensitivity rounds.

NSGA-III alone spreads its children over the whole front and converges slowly on any one part
of it; the sensitivity search converges fast but at one sparsity. This search alternates the
two. Between NSGA-III generations, a few *anchors*, each held at one level of the level gene
(the target sparsity of a ``--sparsity-range`` search), run the sensitivity search's rounds on
the other genes: probe each gene, fit a quadratic per gene, step to the model's minimum with
moves that keep the mean (EvoPress' budget-preserving shifts, chosen by the model rather than
at random). Every genome a local round evaluates is merged into NSGA-III's population through
its survival, so improved members breed (Lamarckian learning); and the anchors' models and best
genes are carried to the levels between them, where no probe was spent.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from paretoprune.errors import InputError
from paretoprune.search.algorithms.base import RepairFn, SearchAlgorithm
from paretoprune.search.algorithms.model_transfer import LocalModel, level_weights, transferred_step
from paretoprune.search.algorithms.pymoo_nsga3 import PymooNSGA3
from paretoprune.search.algorithms.sensitivity import SensitivitySearch
from paretoprune.search.pareto import non_dominated_mask

__all__ = ["MemeticSearch", "anchor_levels", "anchor_starts"]


def anchor_levels(low: float, high: float, count: int) -> np.ndarray:
    """``count`` levels evenly inside ``[low, high]``, ends excluded: 0.5, 0.6, 0.7 for 3 in [0.4, 0.8].

    The ends of a range are the least useful levels to refine: the front's ends are where the
    user's choice rarely falls, and the baselines already sit there.
    """
    return low + (high - low) * np.arange(1, count + 1) / (count + 1)


def anchor_starts(genomes: np.ndarray, values: np.ndarray, level_gene: int | None, levels: np.ndarray) -> np.ndarray:
    """The genome each anchor starts from: one row per level (per anchor without a level gene).

    At a level, the best evaluated genome (on ``values``, minimised; inf for failed) among
    those at that level or above, with its level set to the anchor's: moved down to a lower
    level, a genome only gets better on the error. If nothing is that high, the highest one.
    Without a level gene, the best distinct genomes in order.
    """
    order = np.argsort(values, kind="stable")
    if level_gene is None:
        distinct = order[np.sort(np.unique(genomes[order], axis=0, return_index=True)[1])]
        return genomes[np.resize(distinct, len(levels))].copy()
    starts = np.empty((len(levels), genomes.shape[1]))
    for row, level in enumerate(levels):
        above = order[genomes[order, level_gene] >= level]
        chosen = above[0] if len(above) else int(np.argmax(genomes[:, level_gene]))
        starts[row] = genomes[chosen]
        starts[row, level_gene] = level
    return starts


class MemeticSearch(SearchAlgorithm):
    """NSGA-III generations, then a local round at each anchor, then its models carried over
    the front, and again.

    One cycle is ``ga_generations`` NSGA-III generations followed by one sensitivity round at
    every anchor: a generation of probes (each gene but the level gene moved by ``probe`` of
    its width, both sides, or one side every other round with ``two_sided_every`` 2), then a
    generation of ``steps`` model steps per anchor. The first local round starts with a
    generation that evaluates the anchors' start genomes (``anchor_starts`` over the initial
    genomes, the baselines, when there are any: see ``_start_pool``), those not
    scored at their level already (a baseline at an anchor's level is not scored twice). A transfer
    generation closes the cycle, up to ``pop_size`` genomes: a *bridge* halfway between each two
    anchors (and between the outer ones and the box's ends), whose genes blend the anchors' best
    genes by level, then members of the front found so far, spread over it; each takes one step
    of the anchors' models blended by level (``model_transfer``).

    ``level_gene`` is the index of the gene the local rounds never move; "auto" is the last
    gene with two or more objectives (the target sparsity of a range search: the anchors then
    sit at ``anchor_levels`` of its box) and none with one (anchors start at the best initial genomes).
    ``anchors`` defaults to 3 with a level gene and 1 without: at a fixed sparsity, each anchor
    would run its own sensitivity search at the same level, and one converges for less.
    The local rounds optimise the first objective; with the level gene held, that is the error
    at a fixed sparsity. For several objectives at a fixed sparsity, pass ``level_gene: null``.
    """

    name = "memetic"

    def __init__(self, n_var: int, xl: Any, xu: Any, n_obj: int, pop_size: int, seed: int = 0,
                 repair: RepairFn | None = None, initial: Any = None, anchors: int | None = None,
                 level_gene: int | str | None = "auto", ga_generations: int = 1, steps: int = 2,
                 probe: float = 1 / 6, radius: float = 1 / 4, shrink: float = 0.7, two_sided_every: int = 1,
                 mutation: str = "polynomial") -> None:  # fmt: skip
        super().__init__(n_var, xl, xu, n_obj, pop_size, seed, repair, initial)
        self.level_gene = self._level_gene(level_gene)
        if anchors is None:  # three levels of a range; at one level, anchors would repeat one search
            anchors = 1 if self.level_gene is None else 3
        if int(anchors) < 1 or int(ga_generations) < 1 or int(steps) < 2:
            raise InputError(f"the memetic search needs anchors >= 1, ga_generations >= 1 and steps >= 2; "
                             f"got {anchors}, {ga_generations}, {steps}")  # fmt: skip
        if self.level_gene is not None and self.n_var < 2:
            raise InputError("the memetic search holds the level gene: it needs at least one other gene")
        self.anchors, self.ga_generations, self.steps = int(anchors), int(ga_generations), int(steps)
        self.local_options = dict(probe=probe, radius=radius, shrink=shrink, two_sided_every=two_sided_every)
        SensitivitySearch(1, 0.0, 1.0, 1, 2, **self.local_options)  # refuse bad local settings now
        self._ga = PymooNSGA3(n_var, xl, xu, n_obj, pop_size, seed, repair, initial, mutation)
        self._seen = (np.empty((0, self.n_var)), np.empty((0, self.n_obj)))  # every genome told, minimised
        self._starts: np.ndarray | None = None  # the anchors' start genomes, once chosen
        self._locals: list[SensitivitySearch] = []
        self._phase = "ga"  # ga (ga_generations times) -> local (start,) probe, step -> transfer -> ga
        self._ga_left = self.ga_generations  # NSGA-III generations before the next local round
        self._local_left = 0  # local generations left in this round
        self._asked: list[np.ndarray] = []  # each anchor's part of a local ask, until tell

    def _level_gene(self, level_gene: int | str | None) -> int | None:
        if level_gene == "auto":
            return self.n_var - 1 if self.n_obj >= 2 else None
        if level_gene is None:
            return None
        if isinstance(level_gene, str) or not -self.n_var <= int(level_gene) < self.n_var:
            raise InputError(f"level_gene {level_gene!r} is not a gene index (0 to {self.n_var - 1}, or -1), "
                             "'auto' or null")  # fmt: skip
        return int(level_gene) % self.n_var

    # -- the anchors' local searches -----------------------------------------------------------

    @property
    def _free(self) -> np.ndarray:
        """The genes a local round moves: all but the level gene."""
        return np.array([gene for gene in range(self.n_var) if gene != self.level_gene])

    def _full(self, local: np.ndarray, start: np.ndarray) -> np.ndarray:
        """Local genomes (free genes only) as whole genomes, the held genes taken from ``start``."""
        whole = np.tile(start, (len(local), 1))
        whole[:, self._free] = local
        return whole

    def _build_locals(self, starts: np.ndarray) -> list[SensitivitySearch]:
        """One sensitivity search per anchor over the free genes, its start the anchor's genome."""
        free = self._free
        return [
            SensitivitySearch(len(free), self.xl[free], self.xu[free], 1, self.steps, seed=self.seed,
                              repair=self._local_repair(start), initial=start[None, free], **self.local_options)
            for start in starts
        ]  # fmt: skip

    def _local_repair(self, start: np.ndarray) -> RepairFn:
        """The search's repair seen from an anchor: whole genomes repaired, free genes handed back."""

        def repair(local: np.ndarray) -> np.ndarray:
            return self._repaired(self._full(local, start))[:, self._free]

        return repair

    def _start_locals(self) -> None:
        """Choose the anchors' starts (see ``_start_pool``), and build their searches."""
        genomes, values = self._start_pool()
        if self.level_gene is None:
            levels = np.zeros(self.anchors)
        else:
            levels = anchor_levels(self.xl[self.level_gene], self.xu[self.level_gene], self.anchors)
        self._starts = self._repaired(anchor_starts(genomes, values, self.level_gene, levels))
        self._locals = self._build_locals(self._starts)
        for local, start in zip(self._locals, self._starts):
            known = self._known_value(start)
            if known is not None:  # scored already, at this very level: tell it, spend nothing
                local.tell(local.ask(), np.array([[known]]))
        # A round is its probes and its steps, after a generation for the starts not scored yet.
        self._local_left = 2 if all(local.centre is not None for local in self._locals) else 3

    def _start_pool(self) -> tuple[np.ndarray, np.ndarray]:
        """The genomes the anchors may start from, with their first objective.

        The initial genomes (the known baselines: uniform allocations, OWL) once scored, when
        there are any; everything scored so far otherwise. A local model converges fast from a
        smooth allocation and slowly from a random one, even a better one: on SmolLM2-135M at
        70 %, a round from OWL (kl 3.10) reached 2.22, and one from an NSGA-III child moved down
        to 70 % (2.88) only 2.63. NSGA-III's finds still reach the anchors' levels through the
        transfer steps and breeding.
        """
        genomes, values = self._seen
        if len(self.initial):
            known = [self._rows_of(genome)[:1] for genome in self._repaired(self.initial)]
            rows = np.concatenate(known).astype(int)
            if len(rows) and np.isfinite(values[rows, 0]).any():
                return genomes[rows], values[rows, 0]
        return genomes, values[:, 0]

    def _rows_of(self, genome: np.ndarray) -> np.ndarray:
        """The rows of the genomes scored so far equal to ``genome`` (up to rounding)."""
        return np.flatnonzero(np.all(np.abs(self._seen[0] - genome) <= 1e-12, axis=1))

    def _known_value(self, genome: np.ndarray) -> float | None:
        """The first objective ``genome`` already scored, if it was scored (and did not fail).

        Equal up to rounding: an anchor's level computed from the box (0.4 + 0.2) may differ in
        the last bit from a baseline's target at the same level.
        """
        values = self._seen[1][self._rows_of(genome), 0]
        values = values[np.isfinite(values)]
        return float(values[0]) if len(values) else None

    # -- ask and tell --------------------------------------------------------------------------

    def _ask(self) -> np.ndarray:
        if self._phase == "transfer":
            moved = self._transfers()
            if len(moved):
                return moved
            self._phase, self._ga_left = "ga", self.ga_generations  # nothing to move: on to NSGA-III
        if self._phase == "ga":
            return self._ga.ask()
        if not self._locals:
            self._start_locals()
        assert self._starts is not None
        # While some anchors wait for their start to be scored, only they ask.
        starting = any(local.centre is None for local in self._locals)
        self._asked = [local.ask() if not starting or local.centre is None else np.empty((0, len(self._free)))
                       for local in self._locals]  # fmt: skip
        return np.vstack([self._full(asked, start) for asked, start in zip(self._asked, self._starts)])

    def _tell(self, objectives: np.ndarray, failed: np.ndarray) -> None:
        genomes = self._pending
        assert genomes is not None
        values = np.where(failed[:, None], np.inf, objectives)
        self._seen = (np.vstack([self._seen[0], genomes]), np.vstack([self._seen[1], values]))
        if self._phase == "ga":
            self._ga.tell(genomes, objectives)
            self._ga_left -= 1
            if self._ga_left == 0:  # a round: probes and steps (the first round's starts count in _start_locals)
                self._phase, self._local_left = "local", 2
            return
        if self._phase == "local":
            self._tell_locals(values)
        self._ga.absorb(genomes, objectives)
        if self._phase == "local":
            self._local_left -= 1
            self._phase = "local" if self._local_left else "transfer"
        else:
            self._phase, self._ga_left = "ga", self.ga_generations

    def _tell_locals(self, values: np.ndarray) -> None:
        """Hand each anchor's search the first objective of its own rows."""
        start = 0
        for local, asked in zip(self._locals, self._asked):
            if len(asked):  # an anchor whose start was known asked nothing in the start generation
                local.tell(asked, values[start : start + len(asked), :1])
            start += len(asked)
        self._asked = []

    # -- the front between the anchors ---------------------------------------------------------

    def _transfers(self) -> np.ndarray:
        """Bridges between the anchors, then front members, each moved one step of the blended models."""
        fitted = [local.local_model() for local in self._locals]
        models: list[LocalModel] = [model for model in fitted if model is not None]
        if not models or len(models) < len(fitted):
            return np.empty((0, self.n_var))
        members = np.vstack([self._bridges(), self._spread_front()])[: self.pop_size]
        free, width = self._free, (self.xu - self.xl)[self._free]
        moved = np.array(members, dtype=float)
        for row, member in enumerate(members):
            weights = self._weights(member)
            moved[row, free] = member[free] + transferred_step(member[free], models, weights, width)
        moved = self._repaired(moved)
        changed = ~np.all(np.isclose(moved, members), axis=1)
        return moved[changed]

    def _bridges(self) -> np.ndarray:
        """Genomes at the levels halfway between the anchors (and the box's ends), their genes
        the anchors' best genes blended by level: the allocation as a function of the level.

        Neighbouring levels have related best allocations, so a blend starts a level between
        two anchors near its optimum, where a front member found by NSGA-III may be far from it.
        """
        if self.level_gene is None or self._starts is None:
            return np.empty((0, self.n_var))
        levels = self._starts[:, self.level_gene]
        edges = np.unique(np.concatenate([[self.xl[self.level_gene]], levels, [self.xu[self.level_gene]]]))
        centres = np.array([local.centre for local in self._locals])
        bridges = np.tile(self._starts[0], (len(edges) - 1, 1))
        for row, level in enumerate((edges[:-1] + edges[1:]) / 2):
            bridges[row, self._free] = level_weights(levels, float(level)) @ centres
            bridges[row, self.level_gene] = level
        return bridges

    def _spread_front(self) -> np.ndarray:
        """Up to ``pop_size`` non-dominated genomes seen so far, evenly spread over the front.

        Genomes at an anchor's level are left out: the anchor refines that level already.
        """
        genomes, values = self._seen
        usable = np.all(np.isfinite(values), axis=1)
        if self.level_gene is not None and self._starts is not None:
            usable &= ~np.isin(genomes[:, self.level_gene], self._starts[:, self.level_gene])
        genomes, values = genomes[usable], values[usable]
        front = non_dominated_mask(values, keep_duplicates=False)
        genomes, values = genomes[front], values[front]
        genomes = genomes[np.lexsort(values.T[::-1])]
        if len(genomes) > self.pop_size:
            genomes = genomes[np.unique(np.round(np.linspace(0, len(genomes) - 1, self.pop_size)).astype(int))]
        return genomes

    def _weights(self, genome: np.ndarray) -> np.ndarray:
        """How much each anchor's model counts for ``genome``: by level, or all on the nearest anchor."""
        assert self._starts is not None
        if self.level_gene is not None:
            return level_weights(self._starts[:, self.level_gene], float(genome[self.level_gene]))
        weights = np.zeros(len(self._starts))
        weights[int(np.argmin(np.linalg.norm(self._starts - genome, axis=1)))] = 1.0
        return weights

    # -- checkpoints ---------------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        return {
            "ga": self._ga.state_dict(),
            "seen": self._seen,
            "starts": self._starts,
            "locals": [local.state_dict() for local in self._locals],
            "phase": self._phase,
            "ga_left": self._ga_left,
            "local_left": self._local_left,
        }

    def _restore(self, snapshot: dict[str, Any]) -> None:
        self._ga.load_state_dict(snapshot["ga"])
        self._seen = tuple(snapshot["seen"])  # type: ignore[assignment]
        self._starts = snapshot["starts"]
        self._locals = [] if self._starts is None else self._build_locals(self._starts)
        for local, state in zip(self._locals, snapshot["locals"]):
            local.load_state_dict(state)
        self._phase = str(snapshot["phase"])
        self._ga_left, self._local_left = int(snapshot["ga_left"]), int(snapshot["local_left"])
        self._asked = []
