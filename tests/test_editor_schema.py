"""The shipped JSON Schema in the real yaml-language-server, driven over stdio as an editor
does: plain-string messages that say the right thing, at the lines ``validate`` gives, and
completion of a step's fields before its type is written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from flowengine.graph import validate_file

from .clients.lsp import LspClient
from .conftest import AGENT_FILES, BROKEN
from .test_broken_corpus import CORPUS, expected

# What a schema (plus a YAML parser) can know: the shape of one document. Graph, template,
# tool and step-id checks need `validate` or `flowengine lsp`.
SCHEMA_CODES = frozenset(
    {
        "not-an-agent",
        "unknown-field",
        "missing-field",
        "wrong-type",
        "invalid-value",
        "conflicting-fields",
        "few-branches",
        "duplicate-key",
        "duplicate-step",
        "yaml-syntax",
    }
)
# yaml-syntax that is valid YAML to an editor: a stream of two documents, and an alias to
# an anchor that is still open (YAML 1.2 allows it; flowengine refuses it).
EDITOR_ACCEPTS = frozenset({"two_documents", "recursive_alias"})
# Caught, but where the editor's YAML parser finds it: an unclosed quote at the end of the
# file, where validate points at the opening quote.
EDITOR_PLACES_ELSEWHERE = frozenset({"unclosed_quote"})
CATCHABLE = [
    p
    for p in CORPUS
    if {c for c, _ in expected(p)} <= SCHEMA_CODES
    and p.stem not in EDITOR_ACCEPTS | EDITOR_PLACES_ELSEWHERE
]


def _lines(path: Path) -> list[str]:
    return path.read_bytes().decode("utf-8", errors="replace").splitlines()


def _caught_at(diagnostics: list[dict[str, Any]], line: int, source: list[str]) -> bool:
    """A diagnostic on ``line`` (1-based). yaml-language-server puts an object's own
    problems (too few entries, a missing dependency) on the object, which starts on the line
    under its key; that counts as the key's line."""
    key_line = line <= len(source) and source[line - 1].split("#")[0].rstrip().endswith(":")
    for diagnostic in diagnostics:
        start = diagnostic["range"]["start"]["line"] + 1
        end = diagnostic["range"]["end"]["line"] + 1
        if start <= line <= end or (key_line and start == line + 1):
            return True
    return False


def _open(client: LspClient, path: Path, text: str | None = None) -> list[dict[str, Any]]:
    # Left open: a closed document's empty diagnostics could arrive after it is reopened.
    return client.wait_for_diagnostics(client.open(path, text))


def test_most_of_the_corpus_is_within_a_schemas_reach() -> None:
    assert len(CATCHABLE) >= 13


@pytest.mark.parametrize("path", CATCHABLE, ids=lambda p: p.stem)
def test_the_editor_catches_each_schema_error_at_validates_line(yaml_ls, path: Path) -> None:
    diagnostics = _open(yaml_ls, path)
    source = _lines(path)
    for code, line in expected(path):
        assert _caught_at(diagnostics, line, source), (code, line, diagnostics)
    for diagnostic in diagnostics:
        message = diagnostic["message"]
        assert isinstance(message, str) and message
        assert not message.startswith("{") and "{value}" not in message


@pytest.mark.parametrize(
    ("name", "line", "words"),
    [
        ("unknown_field", 6, "Property nxt is not allowed"),
        ("unknown_field", 10, "Property colour is not allowed"),
        ("bad_name", 6, "not a valid name: use letters, digits and underscores"),
        ("conflicting_fields", 3, "a process step needs 'instruction'"),
        ("conflicting_fields", 9, "takes 'instruction' or 'output', not both"),
        ("missing_field", 6, 'Missing property "question"'),
        ("missing_field", 11, "a terminal step needs 'instruction'"),
        ("invalid_value", 4, 'Valid values: "process", "decision", "terminal"'),
        ("retry_range", 6, "above the maximum of 5"),
        ("few_branches", 7, "fewer properties than the required number of 2"),
    ],
)
def test_editor_messages_say_what_is_wrong(yaml_ls, name: str, line: int, words: str) -> None:
    diagnostics = _open(yaml_ls, BROKEN / f"{name}.yaml")
    on_line = [d["message"] for d in diagnostics if d["range"]["start"]["line"] + 1 == line]
    assert any(words in message for message in on_line), on_line


def test_a_decision_without_branches_fails_in_the_editor_and_in_validate(
    yaml_ls, tmp_path: Path
) -> None:
    agent = tmp_path / "no_branches.yaml"
    agent.write_text(
        "name: NoBranches\nsteps:\n  choose:\n    type: decision\n    question: Which?\n"
        "  finish:\n    type: terminal\n    output: ok\n"
    )
    diagnostics = _open(yaml_ls, agent)
    assert [(d["range"]["start"]["line"] + 1, d["message"]) for d in diagnostics] == [
        (3, 'Missing property "branches".')
    ]
    found = validate_file(str(agent)).diagnostics
    assert [(d.code, d.line) for d in found if d.code != "unreachable-step"] == [
        ("few-branches", 3)
    ]


def test_the_four_agents_are_clean_in_the_editor(yaml_ls) -> None:
    for path in AGENT_FILES:
        assert _open(yaml_ls, path) == [], path.name


def _completion_labels(
    client: LspClient, path: Path, text: str, line: int, column: int
) -> set[str]:
    uri = client.open(path, text)
    client.wait_for_diagnostics(uri)
    result = client.at("textDocument/completion", uri, line, column)
    items = result["items"] if isinstance(result, dict) else result
    return {item["label"] for item in items}


def test_a_new_step_is_offered_every_field_before_its_type(yaml_ls, tmp_path: Path) -> None:
    text = "name: New\nsteps:\n  first:\n    \n"
    labels = _completion_labels(yaml_ls, tmp_path / "new.yaml", text, 3, 4)
    assert {"type", "instruction", "tool", "question", "branches", "output", "next"} <= labels


def test_a_typed_step_is_offered_only_its_kinds_fields(yaml_ls, tmp_path: Path) -> None:
    text = "name: New\nsteps:\n  first:\n    type: terminal\n    \n"
    labels = _completion_labels(yaml_ls, tmp_path / "typed.yaml", text, 4, 4)
    assert {"instruction", "output", "format", "schema"} <= labels
    assert not labels & {"question", "branches", "next", "tool"}


def test_every_error_message_in_the_schema_is_a_plain_string() -> None:
    text = (Path(__file__).resolve().parent.parent / "schemas" / "agent.schema.json").read_text()
    for match in re.finditer(r'"(errorMessage|patternErrorMessage)":\s*(.)', text):
        assert match.group(2) == '"', match.group(0)
    assert "{value}" not in text
