"""Perplexity: the SparseGPT/Wanda protocol, checked against direct computations."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from paretoprune.data import evaluation_windows
from paretoprune.errors import InputError
from paretoprune.evaluators.perplexity import PerplexityResult, perplexity
from paretoprune.testing import TINY_VOCAB, byte_tokenizer, tiny_model


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_model("llama", seed=0)


@pytest.fixture(scope="module")
def windows() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (5, 24), generator=generator)


def reference_nll(model: Any, windows: torch.Tensor) -> float:
    """Hand loop: one window at a time, float64 log-softmax, positions 0..L-2 predict 1..L-1."""
    total, count = 0.0, 0
    with torch.no_grad():
        for window in windows:
            logits = model(input_ids=window[None]).logits[0].double()
            log_probs = torch.log_softmax(logits[:-1], dim=-1)
            total -= float(log_probs.gather(1, window[1:, None]).sum())
            count += len(window) - 1
    return total / count


def test_matches_a_hand_computation(model: Any, windows: torch.Tensor) -> None:
    result = perplexity(model, windows, progress=False)

    assert isinstance(result, PerplexityResult)
    assert result.nll == pytest.approx(reference_nll(model, windows), rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(result.nll), rel=1e-12)
    assert (result.tokens, result.windows) == (5 * 23, 5)  # L-1 predicted tokens per window


def test_matches_the_models_own_loss(model: Any, windows: torch.Tensor) -> None:
    # a Hugging Face causal LM's `labels` loss is the mean NLL of the shifted targets
    with torch.no_grad():
        losses = [float(model(input_ids=w[None], labels=w[None]).loss) for w in windows]

    result = perplexity(model, windows, progress=False)

    assert result.nll == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    assert result.to_dict() == {
        "perplexity": result.perplexity,
        "nll": result.nll,
        "tokens": result.tokens,
        "windows": result.windows,
    }


@pytest.mark.parametrize("batch_size", [2, 3, 5, 8])
def test_batch_size_does_not_change_the_result(
    model: Any, windows: torch.Tensor, batch_size: int
) -> None:
    one_by_one = perplexity(model, windows, batch_size=1, progress=False)

    batched = perplexity(model, windows, batch_size=batch_size, progress=False)

    assert batched.nll == pytest.approx(one_by_one.nll, rel=1e-5)
    assert batched.tokens == one_by_one.tokens


def test_runs_in_eval_mode_and_restores_the_training_flag(windows: torch.Tensor) -> None:
    dropout_model = tiny_model("llama", seed=1, attention_dropout=0.5)
    expected = reference_nll(dropout_model.eval(), windows)  # eval mode: dropout off

    dropout_model.train()
    result = perplexity(dropout_model, windows, batch_size=2, progress=False)

    assert result.nll == pytest.approx(expected, rel=1e-5)
    assert dropout_model.training


def test_restores_the_training_flag_when_the_model_fails(model: Any) -> None:
    model.train()
    out_of_vocabulary = torch.full((1, 8), TINY_VOCAB + 10)

    with pytest.raises(IndexError):
        perplexity(model, out_of_vocabulary, progress=False)

    assert model.training
    model.eval()


def test_bf16_model_is_scored_with_an_fp32_log_softmax(windows: torch.Tensor) -> None:
    bf16_model = tiny_model("llama", seed=2).to(torch.bfloat16)
    total = 0.0
    with torch.no_grad():
        for window in windows:
            logits = bf16_model(input_ids=window[None]).logits[0, :-1].float()
            total += float(torch.nn.functional.cross_entropy(logits, window[1:], reduction="sum"))

    result = perplexity(bf16_model, windows, batch_size=5, progress=False)

    assert result.nll == pytest.approx(total / (5 * 23), rel=1e-5)
    assert math.isfinite(result.perplexity)


def test_other_families_and_int32_windows(windows: torch.Tensor) -> None:
    gpt2 = tiny_model("gpt2", seed=0)

    result = perplexity(gpt2, windows.to(torch.int32), device="cpu", progress=False)

    assert result.nll == pytest.approx(reference_nll(gpt2, windows), rel=1e-5)


def test_progress_bar_goes_to_stderr_only_when_asked(
    model: Any, windows: torch.Tensor, capsys: pytest.CaptureFixture[str]
) -> None:
    perplexity(model, windows[:2], progress=False)
    quiet = capsys.readouterr()
    perplexity(model, windows[:2], progress=True)
    loud = capsys.readouterr()

    assert quiet.err == "" and quiet.out == ""
    assert "perplexity" in loud.err and loud.out == ""


def test_random_model_is_near_uniform_on_real_text(model: Any) -> None:
    # an untrained model spreads its mass over the vocabulary: perplexity near the vocab size
    windows = evaluation_windows(byte_tokenizer(), "builtin", seqlen=64, max_windows=4)

    result = perplexity(model, windows, batch_size=4, progress=False)

    assert result.tokens == 4 * 63
    assert TINY_VOCAB / 2 < result.perplexity < TINY_VOCAB * 2


@pytest.mark.parametrize(
    ("bad_windows", "batch_size", "message"),
    [
        (torch.zeros(8, dtype=torch.long), 1, "2-D token tensor"),
        (torch.zeros(2, 8), 1, "integer token ids"),
        (torch.zeros(2, 1, dtype=torch.long), 1, "at least 2 tokens"),
        (torch.zeros(0, 8, dtype=torch.long), 1, "at least one window"),
        (torch.zeros(2, 8, dtype=torch.long), 0, "batch_size must be a positive integer"),
    ],
)
def test_bad_input_is_refused(
    model: Any, bad_windows: torch.Tensor, batch_size: int, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        perplexity(model, bad_windows, batch_size=batch_size, progress=False)
