"""Passkey scoring: one teacher-forced pass decides what greedy decoding would write."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from paretoprune.data import tokenize
from paretoprune.errors import InputError
from paretoprune.evaluators.passkey import PasskeyGrid, passkey_found, passkey_grid, plot_passkey_grids
from paretoprune.passkey import passkey_prompt, passkey_prompts
from paretoprune.testing import byte_tokenizer, tiny_model


def _greedy(model, ids: torch.Tensor, steps: int) -> torch.Tensor:
    """What greedy decoding writes after ``ids``: the naive loop, one full forward per token."""
    out = ids.clone()
    for _ in range(steps):
        with torch.no_grad():
            logits = model(out[None, :]).logits[0, -1]
        out = torch.cat([out, logits.argmax().view(1)])
    return out[ids.numel():]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_found_exactly_when_greedy_decoding_writes_the_answer(family: str) -> None:
    model, tokenizer = tiny_model(family), byte_tokenizer()
    prompt = passkey_prompt(tokenizer, tokenize(tokenizer, "builtin"), 240, 0.5, random.Random(3))
    greedy = _greedy(model, prompt.input_ids, prompt.answer_ids.numel())
    assert passkey_found(model, replace(prompt, answer_ids=greedy))
    for position in range(greedy.numel()):  # one wrong token anywhere: not found
        wrong = greedy.clone()
        wrong[position] = (wrong[position] + 1) % model.config.vocab_size
        assert not passkey_found(model, replace(prompt, answer_ids=wrong))


def test_grid_shape_and_a_length_beyond_the_context_is_refused(tmp_path: Path) -> None:
    model, tokenizer = tiny_model("llama"), byte_tokenizer()
    prompts = passkey_prompts(tokenizer, "builtin", [200, 300], [0.0, 0.5, 1.0], trials=2, seed=0)
    grid = passkey_grid(model, prompts, progress=False)
    assert grid.accuracy.shape == (2, 3) and grid.trials == 2
    assert ((grid.accuracy >= 0) & (grid.accuracy <= 1)).all()
    too_long = passkey_prompts(tokenizer, "builtin", [model.config.max_position_embeddings], [0.5], trials=1)
    with pytest.raises(InputError, match="exceeds the model's context"):
        passkey_grid(model, too_long, progress=False)
    shown = PasskeyGrid((200, 300), (0.0, 1.0), np.array([[1.0, 0.5], [0.0, 0.25]]), trials=4)
    written = plot_passkey_grids({"dense": shown, "pruned": grid}, tmp_path / "passkey.png")
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shown.to_dict()["mean"] == pytest.approx(0.4375)


@pytest.mark.real_model
def test_real_smollm2_finds_the_key_and_loses_it_when_pruned_hard() -> None:
    from paretoprune.candidate import Candidate
    from paretoprune.metrics.scores import SCORING_RULES
    from paretoprune.models import find_layout, load_model
    from paretoprune.pruning import prune_model

    loaded = load_model("smollm2-135m")
    prompts = passkey_prompts(loaded.tokenizer, "builtin", [256], [0.0, 0.5], trials=2, seed=0)
    dense = passkey_grid(loaded.model, prompts, progress=False)
    assert dense.mean >= 0.75  # measured: 4 of 4 at 256 tokens
    layout = find_layout(loaded.model)
    candidate = Candidate(metric=SCORING_RULES["magnitude"], sparsities={name: 0.7 for name in layout.names})
    prune_model(loaded.model, layout, candidate, progress=False)
    assert passkey_grid(loaded.model, prompts, progress=False).mean < dense.mean
