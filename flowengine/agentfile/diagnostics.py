"""Located diagnostics: what is wrong, where, and how bad, with a stable code."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import Enum
from typing import NamedTuple

CODES: dict[str, str] = {
    # reading the file
    "file-unreadable": "the path is missing, a folder, or cannot be read",
    "file-too-large": "the file is over the size limit (25 MiB)",
    "binary-file": "the file holds a NUL byte: not text",
    "not-utf8": "the file is not valid UTF-8",
    "empty-file": "the file holds no YAML document",
    # YAML
    "yaml-syntax": "the YAML does not parse (also: several documents, bad aliases)",
    "yaml-too-complex": "nesting too deep, an alias bomb, or a number too long",
    "yaml-unsupported-tag": "a tag such as !!python/object: only plain data is loaded",
    "duplicate-key": "a key written twice in one mapping",
    # the schema
    "not-an-agent": "the document is not a mapping",
    "unknown-field": "a field the format does not have (with a suggestion)",
    "missing-field": "a required field is missing",
    "wrong-type": "a value of the wrong type",
    "invalid-value": "a value outside what the field allows",
    "conflicting-fields": "fields that exclude each other, such as instruction and tool",
    # the graph
    "duplicate-step": "two steps with the same id",
    "unknown-target": "'next' or a branch names a step that does not exist",
    "unknown-start": "'start' names a step that does not exist",
    "unreachable-step": "no path from the start step reaches this step",
    "dead-end": "a process step with no 'next'",
    "no-terminal": "the agent has no terminal step",
    "cannot-finish": "a loop from which no terminal step can be reached",
    "unguarded-cycle": "a loop with no max_visits and no agent max_steps (warning)",
    # decisions
    "few-branches": "a decision with fewer than two branches",
    "duplicate-branch": "branch labels that are equal, or equal but for case",
    "unknown-branch": "'when' or 'default' names a label not in 'branches'",
    "unused-branch": "a branch no 'when' or 'default' can choose (warning)",
    "unknown-example-label": "a decision's example names a label not in 'branches'",
    # templates, variables, tools, output
    "template-syntax": "a Jinja2 template does not parse, or uses an unknown filter",
    "expression-syntax": "a 'when' expression does not parse",
    "undefined-variable": "a template reads a variable nothing provides first (warning)",
    "shadowed-variable": "save_as or set hides an input or a built-in variable (warning)",
    "maybe-undefined": "a variable read where some path from the start has not set it",
    "unknown-attribute": "a template reads a field its variable's known type lacks (suggestion)",
    # declared state
    "invalid-state-schema": "a state variable's 'schema' is not valid JSON Schema",
    "invalid-state-default": "a state variable's 'default' does not match its schema",
    "invalid-reducer": "a reducer neither a known name nor an expression over current, value",
    "state-name-taken": "a state variable named like an input, a built-in, result or tool_result",
    "undeclared-tool": "a step calls a tool the agent does not list in 'tools'",
    "unknown-tool": "a step calls a tool flowengine does not have (with a suggestion)",
    "unknown-declared-tool": "'tools' lists a tool flowengine does not have (warning)",
    "missing-tool-argument": "a tool step's 'args' lack an argument the tool requires",
    "unknown-tool-argument": "an argument the tool does not take (with a suggestion)",
    "invalid-tool-argument": "a literal argument the tool's schema refuses (type, enum...)",
    "schema-needs-json": "an output 'schema' on a step whose format is text",
    "invalid-output-schema": "a step's output schema is not valid JSON Schema",
    "schema-unsupported": "an output schema uses a feature constrained decoding cannot enforce",
    # input steps
    "invalid-answer-schema": "an input step's answer 'schema' is not valid JSON Schema",
    "invalid-default-answer": "an input step's 'default' answer is empty or fails its schema",
    # import-aios
    "aios-json": "the AIOS config is not valid JSON",
    "aios-config": "the AIOS config lacks a name, or has code ('build') that is not converted",
    "aios-flow": "a flow entry that cannot be converted as written",
    "aios-workflow": "a workflow entry, or its tool call, that cannot be converted as written",
    "aios-tool": "a tool_info or tools entry whose tool name cannot be read",
}
"""Every diagnostic code, with what it means. Codes are stable: tools may match on them."""


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
        assert code in CODES, f"unregistered diagnostic code {code!r}"
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
