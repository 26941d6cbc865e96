"""The one resumable runner: measure the planned rows of a study that its table lacks.

For each selected plan row not yet in the study's table, in plan order: prune a freshly loaded
model as the row says (a searched row first needs its recipe, see ``search_step.py``), measure
it, and write the table and the page again. A killed run resumes where it stopped: the table is
written whole after every row, and measured rows are skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from paretoprune.errors import InputError

from benchmarks.measurement import Measurement, SearchFacts
from benchmarks.model_record import SMOLLM2_ALIAS
from benchmarks.pages.render import render_study
from benchmarks.perplexity import measure_perplexity
from benchmarks.plan import Pruning, planned, select
from benchmarks.protocol import PROTOCOL_FILE, Protocol, Windows, protocol_differences, read_protocol, write_protocol
from benchmarks.pruned import Pruned, prune_fresh
from benchmarks.search_figures import SearchFigures
from benchmarks.search_step import SearchStep
from benchmarks.searches import Budget, SearchSpec
from benchmarks.studies import Study
from benchmarks.table import read_table, write_table
from benchmarks.workbench import Workbench, prepare
from benchmarks.zeroshot import ZeroShotScore, score_tasks

__all__ = ["Filters", "RunOptions", "run_study"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Filters:
    """Which planned rows this run measures (an empty filter keeps all; see plan.select)."""

    only: tuple[str, ...] = ()  # names: dense, wanda, owl-wanda, wanda-update, a search's name
    shapes: tuple[str, ...] = ()  # sparsities or structures: 0.7, 2:4
    pruners: tuple[str, ...] = ()  # wanda, sparsegpt, recipe, update, ...
    calibrations: tuple[str, ...] = ()  # one-shot, sequential


@dataclass(frozen=True)
class RunOptions:
    out: Path  # the study's results folder
    runs: Path  # its searches' run folders
    data_dir: Path  # the shared data folder
    model: str = SMOLLM2_ALIAS  # what load_model is given
    windows: Windows = field(default_factory=Windows)
    budget: Budget | None = None  # each search's (None: the study's own)
    batch_size: int = 4  # windows per forward pass
    filters: Filters = field(default_factory=Filters)
    baselines: Path | None = None  # the baselines results the searched page compares with
    tasks: tuple[str, ...] = ()  # zero-shot tasks (the zero-shot study)
    task_limit: int | None = None  # examples per task
    command: str = ""  # what makes (or finishes) this table, for its page


def run_study(study: Study, options: RunOptions) -> list[Any]:
    """Measure the study's missing rows; returns every row of its table."""
    filters = options.filters
    selected = select(planned(study.name), filters.only, filters.shapes, filters.pruners, filters.calibrations)
    if study.budget is not None and options.budget is None:
        options = replace(options, budget=study.budget)
    workbench, protocol = prepare(study, options.model, options.data_dir, options.windows, options.budget,
                                  options.batch_size, options.command, options.tasks, options.task_limit)  # fmt: skip
    _check_protocol(options.out, protocol)
    write_protocol(options.out / PROTOCOL_FILE, protocol)
    return _Runner(study, options, workbench, protocol).run(selected)


def _check_protocol(out: Path, protocol: Protocol) -> None:
    stored = read_protocol(out / PROTOCOL_FILE)
    differences = [] if stored is None else protocol_differences(stored, protocol)
    if differences:
        raise InputError(f"{out} was measured with other settings ({'; '.join(differences[:3])}); "
                         "choose another --out or delete its table and protocol.json")  # fmt: skip


class _Runner:
    def __init__(self, study: Study, options: RunOptions, workbench: Workbench, protocol: Protocol) -> None:
        self.study, self.options, self.workbench, self.protocol = study, options, workbench, protocol
        self.row_type: type = ZeroShotScore if study.zero_shot else Measurement
        self.path = options.out / study.table
        self.planned = planned(study.name)
        self.rows: list[Any] = read_table(self.path, self.row_type)
        figures = SearchFigures(options.out, workbench) if study.search_figures else None
        windows = options.windows
        stats = (windows.calib_nsamples, windows.calib_seqlen) if study.search_stats else None
        self.step = SearchStep(options.out, options.runs, workbench, options.budget or Budget(), windows.seed, stats,
                               self._earlier_facts, needs_facts=not study.zero_shot, figures=figures)  # fmt: skip

    def run(self, selected: Sequence[Pruning]) -> list[Any]:
        done = {row.pruning for row in self.rows}
        todo_count = sum(pruning not in done for pruning in selected)
        logger.info("%s: %d of %d planned rows present, %d to measure; out: %s", self.study.name,
                    len(done & set(self.planned)), len(self.planned), todo_count, self.options.out)  # fmt: skip
        self._save()
        with logging_redirect_tqdm(), tqdm(total=todo_count, desc=self.study.name, unit="row") as progress:
            for spec, group in _by_search(selected):
                todo = [pruning for pruning in group if pruning not in done]
                sources = self.step.recipes(spec, todo) if spec is not None else {}
                for pruning in todo:
                    source = sources.get(pruning.target_sparsity)
                    pruned = prune_fresh(pruning, self.workbench, source.recipe if source else None)
                    self._add(self._score(pruning, pruned, source.facts if source else None))
                    logger.info("%s: measured in %.0f s", pruning.describe(), pruned.seconds)
                    progress.update()
        self._save()  # a search resumed without missing rows may have added to the figures
        return self.rows

    def _score(self, pruning: Pruning, pruned: Pruned, facts: SearchFacts | None) -> list[Any]:
        if self.study.zero_shot:
            task_dir = self.options.data_dir / "zeroshot"
            return score_tasks(pruning, pruned, self.protocol.tasks, task_dir, self.protocol.task_limit,
                               self.workbench.batch_size)  # fmt: skip
        return measure_perplexity(pruning, pruned, self.workbench, self.protocol, facts)

    def _add(self, new: Sequence[Any]) -> None:
        order = {pruning: index for index, pruning in enumerate(self.planned)}
        self.rows = sorted([*self.rows, *new], key=lambda row: order.get(row.pruning, len(order)))
        self._save()

    def _save(self) -> None:
        """Write the table and its page; the rows are then what the table holds (rounded)."""
        write_table(self.path, self.rows, self.row_type)
        self.rows = read_table(self.path, self.row_type)
        render_study(self.study.name, self.options.out, self.options.baselines)

    def _earlier_facts(self, search: str, level: float) -> SearchFacts | None:
        found = (row.search for row in self.rows if isinstance(row, Measurement) and row.search is not None
                 and row.pruning.source == search and row.pruning.target_sparsity == level)  # fmt: skip
        return next(found, None)


def _by_search(prunings: Sequence[Pruning]) -> list[tuple[SearchSpec | None, list[Pruning]]]:
    """The prunings in order, those of one search together (others alone, without a search)."""
    groups: list[tuple[SearchSpec | None, list[Pruning]]] = []
    for pruning in prunings:
        spec = pruning.search
        if spec is not None and groups and groups[-1][0] == spec:
            groups[-1][1].append(pruning)
        else:
            groups.append((spec, [pruning]))
    return groups

