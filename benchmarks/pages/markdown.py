"""Markdown pieces the pages share: tables, templates, and the list of rows not yet measured."""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from pathlib import Path

from benchmarks.plan import Pruning
from benchmarks.protocol import EVALUATION_NAMES, Protocol

__all__ = ["MISSING", "fill", "missing_section", "protocol_values", "table"]

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
MISSING = "–"  # a value not measured yet


def fill(template: str, **values: object) -> str:
    """The template ``templates/<template>`` with every ``$name`` replaced by ``values[name]``.

    Values are placed as they are: a table or a paragraph ends without a newline, so that it
    sits on its own lines of the template.
    """
    text = (TEMPLATES / template).read_text(encoding="utf-8")
    return string.Template(text).substitute({name: str(value) for name, value in values.items()})


def table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str, compact: bool = False) -> str:
    """A Markdown table; ``align`` has an ``l`` or ``r`` per column. ``compact`` writes the rule
    without spaces (``|---|---:|``)."""
    rules = ["---:" if side == "r" else "---" for side in align]
    rule = "|" + "|".join(rules) + "|" if compact else "| " + " | ".join(rules) + " |"
    lines = ["| " + " | ".join(header) + " |", rule, *("| " + " | ".join(row) + " |" for row in rows)]
    return "\n".join(lines)


def missing_section(planned: Sequence[Pruning], done: set[Pruning], command: str) -> str:
    """Which planned rows are not measured yet, and the command that measures them."""
    missing = [pruning for pruning in planned if pruning not in done]
    if not missing:
        return fill("complete.md", planned=len(planned)).rstrip("\n")
    listed = "\n".join(f"- {pruning.describe()}" for pruning in missing)
    return fill("missing.md", present=len(planned) - len(missing), planned=len(planned), listed=listed,
                command=command).rstrip("\n")  # fmt: skip


def protocol_values(protocol: Protocol) -> dict[str, object]:
    """What a template may quote from a protocol: ``$model_sha256``, ``$wikitext2_tokens``, ..."""
    model, windows, calibration = protocol.model, protocol.windows, protocol.calibration
    values: dict[str, object] = {
        "model_spec": model.spec, "model_file": model.file, "model_sha256": model.sha256,
        "model_fingerprint": model.fingerprint, "model_blocks": model.blocks, "model_linears": model.linears,
        "calibration_file": calibration.path, "calibration_sha256": calibration.sha256,
        "calibration_text_sha256": calibration.text_sha256, "calib_nsamples": windows.calib_nsamples,
        "calib_seqlen": windows.calib_seqlen, "seed": windows.seed, "eval_windows": windows.eval_windows,
        "eval_seqlen": windows.eval_seqlen, "command": protocol.command, "task_limit": protocol.task_limit,
    }  # fmt: skip
    for name, item in protocol.evaluation.items():
        values |= {f"{name}_file": item.path, f"{name}_sha256": item.sha256, f"{name}_name": EVALUATION_NAMES[name],
                   f"{name}_tokens": protocol.eval_tokens[name]}  # fmt: skip
    if protocol.budget is not None:
        budget = protocol.budget
        values |= {"pop": budget.pop, "generations": budget.generations, "workers": budget.workers,
                   "search_nsamples": budget.nsamples, "search_seqlen": budget.seqlen}  # fmt: skip
    return values
