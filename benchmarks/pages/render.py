"""Which page renders which results folder, and every page at once."""

from __future__ import annotations

import logging
from pathlib import Path

from benchmarks.pages.baselines import render_baselines
from benchmarks.pages.evaluator import render_evaluator
from benchmarks.pages.scaling import render_scaling
from benchmarks.pages.searched import render_searched
from benchmarks.pages.zeroshot import render_zeroshot
from benchmarks.studies import RESULTS, STUDIES

__all__ = ["render_all", "render_study"]

logger = logging.getLogger(__name__)

# The folders under results/ whose pages no plan study writes.
EVALUATOR, SCALING = "evaluator", "scaling"


def render_study(name: str, folder: Path, baselines: Path | None = None) -> None:
    """The page of the plan study ``name`` whose results are in ``folder``."""
    if name == "baselines":
        render_baselines(folder)
    elif name == "searched":
        render_searched(folder, baselines or folder.parent / STUDIES["baselines"].folder)
    else:
        render_zeroshot(folder)


def render_all(results: Path = RESULTS) -> None:
    """Every page (and figure) under ``results`` from its tables; nothing is measured."""
    for name, study in STUDIES.items():
        render_study(name, results / study.folder, results / STUDIES["baselines"].folder)
        logger.info("rendered %s", results / study.folder / "README.md")
    render_evaluator(results / EVALUATOR)
    render_scaling(results / SCALING)
    logger.info("rendered %s and %s", results / EVALUATOR / "README.md", results / SCALING / "README.md")
