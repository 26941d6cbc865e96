"""The ``paretoprune`` command: parse options, call a workflow, print the outcome.

Every command prints a human summary; with ``--json`` the last line of stdout is one JSON
object for scripts. Bad input (an :class:`InputError`) becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from paretoprune.errors import InputError

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Search, export and apply LLM pruning recipes (NSGA-III over metrics and layer sparsities).",
)

logger = logging.getLogger("paretoprune")

# Options shared by several commands.
ModelOpt = typer.Option(..., "--model", help="alias (smollm2-135m), folder, .gguf file or hub id")
CalibOpt = typer.Option("builtin", "--calib", help="calibration text: a file, builtin, wikitext2, c4, ptb")
NsamplesOpt = typer.Option(128, "--nsamples", help="calibration windows")
SeqlenOpt = typer.Option(2048, "--seqlen", help="tokens per window")
SeedOpt = typer.Option(0, "--seed", help="random seed")
EvalOpt = typer.Option(None, "--eval", help="text source for perplexity after pruning")
MaxWindowsOpt = typer.Option(None, "--max-windows", help="evaluate at most this many windows")
JsonOpt = typer.Option(False, "--json", help="print one JSON object as the last line")
QuietOpt = typer.Option(False, "--quiet", "-q", help="no progress bars")


def _emit(summary: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    for line in lines:
        typer.echo(line)
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True))


def _format_ppl(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@app.command()
def prune(
    model: str = ModelOpt,
    method: str = typer.Option("wanda", "--method", help="magnitude | wanda | ria | sparsegpt"),
    sparsity: Optional[float] = typer.Option(None, "--sparsity", help="fraction pruned, e.g. 0.5"),
    structure: Optional[str] = typer.Option(None, "--structure", help="N:M, e.g. 2:4"),
    allocation: str = typer.Option("uniform", "--allocation", help="uniform | owl"),
    calib: str = CalibOpt,
    nsamples: int = NsamplesOpt,
    seqlen: int = SeqlenOpt,
    seed: int = SeedOpt,
    sequential: bool = typer.Option(False, "--sequential", help="calibrate on pruned blocks' outputs"),
    save: Optional[Path] = typer.Option(None, "--save", help="folder for the pruned model"),
    eval: Optional[str] = EvalOpt,
    max_windows: Optional[int] = MaxWindowsOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Prune a model with a known method and report the sparsity (and perplexity)."""
    from paretoprune.workflows import PruneConfig, prune as run

    config = PruneConfig(
        model=model, method=method, sparsity=sparsity, structure=structure,
        allocation=allocation, calib=calib, nsamples=nsamples, seqlen=seqlen, seed=seed,
        sequential=sequential, save=save, eval=eval, max_windows=max_windows, progress=not quiet,
    )  # fmt: skip
    result = run(config)
    lines = [f"sparsity   {result.sparsity:.4f}  ({method}, {structure or allocation})"]
    if result.perplexity is not None:
        lines.append(f"perplexity {_format_ppl(result.perplexity)}  ({result.tokens} tokens of {eval})")
    if result.saved:
        lines.append(f"saved      {result.saved}")
    _emit(result.summary(), as_json, lines)


@app.command("eval")
def eval_command(
    model: str = ModelOpt,
    data: str = typer.Option(..., "--data", help="text source: a file, builtin, wikitext2, c4, ptb"),
    seqlen: int = SeqlenOpt,
    max_windows: Optional[int] = MaxWindowsOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Perplexity of a model on a text source (non-overlapping windows)."""
    from paretoprune.workflows import EvalConfig, evaluate

    config = EvalConfig(
        model=model, data=data, seqlen=seqlen, max_windows=max_windows, progress=not quiet
    )
    result = evaluate(config)
    lines = [f"perplexity {_format_ppl(result.perplexity)}  ({result.tokens} tokens, {result.windows} windows)"]
    _emit(result.summary(), as_json, lines)


def _configure_logging() -> None:
    level = os.environ.get("PARETOPRUNE_LOG", "WARNING").upper()
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # transformers and friends are chatty on stderr; keep their warnings, drop the info lines.
    for noisy in ("transformers", "accelerate", "ray"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def _run(entry: Callable[[], Any]) -> int:
    """Run a command and map how it ended to an exit code."""
    import click

    try:
        returned = entry()
    except InputError as error:
        typer.echo(f"error: {error}", err=True)
        return 2
    except click.exceptions.ClickException as error:  # a usage error: unknown option, bad type
        typer.echo(f"error: {error.format_message()}", err=True)
        return 2
    except (KeyboardInterrupt, click.exceptions.Abort):
        typer.echo("interrupted", err=True)
        return 130
    return returned if isinstance(returned, int) else 0


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point."""
    _configure_logging()
    command = typer.main.get_command(app)
    sys.exit(_run(lambda: command.main(args=argv, prog_name="paretoprune", standalone_mode=False)))
