"""Named building blocks: one registry for each kind of choice a pruning recipe makes.

Pruning one layer is a score, a mask and an optional solve; the model as a whole adds how the
sparsity is spread over layers and rows. Every method of each kind is registered once, under a
name, in the module that defines it::

    SCORING_RULES.register("wanda", MetricSpec(...), summary="|W| times the input's norm")

and everything that offers a choice reads the registry instead of a hand-written list: the
command line's choices and ``--help``, the recipe validator, the search space's genes and
baselines, the benchmark plan and the README's tables. Adding a method is one file that
defines it and registers it.

A registry is a read-only mapping from name to entry, so ``SCORING_RULES["wanda"]`` and
``"wanda" in SCORING_RULES`` work as for a dict; ``lookup`` gives the one-line error a user
sees for a name it does not hold. Plain Python on purpose: no entry points, no import magic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar, overload

from paretoprune.errors import InputError

__all__ = ["Entry", "Registry"]

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered method: its name, the object that implements it, and one line about it."""

    name: str
    value: T
    summary: str


class Registry(Mapping[str, T]):
    """Methods of one kind by name, in the order they were registered.

    ``kind`` names the kind in error messages ("scoring rule"); ``option`` is the command-line
    option that picks one ("--method"), so that an error can say how to fix the call.
    """

    def __init__(self, kind: str, option: str | None = None) -> None:
        self.kind = kind
        self.option = option
        self._entries: dict[str, Entry[T]] = {}

    # -- registering --------------------------------------------------------------------------

    @overload
    def register(self, name: str, value: T, *, summary: str) -> T: ...

    @overload
    def register(self, name: str, value: None = None, *, summary: str) -> Callable[[T], T]: ...

    def register(self, name: str, value: T | None = None, *, summary: str) -> T | Callable[[T], T]:
        """Register ``value`` under ``name``; without a value, return a decorator that does."""
        if value is None:
            return lambda decorated: self.register(name, decorated, summary=summary)
        key = self._normalised(name)
        if key in self._entries:
            raise ValueError(f"{self.kind} {key!r} is registered twice")
        self._entries[key] = Entry(key, value, summary.strip())
        return value

    @staticmethod
    def _normalised(name: str) -> str:
        key = str(name).strip().lower()
        if not key or any(ch.isspace() or ch in ",:=" for ch in key):
            raise ValueError(f"{name!r} cannot be a registered name: use one word without , : or =")
        return key

    # -- looking up ---------------------------------------------------------------------------

    def lookup(self, name: str) -> T:
        """The method called ``name``; an unknown name is a one-line InputError listing the
        known ones (``get`` and ``[]`` behave as for a dict)."""
        entry = self._entries.get(str(name).strip().lower())
        if entry is None:
            raise InputError(self.unknown_message(name))
        return entry.value

    def unknown_message(self, name: object) -> str:
        where = f" for {self.option}" if self.option else ""
        return f"unknown {self.kind} {name!r}{where}: choose one of {', '.join(self)}"

    def entry(self, name: str) -> Entry[T]:
        self.lookup(name)  # the one-line error for an unknown name
        return self._entries[str(name).strip().lower()]

    def entries(self) -> list[Entry[T]]:
        return list(self._entries.values())

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def choices(self, separator: str = " | ") -> str:
        """The names as ``--help`` shows them: ``magnitude | wanda | ria``."""
        return separator.join(self._entries)

    def markdown_table(self) -> str:
        """A two-column Markdown table of the names and their summaries (for docs)."""
        lines = [f"| {self.kind} | what it does |", "| --- | --- |"]
        lines += [f"| `{entry.name}` | {entry.summary} |" for entry in self._entries.values()]
        return "\n".join(lines)

    # -- the Mapping protocol -----------------------------------------------------------------

    def __getitem__(self, name: str) -> T:
        entry = self._entries.get(str(name).strip().lower())
        if entry is None:
            raise KeyError(name)
        return entry.value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
