"""What every row of a study shares: the model it loads afresh, and its tokens, cut once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from paretoprune.data import calibration_windows, evaluation_windows, load_text
from paretoprune.models import find_layout, load_model

from benchmarks.model_record import describe_model, file_sha256
from benchmarks.protocol import CALIBRATION_FILE, EVALUATION_FILES, DataFile, Protocol, Windows, data_file
from benchmarks.searches import Budget
from benchmarks.studies import Study

__all__ = ["Workbench", "prepare"]


@dataclass
class Workbench:
    model: str  # what load_model is given: every row prunes a freshly loaded copy
    calibration_file: Path  # the C4 train sample (the searches read it themselves)
    calibration: torch.Tensor  # LongTensor[calib_nsamples, calib_seqlen]
    evaluation: dict[str, torch.Tensor]  # by set: LongTensor[eval_windows, eval_seqlen]
    batch_size: int  # windows per forward pass
    truth_dir: Path | None = None  # true/false statement sets (TPLO's allocation)
    seed: int = 0  # the calibration windows' seed


def prepare(study: Study, model: str, data_dir: Path, windows: Windows, budget: Budget | None,
            batch_size: int, command: str, tasks: tuple[str, ...] = (), task_limit: int | None = None,
            ) -> tuple[Workbench, Protocol]:  # fmt: skip
    """Tokenize the calibration and evaluation texts once and describe the protocol.

    The model loaded here only lends its tokenizer and its shape to the protocol.
    """
    calib_path = data_file(data_dir, CALIBRATION_FILE)
    eval_paths = {name: data_file(data_dir, EVALUATION_FILES[name]) for name in study.sets}
    loaded = load_model(model)
    calib_text = load_text(calib_path, "calibration")
    eval_texts = {name: load_text(path) for name, path in eval_paths.items()}
    calibration = calibration_windows(loaded.tokenizer, calib_text, windows.calib_nsamples, windows.calib_seqlen,
                                      windows.seed)  # fmt: skip
    evaluation = {name: evaluation_windows(loaded.tokenizer, text, windows.eval_seqlen, windows.eval_windows)
                  for name, text in eval_texts.items()}  # fmt: skip
    protocol = Protocol(
        model=describe_model(model, loaded.model, find_layout(loaded.model)),
        windows=windows,
        calibration=DataFile(CALIBRATION_FILE, file_sha256(calib_path), calib_text.sha256),
        evaluation={name: DataFile(EVALUATION_FILES[name], file_sha256(eval_paths[name]), text.sha256)
                    for name, text in eval_texts.items()},  # fmt: skip
        eval_tokens={name: int(tokens.shape[0]) * (windows.eval_seqlen - 1) for name, tokens in evaluation.items()},
        budget=budget,
        tasks=tasks,
        task_limit=task_limit,
        command=command,
    )
    truth_dir = data_dir / "truth"
    workbench = Workbench(model, calib_path, calibration, evaluation, batch_size,
                          truth_dir if truth_dir.is_dir() else None, windows.seed)  # fmt: skip
    return workbench, protocol
