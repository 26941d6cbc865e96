"""CPU latency per generated token of test-time (μ-MoE) pruning against the dense model.

``python -m benchmarks.runtime_latency --model smollm2-135m --ratio 0.5``

For each prompt the masks are made once from its context (the structured variant keeps whole
input channels, so every linear multiplies a smaller matrix); then the continuation is decoded
greedily, one token per forward pass with the key/value cache, as a chat model generates. The
dense model, the structured variant and the unstructured one (same shapes as dense, zeros in
them: no speed-up expected) decode the same prompts in one process, interleaved in a rotating
order so that load from other processes falls on all of them alike. Reported: the median
seconds per decoded token of each, their ratio to dense, and what the masks cost per prompt.
Timings are a measurement, never a test.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from paretoprune.data import evaluation_windows
from paretoprune.errors import InputError
from paretoprune.evaluators.runtime_pruning import TestTimePruner, check_ratio
from paretoprune.models import find_layout, load_model

__all__ = ["LatencyReport", "decode_seconds", "main", "measure"]

logger = logging.getLogger("benchmarks.runtime_latency")

VARIANTS = ("dense", "structured", "unstructured")


@dataclass(frozen=True)
class LatencyReport:
    """Median seconds per decoded token of each variant, with the settings that produced them."""

    model: str
    ratio: float
    prompts: int
    context_tokens: int
    new_tokens: int
    repeats: int
    threads: int
    per_token_s: dict[str, float]  # variant -> median seconds per decoded token
    ratio_to_dense: dict[str, float]  # variant -> its per-token time / dense's
    mask_s: dict[str, float]  # variant -> median seconds to make one prompt's masks

    def lines(self) -> list[str]:
        """A short table for people."""
        rows = [f"{self.model}: {self.prompts} prompts x {self.repeats} repeats, {self.context_tokens} context tokens, "
                f"{self.new_tokens} decoded tokens each, {self.threads} threads, active ratio {self.ratio}"]  # fmt: skip
        for variant, seconds in self.per_token_s.items():
            masks = f", masks {self.mask_s[variant] * 1e3:.1f} ms per prompt" if variant in self.mask_s else ""
            rows.append(f"{variant:<13} {seconds * 1e3:8.2f} ms per token  ({self.ratio_to_dense[variant]:.3f}x dense{masks})")
        return rows


def _cache_name(model: nn.Module) -> str:
    """The keyword of the key/value cache: ``cache`` in newer transformers, else ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.inference_mode()
def decode_seconds(model: nn.Module, context: torch.Tensor, new_tokens: int) -> float:
    """Seconds per token of greedy decoding after ``context`` (the prefill is not timed)."""
    name = _cache_name(model)
    out = model(input_ids=context[None, :], use_cache=True)
    cache, token = out[name], out.logits[:, -1:].argmax(-1)
    started = time.perf_counter()
    for _ in range(new_tokens):
        out = model(input_ids=token, use_cache=True, **{name: cache})
        cache, token = out[name], out.logits[:, -1:].argmax(-1)
    return (time.perf_counter() - started) / new_tokens


def measure(
    model: nn.Module,
    contexts: Sequence[torch.Tensor],
    ratio: float,
    new_tokens: int = 32,
    repeats: int = 3,
    name: str = "model",
) -> LatencyReport:
    """Decode every context with each variant, interleaved, ``repeats`` times; medians per token."""
    check_ratio(ratio)
    if new_tokens < 1 or repeats < 1 or not contexts:
        raise InputError("give at least one prompt, one new token and one repeat")
    layout = find_layout(model)
    pruners: dict[str, TestTimePruner | None] = {
        "dense": None,
        "structured": TestTimePruner(model, layout, ratio, structured=True),
        "unstructured": TestTimePruner(model, layout, ratio, structured=False),
    }
    per_token: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    masks: dict[str, list[float]] = {variant: [] for variant in VARIANTS if variant != "dense"}
    decode_seconds(model, contexts[0], 2)  # warm-up: first calls allocate
    for repeat in range(repeats):
        for index, context in enumerate(contexts):
            shift = (repeat + index) % len(VARIANTS)  # rotate who goes first
            for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                pruner = pruners[variant]
                with _masks_of(pruner, context, masks.get(variant)):
                    per_token[variant].append(decode_seconds(model, context, new_tokens))
    medians = {variant: statistics.median(values) for variant, values in per_token.items()}
    return LatencyReport(
        model=name, ratio=ratio, prompts=len(contexts), context_tokens=int(contexts[0].numel()), new_tokens=new_tokens,
        repeats=repeats, threads=torch.get_num_threads(), per_token_s=medians,
        ratio_to_dense={variant: value / medians["dense"] for variant, value in medians.items()},
        mask_s={variant: statistics.median(values) for variant, values in masks.items()},
    )  # fmt: skip


def _masks_of(pruner: TestTimePruner | None, context: torch.Tensor, sink: list[float] | None) -> AbstractContextManager:
    """The dense model as it is (no pruner), or the pruner's masks for ``context``, timed into ``sink``."""
    if pruner is None:
        return nullcontext()
    return _TimedMasks(pruner, context, sink if sink is not None else [])


class _TimedMasks:
    """``pruner.masked(context)``, recording how long making the masks took."""

    def __init__(self, pruner: TestTimePruner, context: torch.Tensor, sink: list[float]) -> None:
        self._inner = pruner.masked(context)
        self._sink = sink

    def __enter__(self) -> None:
        started = time.perf_counter()
        self._inner.__enter__()
        self._sink.append(time.perf_counter() - started)

    def __exit__(self, *exc: object) -> None:
        self._inner.__exit__(*exc)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.runtime_latency", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="model spec (alias, folder, hub id)")
    parser.add_argument("--ratio", type=float, default=0.5, help="active ratio kept per prompt, in (0, 1]")
    parser.add_argument("--data", default="builtin", help="text the prompts are cut from")
    parser.add_argument("--prompts", type=int, default=4, help="prompts (windows of --context tokens)")
    parser.add_argument("--context", type=int, default=256, help="context tokens per prompt")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens decoded per prompt")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the prompts")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    return parser


def main(argv: Sequence[str] | None = None, on_report: Callable[[LatencyReport], None] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = _parser().parse_args(argv)
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        loaded = load_model(args.model, dtype="float32")
        windows = evaluation_windows(loaded.tokenizer, args.data, args.context, args.prompts)
        report = measure(loaded.model, list(windows), args.ratio, args.new_tokens, args.repeats, name=args.model)
    except InputError as error:
        logger.error("error: %s", error)
        return 2
    for line in report.lines():
        logger.info(line)
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    if on_report is not None:
        on_report(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
