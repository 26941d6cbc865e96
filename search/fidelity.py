"""Fidelity: how faithfully an archive row's objectives measure the candidate as it will be used.

A search scores every candidate cheaply: its masks alone, on the few fitness windows. The
finalist stage (:mod:`paretoprune.search.finalists`) scores the best of them again, on more
tokens and as the recipe will be applied (the masks, then the solver chain such as SparseGPT's
``update``). Each archive row names the fidelity that produced it in its ``fidelity`` column:

- ``base``: the search's own fitness (every row a search writes; old archives read as base);
- ``TOKENS`` or ``TOKENS+CHAIN``, e.g. ``16384+update``: the finalist stage on TOKENS fresh
  tokens, with the solvers of CHAIN run on the masks (none: the masks alone, on more tokens).

Two rows measure alike only at the same fidelity: a candidate's ``kl`` after SparseGPT's update
is far below its masks' ``kl``, so the front compares rows of one fidelity with each other only.
Fidelities are ordered to say which one to believe for a candidate scored at several: a score of
the model as it will be applied outranks one of its masks alone, then more tokens rank higher.
"""

from __future__ import annotations

from dataclasses import dataclass

from paretoprune.errors import InputError
from paretoprune.metrics.solvers import check_chain

__all__ = ["BASE", "Fidelity", "fidelity_order"]

BASE = "base"


@dataclass(frozen=True)
class Fidelity:
    """A measurement setting: ``tokens`` None is the search's own fitness (``base``)."""

    tokens: int | None = None
    solvers: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """What the archive's ``fidelity`` column holds for rows of this setting."""
        if self.tokens is None:
            return BASE
        return f"{self.tokens}" + (f"+{','.join(self.solvers)}" if self.solvers else "")

    @property
    def order(self) -> tuple[int, int, int]:
        """Larger is more faithful: applied beats masks alone, then more tokens, then more solvers."""
        if self.tokens is None:
            return (0, 0, 0)
        return (1 + bool(self.solvers), self.tokens, len(self.solvers))

    @classmethod
    def parse(cls, label: str) -> Fidelity:
        """The setting a ``fidelity`` cell names; one line for a label this module did not write."""
        if label == BASE:
            return cls()
        tokens, _, chain = label.partition("+")
        if not tokens.isdigit() or int(tokens) <= 0:
            raise InputError(f"fidelity {label!r} is not understood: expected base, TOKENS or TOKENS+SOLVERS")
        solvers = tuple(name for name in chain.split(",") if name)
        return cls(int(tokens), check_chain(solvers))


def fidelity_order(label: str) -> tuple[int, int, int]:
    """The order of a ``fidelity`` cell (see :attr:`Fidelity.order`)."""
    return Fidelity.parse(label).order
