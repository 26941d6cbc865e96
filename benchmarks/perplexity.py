"""The perplexity studies' measurement: a pruned model scored on every evaluation set."""

from __future__ import annotations

import time

from paretoprune.evaluators.perplexity import perplexity

from benchmarks.measurement import Measurement, SearchFacts
from benchmarks.plan import Pruning
from benchmarks.protocol import Protocol
from benchmarks.pruned import Pruned
from benchmarks.workbench import Workbench

__all__ = ["measure_perplexity"]


def measure_perplexity(pruning: Pruning, pruned: Pruned, workbench: Workbench, protocol: Protocol,
                       facts: SearchFacts | None) -> list[Measurement]:  # fmt: skip
    """Perplexity on each of the study's sets; each must score the tokens its protocol states."""
    started = time.perf_counter()
    scores = {}
    for name, windows in workbench.evaluation.items():
        scored = perplexity(pruned.loaded.model, windows, batch_size=workbench.batch_size, progress=False)
        if scored.tokens != protocol.eval_tokens[name]:
            raise RuntimeError(f"{name}: scored {scored.tokens} tokens, the protocol says {protocol.eval_tokens[name]}")
        scores[name] = scored.perplexity
    seconds = time.perf_counter() - started
    return [Measurement(pruning, pruned.sparsity, scores["wikitext2"], scores.get("ptb"), scores.get("c4"),
                        pruned.seconds, seconds, facts)]  # fmt: skip
