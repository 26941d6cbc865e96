"""The finalist stage: the best candidates of a search scored again, as they will be applied.

A search ranks candidates on a cheap fitness: their masks alone, on a few windows. At a fixed
sparsity its best candidates differ by less than that fitness's sampling noise, and the solver
a recipe is applied with (SparseGPT's ``update``) changes the error far more than that, so the
last generations pick among equals by chance. Like EvoPress, this stage re-scores a shrinking
set of finalists on growing token counts, each stage on the survivors of the one before:

    stage 1: the best N1 candidates of the search (base rows), on T1 tokens, with the chain
    stage 2: the best N2 of stage 1, on T2 tokens, ...

"Best" is non-dominated sorting at the previous fidelity: whole fronts first, then the last
front that does not fit thinned by crowding distance, so that a range front keeps its spread.
Each finalist is pruned as its recipe will be applied (one-shot: masks, then the solver chain;
see :mod:`paretoprune.evaluators.applied`) and measured on validation windows of the calibration
text: seeded with seed + 1, and drawn only where neither the fitness windows it was chosen on
nor the calibration it is applied with lie (:func:`paretoprune.data.held_out_windows`), so that
a finalist's score is a score on text the search never saw. Every stage's windows are drawn with
that seed, so one fidelity label always means the same tokens.

Beside the finalists, each stage scores the baselines of the first population (uniform Wanda,
OWL, ...: their generation-0 rows, named by ``baselines``) once, at the same fidelity, so that
the exported recipe can be judged against them on the same validation windows
(:mod:`paretoprune.search.validation`). They are candidates like any other: the front takes
their rows where they are non-dominated at that fidelity.

Each result is appended to the run's archive the moment it lands, as a row with its fidelity
(e.g. ``16384+update``) and the ``source_id`` of the search row it scores again; a re-run skips
the finalists a stage has scored already. The front then believes each candidate's most
faithful row (:mod:`paretoprune.search.pareto`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.evaluators.applied import AppliedEvaluator, AppliedInputs
from paretoprune.evaluators.ray_pool import EvaluatorPool, Outcome
from paretoprune.metrics.solvers import parse_chain
from paretoprune.search.archive import Archive, candidate_of
from paretoprune.search.config import SearchConfig
from paretoprune.search.fidelity import BASE, Fidelity
from paretoprune.search.inputs import objective_sources, source_draw
from paretoprune.search.pareto import Objectives, candidate_ids, non_dominated_mask
from paretoprune.search.space import global_rule_of

__all__ = ["DEFAULT_TOKENS", "FINALIST_SEED_OFFSET", "FinalistPlan", "StageReport", "applied_inputs",
           "score_finalists", "select"]

logger = logging.getLogger(__name__)

# One stage on 16384 tokens when none are given: 8x the results' fitness of 8 x 256 tokens,
# where the fitness-noise check finds fresh samples of the search's size ranking its best
# candidates almost at random (Spearman 0.3); EvoPress's middle stage is of this size.
DEFAULT_TOKENS = (16384,)
# The finalist windows' seed is the search's plus this: fresh text, the same for every stage.
FINALIST_SEED_OFFSET = 1
# A finalist scored with no solver named anywhere gets SparseGPT's update, as the best
# published rows are applied.
DEFAULT_CHAIN = ("update",)


@dataclass(frozen=True)
class FinalistPlan:
    """How many finalists each stage scores, on how many tokens, with which solver chain."""

    counts: tuple[int, ...]
    tokens: tuple[int, ...]
    solver: str | None = None  # None: the candidates' own chain, else update; "none": masks alone

    @classmethod
    def of(cls, config: SearchConfig) -> FinalistPlan | None:
        """The plan a config asks for (checked), or None when it asks for no finalists."""
        if not config.finalists:
            if config.finalist_tokens or config.finalist_solver:
                raise InputError("--finalist-tokens and --finalist-solver need --finalists N: how many to score")
            return None
        counts = tuple(int(n) for n in config.finalists)
        tokens = tuple(int(t) for t in (config.finalist_tokens or DEFAULT_TOKENS[: len(counts)]))
        plan = cls(counts, tokens, config.finalist_solver)
        plan.check(config.seqlen)
        return plan

    def check(self, seqlen: int) -> None:
        """One line for a plan that cannot run."""
        if len(self.tokens) != len(self.counts):
            raise InputError(f"--finalists {_text(self.counts)} has {len(self.counts)} stages but "
                             f"--finalist-tokens {_text(self.tokens)} has {len(self.tokens)}: "
                             "give one token count per stage")  # fmt: skip
        if any(n < 1 for n in self.counts) or list(self.counts) != sorted(self.counts, reverse=True):
            raise InputError(f"--finalists {_text(self.counts)}: give positive counts, each stage no larger than "
                             "the one before, e.g. 8,2")  # fmt: skip
        if any(t < seqlen for t in self.tokens) or list(self.tokens) != sorted(set(self.tokens)):
            raise InputError(f"--finalist-tokens {_text(self.tokens)}: give growing counts of at least one window "
                             f"(--seqlen {seqlen}), e.g. 16384,65536")  # fmt: skip
        self.chain(())

    def chain(self, own: Sequence[str]) -> tuple[str, ...]:
        """The solvers a finalist is applied with: --finalist-solver, else its own, else update."""
        if self.solver is None:
            return tuple(own) or DEFAULT_CHAIN
        return () if self.solver.strip().lower() == "none" else parse_chain(self.solver)

    def windows(self, stage: int, seqlen: int) -> int:
        """Whole windows covering the stage's tokens."""
        return math.ceil(self.tokens[stage] / seqlen)


@dataclass
class StageReport:
    """What one stage did: its fidelity, its finalists (source eval_ids, best first), the work."""

    fidelity: str
    finalists: list[int]
    scored: int = 0
    skipped: int = 0  # scored by an earlier run already
    failed: int = 0
    best: dict[str, float] = field(default_factory=dict)  # the stage's best row on the first objective
    baselines: list[int] = field(default_factory=list)  # the baselines scored beside (source eval_ids)

    def to_dict(self) -> dict[str, Any]:
        return {"fidelity": self.fidelity, "finalists": self.finalists, "baselines": self.baselines,
                "scored": self.scored, "skipped": self.skipped, "failed": self.failed, "best": self.best}  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Choosing the finalists


def select(frame: pd.DataFrame, objectives: Objectives, fidelity: str, count: int,
           among: Sequence[int] | None = None) -> list[int]:  # fmt: skip
    """The ``count`` best candidates at ``fidelity`` (their search rows' eval_ids), best first.

    Only successful rows at that fidelity count (of the candidates ``among``, when given). Whole
    non-dominated fronts are taken in turn; the front that does not fit whole is thinned by
    crowding distance, its extremes first. Ties go to the lower eval_id.
    """
    rows = frame[(frame["status"] == "ok") & (_fidelity(frame) == fidelity)]
    rows = rows.assign(candidate=candidate_ids(rows)).sort_values("eval_id").drop_duplicates("candidate")
    if among is not None:
        rows = rows[rows["candidate"].isin(list(among))]
    values = objectives.minimised(rows[list(objectives)].to_numpy(dtype=float))
    finite = np.isfinite(values).all(axis=1)
    ids, values = rows["candidate"].to_numpy()[finite], values[finite]
    chosen: list[int] = []
    remaining = np.arange(len(ids))
    while len(chosen) < count and len(remaining):
        layer = remaining[non_dominated_mask(values[remaining])]
        order = _by_crowding(values[layer], ids[layer])
        chosen += [int(ids[layer[i]]) for i in order[: count - len(chosen)]]
        remaining = np.setdiff1d(remaining, layer)
    return chosen


def _by_crowding(values: np.ndarray, ids: np.ndarray) -> list[int]:
    """Positions of one front, the least crowded first (NSGA-II's distance); ties by id.

    With one objective a front holds equal values only, so the order is by id.
    """
    distance = np.zeros(len(values))
    if len(values) > 2 and values.shape[1] > 1:
        for column in values.T:
            order = np.argsort(column, kind="stable")
            span = column[order[-1]] - column[order[0]]
            distance[order[[0, -1]]] = math.inf
            if span > 0:
                distance[order[1:-1]] += (column[order[2:]] - column[order[:-2]]) / span
    elif values.shape[1] > 1:
        distance[:] = math.inf
    return sorted(range(len(values)), key=lambda i: (-distance[i], int(ids[i])))


def _fidelity(frame: pd.DataFrame) -> pd.Series:
    return frame["fidelity"] if "fidelity" in frame else pd.Series(BASE, index=frame.index)


# ------------------------------------------------------------------------------------------------
# Scoring them


def score_finalists(
    config: SearchConfig,
    archive: Archive,
    plan: FinalistPlan,
    progress: bool = True,
    baselines: Sequence[int] = (),
) -> list[StageReport]:
    """Run every stage of ``plan`` on the run whose ``archive`` is given; returns what each did.

    ``baselines``: the eval_ids of the first population's baselines, scored beside each stage's
    finalists (once: a baseline that is a finalist is scored as one).
    """
    objectives = Objectives.of(config.objective_names)
    reports: list[StageReport] = []
    previous, among = BASE, None
    for stage in range(len(plan.counts)):
        frame = archive.frame()
        finalists = select(frame, objectives, previous, plan.counts[stage], among)
        if not finalists:
            logger.warning("no successful evaluation at fidelity %s: no finalists to score", previous)
            break
        rows = frame.set_index("eval_id")
        chain = _common_chain(plan, [candidate_of(row) for _, row in rows.loc[finalists].iterrows()])
        tokens = plan.windows(stage, config.seqlen) * config.seqlen
        fidelity = Fidelity(tokens, chain).label
        scored_ok = rows[rows["status"] == "ok"].index
        beside = [int(i) for i in baselines if i not in finalists and i in scored_ok]
        report = StageReport(fidelity, finalists, baselines=beside)
        wanted = finalists + beside
        todo = [eval_id for eval_id in wanted if not _scored(frame, eval_id, fidelity)]
        report.skipped = len(wanted) - len(todo)
        if todo:
            _score(config, archive, plan.windows(stage, config.seqlen), rows.loc[todo], chain, fidelity, report,
                   progress)  # fmt: skip
        report.best = _stage_best(archive.frame(), objectives, fidelity, finalists)
        logger.info("finalists at %s: %d scored, %d already scored, %d failed", fidelity, report.scored,
                    report.skipped, report.failed)  # fmt: skip
        reports.append(report)
        previous, among = fidelity, finalists
    return reports


def _common_chain(plan: FinalistPlan, candidates: Sequence[Candidate]) -> tuple[str, ...]:
    """One chain for a stage's finalists, so that they are all measured alike."""
    chains = {plan.chain(candidate.solvers) for candidate in candidates}
    if len(chains) > 1:
        raise InputError(f"the finalists name different solver chains ({', '.join(sorted(map(','.join, chains)))}): "
                         "choose one with --finalist-solver")  # fmt: skip
    return chains.pop()


def _scored(frame: pd.DataFrame, eval_id: int, fidelity: str) -> bool:
    """Whether a successful row at ``fidelity`` scores the search row ``eval_id`` already."""
    done = frame[(frame["status"] == "ok") & (_fidelity(frame) == fidelity)]
    return bool((candidate_ids(done) == eval_id).any())


def _score(config: SearchConfig, archive: Archive, windows: int, rows: pd.DataFrame, chain: tuple[str, ...],
           fidelity: str, report: StageReport, progress: bool) -> None:  # fmt: skip
    """Score ``rows``' candidates with ``chain`` on the pool, appending each result as it lands."""
    payloads = [replace(candidate_of(row), solvers=chain) for _, row in rows.iterrows()]
    inputs = applied_inputs(config, windows)
    bar = tqdm(total=len(payloads), desc=f"finalists {fidelity}", unit="cand", disable=not progress)
    source_ids = [int(eval_id) for eval_id in rows.index]

    def record(outcome: Outcome) -> None:
        row = rows.iloc[outcome.index]
        archive.append(
            generation=int(row["generation"]), genome=[float(v) for v in row["genome"]],
            candidate=payloads[outcome.index].to_dict(), objectives=outcome.objectives, worker=outcome.worker,
            node_id=outcome.node_id, seconds=outcome.seconds, status=outcome.status, error=outcome.error,
            fidelity=fidelity, source_id=source_ids[outcome.index],
        )  # fmt: skip
        report.scored += outcome.ok
        report.failed += not outcome.ok
        bar.update(1)

    with EvaluatorPool(
        AppliedEvaluator, (inputs,), workers=min(config.workers, len(payloads)),
        threads_per_worker=config.threads_per_worker, gpus_per_worker=config.gpus_per_worker,
        ray_address=config.ray_address,
    ) as pool:  # fmt: skip
        pool.evaluate(payloads, on_result=record)
    bar.close()


def applied_inputs(config: SearchConfig, windows: int) -> AppliedInputs:
    """What a finalist actor scores with: the search's calibration, and ``windows`` validation
    windows of its text, disjoint from the fitness windows and from that calibration; each
    ``objective@source`` on that source's tokens the search did not read."""
    calibration = (config.stats_nsamples or config.nsamples, config.stats_seqlen or config.seqlen, config.seed)
    fitness = (config.nsamples, config.seqlen, config.seed)
    return AppliedInputs(
        model_spec=config.model, calib=config.calib, calib_nsamples=calibration[0], calib_seqlen=calibration[1],
        calib_seed=config.seed, windows=windows, seqlen=config.seqlen, seed=config.seed + FINALIST_SEED_OFFSET,
        objectives=tuple(config.objective_names), sources=objective_sources(config), source_draw=source_draw(config),
        dtype=config.dtype,
        held_out=(fitness, calibration), global_rule=global_rule_of(config.base_metric),
    )  # fmt: skip


def _stage_best(frame: pd.DataFrame, objectives: Objectives, fidelity: str, finalists: list[int]) -> dict[str, Any]:
    """The stage's best finalist on the first objective: its rows' ids and objectives."""
    best = select(frame, Objectives.of([objectives.first]), fidelity, 1, finalists)
    if not best:
        return {}
    rows = frame[(_fidelity(frame) == fidelity) & (candidate_ids(frame) == best[0]) & (frame["status"] == "ok")]
    row = rows.iloc[-1]
    return {"eval_id": int(row["eval_id"]), "source_id": best[0], **{name: float(row[name]) for name in objectives}}


def _text(values: Sequence[int]) -> str:
    return ",".join(str(v) for v in values)
