"""The tokens of ``objective@source`` objectives: those a search scores, and those its finalists
are validated on.

A source is text (a file, builtin, wikitext2, ...: seeded windows of its calibration split) or a
zero-shot task (the right answers of the task's calibration examples, written out). The search
reads ``nsamples`` of them. The finalist stage must measure on tokens the search never saw, as it
does for the fitness text: other windows of the same text, drawn where none of the search's lie,
or the task's calibration examples after those the search read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paretoprune.data import calibration_windows, held_out_windows, padded_batch
from paretoprune.errors import InputError
from paretoprune.evaluators.fitness import FitnessTokens
from paretoprune.evaluators.zeroshot_tasks import example_text, load_task, split_indices, task_names

__all__ = ["SourceDraw", "fitness_sources", "held_out_sources"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceDraw:
    """How a search draws its sources' tokens: its ``--nsamples``, ``--seqlen`` and ``--seed``,
    and where its tasks live (``--task-dir``, ``--task-calib-fraction``)."""

    nsamples: int
    seqlen: int
    seed: int
    task_dir: str | None = None
    task_calib_fraction: float = 0.5

    @property
    def windows(self) -> tuple[int, int, int]:
        """The (windows, seqlen, seed) draw of a text source, as :func:`held_out_windows` names one."""
        return (self.nsamples, self.seqlen, self.seed)


def fitness_sources(tokenizer: Any, sources: Iterable[str], draw: SourceDraw) -> dict[str, FitnessTokens]:
    """The tokens a search scores each source on: ``draw.nsamples`` windows or examples."""
    tokens: dict[str, FitnessTokens] = {}
    for source in dict.fromkeys(sources):
        if source in task_names():
            tokens[source] = _padded(tokenizer, source, _calibration_texts(source, draw)[: draw.nsamples], draw)
        else:
            tokens[source] = FitnessTokens(calibration_windows(tokenizer, source, *draw.windows))
    return tokens


def held_out_sources(tokenizer: Any, sources: Iterable[str], draw: SourceDraw, count: int, seed: int,
                     taken: dict[str, tuple[tuple[int, int, int], ...]] | None = None) -> dict[str, FitnessTokens]:  # fmt: skip
    """Tokens of each source that the search's ``draw`` did not read: ``count`` windows of a
    text, seeded with ``seed``, disjoint from the search's windows (and from the draws ``taken``
    names for that text, e.g. the calibration of the same file); a task's calibration examples
    after the search's ``draw.nsamples``, up to ``count``. A task whose calibration examples the
    search read all is scored on those, with a warning: they are all there is."""
    tokens: dict[str, FitnessTokens] = {}
    for source in dict.fromkeys(sources):
        if source in task_names():
            tokens[source] = _held_out_task(tokenizer, source, draw, count)
        else:
            avoid = (draw.windows, *_taken_from(source, taken or {}))
            tokens[source] = FitnessTokens(held_out_windows(tokenizer, source, count, draw.seqlen, seed, avoid))
    return tokens


def _taken_from(source: str, taken: dict[str, tuple[tuple[int, int, int], ...]]) -> list[tuple[int, int, int]]:
    """The draws ``taken`` names for ``source``'s text, however its path is spelled."""
    return [draw for text, draws in taken.items() if _same_text(source, text) for draw in draws]


def _same_text(first: str, second: str) -> bool:
    """Whether two source names read the same text: equal, or paths of the same file."""
    if first == second:
        return True
    one, other = Path(first).expanduser(), Path(second).expanduser()
    return one.is_file() and other.is_file() and one.resolve() == other.resolve()


def _held_out_task(tokenizer: Any, task: str, draw: SourceDraw, count: int) -> FitnessTokens:
    texts = _calibration_texts(task, draw)
    held = texts[draw.nsamples : draw.nsamples + count]
    if not held:
        logger.warning("task %s: the search read every calibration example, so its finalists are scored on those; "
                       "raise --task-calib-fraction to hold some out", task)  # fmt: skip
        held = texts[: draw.nsamples]
    return _padded(tokenizer, task, held, draw)


def _calibration_texts(task: str, draw: SourceDraw) -> list[str]:
    """The right answers of a task's calibration examples, written out, in the split's order."""
    if draw.task_dir is None:
        raise InputError(f"objective @{task} needs the task files: pass --task-dir DIR")
    examples = load_task(task, Path(draw.task_dir)).examples
    calibration, _ = split_indices(len(examples), draw.task_calib_fraction, draw.seed)
    return [example_text(examples[i]) for i in calibration]


def _padded(tokenizer: Any, task: str, texts: list[str], draw: SourceDraw) -> FitnessTokens:
    """``texts`` padded into one batch of at most ``draw.seqlen`` tokens a row."""
    if not texts:
        raise InputError(f"task {task} has no calibration examples: raise --task-calib-fraction")
    return FitnessTokens(*padded_batch(tokenizer, texts, draw.seqlen))
