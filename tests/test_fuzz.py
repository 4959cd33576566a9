"""Property-based fuzzing: random and mutated YAML only ever yields diagnostics."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from flowengine.agentfile.diagnostics import Severity
from flowengine.graph import validate_file, validate_text

from .conftest import AGENTS, BROKEN

SEEDS = [
    path.read_bytes().decode("utf-8", errors="replace")  # some broken files are not UTF-8
    for folder in (AGENTS, BROKEN)
    for path in sorted(folder.glob("*.yaml"))
    if not path.name.endswith(".test.yaml")
]


def assert_only_diagnostics(text: str) -> None:
    result = validate_text(text, "fuzz.yaml")
    for diagnostic in result.diagnostics:
        assert diagnostic.line >= 1 and diagnostic.column >= 1
        assert diagnostic.code and diagnostic.message
        assert diagnostic.severity in (Severity.ERROR, Severity.WARNING)
    if result.agent is None:
        assert result.errors, "an agent that cannot be built must say why"


def test_make_test_draws_the_same_examples_every_time(tmp_path: Path) -> None:
    """Issue 33: `make test` went red on a fresh machine because Hypothesis drew a new
    example. The default profile is derandomized, has no example database, and draws the
    same whatever modules other tests have imported (tests/conftest.py)."""
    if os.environ.get("HYPOTHESIS_PROFILE", "default") != "default":
        pytest.skip("another Hypothesis profile is loaded")
    assert settings.default.derandomize and settings.default.database is None

    def draw() -> list[str]:
        drawn: list[str] = []

        @given(st.text())
        def record(text: str) -> None:
            drawn.append(text)

        record()
        return drawn

    first = draw()
    assert len(first) > 50 and first == draw()
    # A local module with constants in its source, as a test that ran first may import.
    source = tmp_path / "more_constants.py"
    source.write_text(f"WORDS = {[f'word {n}' for n in range(200)]!r}\n")
    spec = importlib.util.spec_from_file_location("more_constants", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["more_constants"] = module
    try:
        assert draw() == first
    finally:
        del sys.modules["more_constants"]


@given(st.text())
def test_random_text(text: str) -> None:
    assert_only_diagnostics(text)


YAML_ALPHABET = st.sampled_from(
    [*" \n\t:-[]{}&*!|>'\"#,?%@`~", "  ", "\n  ", "yes", "{{", "}}", "{%", "%}", "steps", "type"]
)


@st.composite
def mutated_agent(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "duplicate-line", "swap-lines"]))
        if action == "insert":
            piece = draw(st.one_of(YAML_ALPHABET, st.text(max_size=8)))
            text = text[:position] + piece + text[position:]
        elif action == "delete":
            text = text[:position] + text[position + draw(st.integers(1, 40)) :]
        else:
            lines = text.splitlines(keepends=True)
            if len(lines) > 1:
                i = draw(st.integers(0, len(lines) - 2))
                if action == "duplicate-line":
                    lines.insert(i, lines[i])
                else:
                    lines[i], lines[i + 1] = lines[i + 1], lines[i]
                text = "".join(lines)
    return text


@given(mutated_agent())
def test_mutated_agent_files(text: str) -> None:
    assert_only_diagnostics(text)


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
    st.sampled_from(["process", "decision", "terminal", "next", "Step 1", "{{ x }}", "{% if %}"]),
)  # fmt: skip
keys = st.one_of(
    st.text(max_size=10),
    st.sampled_from(["name", "steps", "type", "next", "branches", "when", "default", "tool",
                     "instruction", "question", "output", "format", "schema", "save_as",
                     "max_visits", "max_steps", "start", "tools", "inputs", "args"]),
)  # fmt: skip
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=40,
)


@given(documents)
def test_random_structured_documents(data: object) -> None:
    assert_only_diagnostics(yaml.safe_dump(data, allow_unicode=True))
    assert_only_diagnostics(yaml.safe_dump({"name": "F", "steps": data}))


@given(st.binary(max_size=300))
def test_random_bytes_from_disk(tmp_path_factory, raw: bytes) -> None:  # type: ignore[no-untyped-def]
    path: Path = tmp_path_factory.mktemp("fuzz") / "agent.yaml"
    path.write_bytes(raw)
    result = validate_file(str(path))
    assert all(d.line >= 1 for d in result.diagnostics)


flow_entries = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda i, kind, text, rest: f"Step {i}:::{kind}:::{text}{rest}",
        st.integers(0, 5),
        st.sampled_from(["Process", "Decision", "Terminal", "process", "Loop", ""]),
        st.text(max_size=20),
        st.sampled_from(["", ":::", ":::next::Step 1", ":::yes::step 2:::no::Step 3",
                         "::yes::Step 2::no", ":::a::b::c"]),
    ),
)  # fmt: skip
configs = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.text(max_size=12), st.integers(), st.none()),
        "description": st.one_of(st.text(max_size=30), st.lists(st.text(max_size=10)), st.none()),
        "flow": st.one_of(st.lists(flow_entries, max_size=8), st.text(max_size=10), st.none()),
        "tool_info": st.one_of(st.lists(st.text(max_size=20)), st.text(max_size=20), st.none()),
    },
)


@given(configs)
def test_import_aios_on_random_configs(tmp_path_factory, config: dict) -> None:  # type: ignore[no-untyped-def]
    import json

    from flowengine.agentfile.diagnostics import Reporter
    from flowengine.importers.aios import import_config

    path: Path = tmp_path_factory.mktemp("aios") / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    report = Reporter(str(path))
    result = import_config(str(path), "x", report)
    if result.yaml is None:
        assert report.has_errors
    else:
        assert validate_text(result.yaml).agent is not None, result.yaml


template_pieces = st.lists(
    st.one_of(
        st.sampled_from(["{{ x }}", "{{y}}", "{{- z.a -}}", "{", "}", "{{", "}}", "{%", "%}", "{#",
                         "#}", "{{ if }}", "{{ true }}", "{{ 1 }}", "{% if x %}", "{% endif %}",
                         "{{ x | upper }}", "{{{ x }}", " ", "\n", "text"]),
        st.text(alphabet="{}% #xyz.|-\n ", max_size=6),
    ),
    max_size=8,
).map("".join)  # fmt: skip


@given(template_pieces)
def test_template_fast_path_agrees_with_the_jinja2_parser(source: str) -> None:
    from flowengine.agentfile.templates import (
        TemplateProblem,
        parsed_template_variables,
        template_variables,
    )

    def outcome(read):  # type: ignore[no-untyped-def]
        try:
            return read(source)
        except TemplateProblem:
            return "syntax error"

    assert outcome(template_variables) == outcome(parsed_template_variables)


@given(documents)
def test_per_step_schema_checking_equals_the_whole_schema(data: object) -> None:
    from jsonschema import Draft202012Validator

    from flowengine.agentfile.schema_validation import agent_schema, schema_errors

    document = {"name": "F", "steps": data}
    whole = Draft202012Validator(agent_schema()).iter_errors(document)
    expected = sorted((repr(tuple(e.absolute_path)), e.validator, e.message) for e in whole)
    got = sorted((repr(path), e.validator, e.message) for path, e in schema_errors(document))
    assert got == expected
