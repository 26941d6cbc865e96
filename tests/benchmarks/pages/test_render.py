"""The committed results: every table reads with its schema, and every page is what its tables render."""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks.pages.render import render_all
from benchmarks.studies import RESULTS


def test_the_committed_pages_are_rendered_from_the_committed_tables(tmp_path: Path) -> None:
    copy = tmp_path / "results"
    shutil.copytree(RESULTS, copy, ignore=shutil.ignore_patterns("*.png"))
    render_all(copy)
    pages = sorted(RESULTS.rglob("*.md"))
    assert pages
    for page in pages:
        rendered = copy / page.relative_to(RESULTS)
        assert rendered.read_text() == page.read_text(), f"{page} is not what its tables render: python -m benchmarks pages"
