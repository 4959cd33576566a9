"""Located diagnostics: what is wrong, where, and how bad, with a stable code."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import Enum


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True)
class Position:
    """A 1-based line and column in a source file."""

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


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice a typo most likely meant, if any is close enough."""
    choices = list(choices)
    for choice in choices:
        if choice.casefold() == word.casefold():
            return choice
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return match[0] if match else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, or an empty string."""
    match = closest(word, choices)
    return f"; did you mean '{match}'?" if match else ""
