"""Long-context retrieval: does the model give back the pass key it read (ACBench's long context).

The score of one prompt is the exact match of the greedy answer. Greedy decoding returns the
key exactly when, at every answer position, the most likely next token given the true answer
so far is the key's own token: a mismatch at the first wrong position is where greedy
decoding would leave the key. So one teacher-forced forward pass over prompt and answer
decides it, with no generation loop; only the answer positions go through the output head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from paretoprune.errors import InputError
from paretoprune.models import check_context, final_hidden_states, logits_from_hidden
from paretoprune.passkey import PasskeyPrompt

__all__ = ["PasskeyGrid", "passkey_found", "passkey_grid", "plot_passkey_grids"]


@dataclass(frozen=True)
class PasskeyGrid:
    """Exact-match accuracy per (length, depth) cell: rows are lengths, columns depths."""

    lengths: tuple[int, ...]
    depths: tuple[float, ...]
    accuracy: np.ndarray  # [len(lengths), len(depths)]
    trials: int

    @property
    def mean(self) -> float:
        return float(self.accuracy.mean())

    def to_dict(self) -> dict[str, object]:
        return {"lengths": list(self.lengths), "depths": list(self.depths), "trials": self.trials,
                "accuracy": self.accuracy.round(6).tolist(), "mean": round(self.mean, 6)}  # fmt: skip


@torch.inference_mode()
def passkey_found(model: nn.Module, prompt: PasskeyPrompt) -> bool:
    """Whether greedy decoding after the prompt would write exactly the key's tokens."""
    device = next(model.parameters()).device
    ids = torch.cat([prompt.input_ids, prompt.answer_ids]).to(device)[None, :]
    hidden = final_hidden_states(model, ids)[0]
    # Position p predicts token p + 1: the answer's tokens are predicted from the prompt's last
    # position up to the answer's second to last.
    answer_hidden = hidden[prompt.length - 1 : prompt.length - 1 + prompt.answer_ids.numel()]
    predicted = logits_from_hidden(model, answer_hidden).float().argmax(dim=-1).cpu()
    return bool(torch.equal(predicted, prompt.answer_ids))


def passkey_grid(
    model: nn.Module, prompts: Mapping[tuple[int, float], Sequence[PasskeyPrompt]], progress: bool = True
) -> PasskeyGrid:
    """Score every prompt of a grid made by :func:`paretoprune.passkey.passkey_prompts`."""
    if not prompts:
        raise InputError("the passkey grid is empty: give at least one length and one depth")
    lengths = tuple(sorted({length for length, _ in prompts}))
    depths = tuple(sorted({depth for _, depth in prompts}))
    longest = max(prompt.length + prompt.answer_ids.numel() for cell in prompts.values() for prompt in cell)
    check_context(model.config, {"--passkey-lengths": longest})
    trials = min(len(cell) for cell in prompts.values())
    accuracy = np.zeros((len(lengths), len(depths)))
    bar = tqdm(total=sum(len(cell) for cell in prompts.values()), desc="passkey", disable=not progress)
    for (length, depth), cell in prompts.items():
        found = [passkey_found(model, prompt) for prompt in cell]
        accuracy[lengths.index(length), depths.index(depth)] = float(np.mean(found))
        bar.update(len(cell))
    bar.close()
    return PasskeyGrid(lengths, depths, accuracy, trials)


def plot_passkey_grids(grids: Mapping[str, PasskeyGrid], path: str | Path) -> Path:
    """One heat map per model (e.g. dense and pruned), side by side, written to ``path``."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from paretoprune.io import atomic_write_bytes

    figure, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids) + 1, 3.2), squeeze=False)
    for axis, (title, grid) in zip(axes[0], grids.items()):
        image = axis.imshow(grid.accuracy, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
        axis.set_xticks(range(len(grid.depths)), [f"{d:.0%}" for d in grid.depths])
        axis.set_yticks(range(len(grid.lengths)), [str(n) for n in grid.lengths])
        axis.set(title=f"{title} (mean {grid.mean:.2f})", xlabel="depth", ylabel="length (tokens)")
    figure.colorbar(image, ax=axes[0].tolist(), label="exact match")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return atomic_write_bytes(path, buffer.getvalue())
