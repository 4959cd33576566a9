"""Located diagnostics: what is wrong, where, and how bad, with a stable code."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import Enum
from typing import NamedTuple


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


class Position(NamedTuple):
    """A 1-based line and column in a source file (a tuple: a loader makes many)."""

    line: int = 1
    column: int = 1


@dataclass(frozen=True)
class Diagnostic:
    """One finding about one file, printed as ``FILE:LINE:COL: severity: message [code]``."""

    file: str
    line: int
    column: int
    severity: Severity
    code: str
    message: str

    def format(self) -> str:
        return (
            f"{self.file}:{self.line}:{self.column}: "
            f"{self.severity.value}: {self.message} [{self.code}]"
        )

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["severity"] = self.severity.value
        return data

    @property
    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.file, self.line, self.column, self.code)


class Reporter:
    """Collects diagnostics for one file so that every layer reports the same way."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.diagnostics: list[Diagnostic] = []

    def error(self, code: str, message: str, at: Position | None = None) -> None:
        self._add(Severity.ERROR, code, message, at)

    def warning(self, code: str, message: str, at: Position | None = None) -> None:
        self._add(Severity.WARNING, code, message, at)

    def _add(self, severity: Severity, code: str, message: str, at: Position | None) -> None:
        at = at or Position()
        self.diagnostics.append(Diagnostic(self.file, at.line, at.column, severity, code, message))

    @property
    def has_errors(self) -> bool:
        return any(d.severity is Severity.ERROR for d in self.diagnostics)


class Vocabulary:
    """Names to suggest from when a word is not one of them.

    Case-insensitive matches are always found; fuzzy matches (difflib) are tried only for
    vocabularies of up to ``FUZZY_NAMES`` names and ``FUZZY_LOOKUPS`` times, so that a
    file with thousands of typos against thousands of steps still checks in linear time.
    """

    FUZZY_NAMES = 2000
    FUZZY_LOOKUPS = 200

    def __init__(self, names: Iterable[str]) -> None:
        self.names = list(names)
        self.folded: dict[str, str] = {}
        for name in self.names:
            self.folded.setdefault(name.casefold(), name)
        self.fuzzy_left = self.FUZZY_LOOKUPS if len(self.names) <= self.FUZZY_NAMES else 0

    def closest(self, word: str) -> str | None:
        """The name a typo most likely meant, if any is close enough."""
        exact = self.folded.get(word.casefold())
        if exact is not None or self.fuzzy_left <= 0:
            return exact
        self.fuzzy_left -= 1
        match = difflib.get_close_matches(word, self.names, n=1, cutoff=0.6)
        return match[0] if match else None


def closest(word: str, choices: Vocabulary | Iterable[str]) -> str | None:
    """The choice a typo most likely meant, if any is close enough."""
    vocabulary = choices if isinstance(choices, Vocabulary) else Vocabulary(choices)
    return vocabulary.closest(word)


def did_you_mean(word: str, choices: Vocabulary | Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, or an empty string."""
    match = closest(word, choices)
    return f"; did you mean '{match}'?" if match else ""
