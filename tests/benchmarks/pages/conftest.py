"""A protocol for the page tests: the one the reference results state, with made-up hashes."""

from __future__ import annotations

from benchmarks.model_record import ModelRecord
from benchmarks.protocol import CALIBRATION_FILE, EVALUATION_FILES, DataFile, Protocol, Windows
from benchmarks.searches import Budget


def protocol(sets: tuple[str, ...] = ("wikitext2",), command: str = "python -m benchmarks baselines",
             budget: Budget | None = None, eval_windows: int = 32) -> Protocol:  # fmt: skip
    return Protocol(
        model=ModelRecord("smollm2-135m", "model.gguf", "ab" * 32, "llama-30", blocks=30, linears=210),
        windows=Windows(eval_windows=eval_windows),
        calibration=DataFile(CALIBRATION_FILE, "cd" * 32, "ef" * 32),
        evaluation={name: DataFile(EVALUATION_FILES[name], "01" * 32, "01" * 32) for name in sets},
        eval_tokens={name: eval_windows * 511 for name in sets},
        budget=budget,
        command=command,
    )
