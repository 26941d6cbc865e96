"""Passkey prompts: a random key hidden at a chosen depth in filler text, token-exact.

The long-context retrieval test (the "needle in a haystack" of long-context benchmarks) asks a
model for a fact it read far earlier. A prompt is built from token ids, never by joining text,
so its length and the needle's position are exact whatever the tokenizer does at a seam::

    [instruction][filler ... [needle: "The pass key is 12345 ..."] ... filler][question]

and the answer is the key's own tokens. ``depth`` 0 puts the needle right after the
instruction, 1 right before the question. The filler is a seeded random stretch of any local
text (``builtin``, a file), so every prompt can be made again offline.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from paretoprune.data import TextSource, tokenize
from paretoprune.errors import InputError

__all__ = ["PasskeyPrompt", "passkey_prompt", "passkey_prompts", "template_tokens"]

_INSTRUCTION = "There is a pass key hidden in the text below. Find it and remember it.\n\n"
_NEEDLE = "\nThe pass key is {key}. Remember it. {key} is the pass key.\n"
_QUESTION = "\n\nWhat is the pass key? The pass key is"
_KEY_DIGITS = 5


@dataclass(frozen=True)
class PasskeyPrompt:
    """One prompt: what the model reads, the answer it should give, and where the key sits."""

    input_ids: torch.Tensor  # [length] the prompt, ending right before the answer
    answer_ids: torch.Tensor  # the key's tokens as they follow the question (" 12345")
    key: str
    depth: float  # the requested depth in [0, 1]
    needle_start: int  # index in input_ids of the needle's first token

    @property
    def length(self) -> int:
        return int(self.input_ids.numel())


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def template_tokens(tokenizer: Any, key: str = "0" * _KEY_DIGITS) -> int:
    """Tokens a prompt spends on instruction, needle and question: the shortest possible length."""
    return len(_ids(tokenizer, _INSTRUCTION)) + len(_ids(tokenizer, _NEEDLE.format(key=key))) + len(
        _ids(tokenizer, _QUESTION)
    )


def passkey_prompt(
    tokenizer: Any, filler_ids: torch.Tensor, length: int, depth: float, rng: random.Random
) -> PasskeyPrompt:
    """A prompt of exactly ``length`` tokens with a fresh random key at ``depth`` of the filler.

    ``filler_ids`` is a 1-D tensor of a corpus's tokens; a random stretch of it fills the room
    left by instruction, needle and question.
    """
    if not 0.0 <= depth <= 1.0:
        raise InputError(f"passkey depth {depth} is outside [0, 1]: 0 is the start of the text, 1 its end")
    key = "".join(rng.choice("0123456789") for _ in range(_KEY_DIGITS))
    head, needle, tail = _ids(tokenizer, _INSTRUCTION), _ids(tokenizer, _NEEDLE.format(key=key)), _ids(tokenizer, _QUESTION)
    room = length - len(head) - len(needle) - len(tail)
    if room < 0:
        raise InputError(f"passkey length {length} is too short: the prompt's template alone takes "
                         f"{length - room} tokens; use a length of at least {length - room}")  # fmt: skip
    filler = _filler(filler_ids, room, rng)
    offset = round(depth * room)
    ids = head + filler[:offset] + needle + filler[offset:] + tail
    answer = _ids(tokenizer, " " + key)
    return PasskeyPrompt(torch.tensor(ids, dtype=torch.long), torch.tensor(answer, dtype=torch.long), key, float(depth),
                         needle_start=len(head) + offset)  # fmt: skip


def _filler(filler_ids: torch.Tensor, count: int, rng: random.Random) -> list[int]:
    flat = filler_ids.reshape(-1)
    if count == 0:
        return []
    if flat.numel() < count:
        raise InputError(f"the filler text has {flat.numel()} tokens, fewer than the {count} a prompt needs; "
                         "use a longer text for the passkey filler or shorter lengths")  # fmt: skip
    start = rng.randrange(0, flat.numel() - count + 1)
    return flat[start : start + count].tolist()


def passkey_prompts(
    tokenizer: Any,
    source: str | TextSource,
    lengths: Sequence[int],
    depths: Sequence[float],
    trials: int,
    seed: int = 0,
) -> dict[tuple[int, float], list[PasskeyPrompt]]:
    """``trials`` prompts for every (length, depth) cell of the grid, all from one seed."""
    if trials < 1:
        raise InputError(f"passkey trials must be at least 1, got {trials}")
    filler_ids = tokenize(tokenizer, source, "evaluation")
    rng = random.Random(seed)
    return {
        (int(length), float(depth)): [passkey_prompt(tokenizer, filler_ids, int(length), float(depth), rng)
                                      for _ in range(trials)]
        for length in lengths
        for depth in depths
    }  # fmt: skip
