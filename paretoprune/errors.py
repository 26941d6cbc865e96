"""The one exception type for bad input.

Library code raises :class:`InputError` when what the user gave cannot work (a missing model,
an unreadable data file, a sparsity out of range, ...). The message is one line that says what
is wrong and what to do. The command line turns it into that line on stderr and exit code 2;
anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input from the user: the message names the problem and the fix, on one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))
