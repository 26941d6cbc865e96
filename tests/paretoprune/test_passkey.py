"""Passkey prompts are token-exact: length, needle position and answer."""

from __future__ import annotations

import random

import pytest
import torch

from paretoprune.data import TextSource, tokenize
from paretoprune.errors import InputError
from paretoprune.passkey import passkey_prompt, passkey_prompts, template_tokens
from paretoprune.testing import byte_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def filler(tokenizer) -> torch.Tensor:
    return tokenize(tokenizer, "builtin")


@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("length", [200, 257, 512])
def test_prompt_has_the_requested_length_and_the_needle_at_the_requested_depth(
    tokenizer, filler: torch.Tensor, length: int, depth: float
) -> None:
    prompt = passkey_prompt(tokenizer, filler, length, depth, random.Random(1))
    assert prompt.length == length
    head = len(tokenizer("There is a pass key hidden in the text below. Find it and remember it.\n\n").input_ids)
    needle = tokenizer(f"\nThe pass key is {prompt.key}. Remember it. {prompt.key} is the pass key.\n").input_ids
    room = length - template_tokens(tokenizer, prompt.key)
    assert prompt.needle_start == head + round(depth * room)
    found = prompt.input_ids[prompt.needle_start : prompt.needle_start + len(needle)].tolist()
    assert found == needle
    assert tokenizer.decode(prompt.answer_ids) == " " + prompt.key
    assert len(prompt.key) == 5 and prompt.key.isdigit()
    assert tokenizer.decode(prompt.input_ids).endswith("What is the pass key? The pass key is")


def test_grid_is_seeded_and_keys_vary(tokenizer) -> None:
    source = TextSource(name="filler", text="the quick brown fox jumps over the lazy dog. " * 200, sha256="0" * 64, kind="file")
    first = passkey_prompts(tokenizer, source, [300, 400], [0.0, 1.0], trials=3, seed=7)
    again = passkey_prompts(tokenizer, source, [300, 400], [0.0, 1.0], trials=3, seed=7)
    assert list(first) == [(300, 0.0), (300, 1.0), (400, 0.0), (400, 1.0)]
    assert all(torch.equal(a.input_ids, b.input_ids) for cell in first for a, b in zip(first[cell], again[cell]))
    keys = {prompt.key for cell in first.values() for prompt in cell}
    assert len(keys) > 6  # 12 draws of a 5-digit key: repeats would be a seeding bug


def test_bad_lengths_depths_and_trials_are_one_line_errors(tokenizer, filler: torch.Tensor) -> None:
    shortest = template_tokens(tokenizer)
    with pytest.raises(InputError, match=f"use a length of at least {shortest}"):
        passkey_prompt(tokenizer, filler, shortest - 1, 0.5, random.Random(0))
    with pytest.raises(InputError, match="depth 1.5 is outside"):
        passkey_prompt(tokenizer, filler, 300, 1.5, random.Random(0))
    with pytest.raises(InputError, match="fewer than the"):
        passkey_prompt(tokenizer, filler[:10], 300, 0.5, random.Random(0))
    with pytest.raises(InputError, match="trials must be at least 1"):
        passkey_prompts(tokenizer, "builtin", [300], [0.5], trials=0)
