"""``flowengine lsp`` driven over stdio as an editor drives it: the installed console
script, real JSON-RPC, documents opened and edited, requests at cursor positions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .clients.lsp import LspClient
from .conftest import AGENT_FILES, ROOT, flowengine_command, run_cli
from .test_broken_corpus import CORPUS

SEVERITY = {1: "error", 2: "warning"}


@pytest.fixture(scope="session")
def lsp() -> Iterator[LspClient]:
    client = LspClient([*flowengine_command(), "lsp"], ROOT)
    yield client
    client.shutdown()


def _diagnostics(client: LspClient, path: Path, text: str | None = None) -> list[dict[str, Any]]:
    return client.wait_for_diagnostics(client.open(path, text))


def _labels(result: Any) -> list[str]:
    items = result["items"] if isinstance(result, dict) else result
    return [item["label"] for item in items]


def _text_files() -> list[Path]:
    """Files an editor can hold as text (not the Latin-1 and NUL-byte ones)."""
    found = []
    for path in [*CORPUS, *AGENT_FILES]:
        raw = path.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if b"\0" not in raw:
            found.append(path)
    return found


def test_every_validate_diagnostic_arrives_with_the_same_code_and_position(lsp) -> None:
    files = _text_files()
    assert len(files) >= 45
    done = run_cli("validate", "--format", "json", *map(str, files))
    want: dict[str, list[tuple[Any, ...]]] = {str(p.resolve()): [] for p in files}
    for d in json.loads(done.stdout):
        want[str(Path(d["file"]).resolve())].append(
            (d["line"], d["column"], d["severity"], d["code"], d["message"])
        )
    for path in files:
        got = [
            (
                d["range"]["start"]["line"] + 1,
                d["range"]["start"]["character"] + 1,
                SEVERITY[d["severity"]],
                d["code"],
                d["message"],
            )
            for d in _diagnostics(lsp, path)
        ]
        assert sorted(got) == sorted(want[str(path.resolve())]), path.name
        assert all(d["source"] == "flowengine" for d in lsp.diagnostics[path.resolve().as_uri()])


GOOD = """\
name: Typing
tools: [calculator]
inputs:
  city: {description: Where to}
steps:
  ask:
    type: process
    instruction: Find something in {{ city }}.
    save_as: found
    next: choose
  choose:
    type: decision
    question: Is {{ found }} enough?
    branches:
      "yes": compute
      "no": ask
    max_visits: 3
  compute:
    type: process
    tool: calculator
    args: {expression: "1 + 1"}
    on_error: finish
    next: finish
  finish:
    type: terminal
    output: "{{ found }}"
"""


def test_diagnostics_follow_each_edit_as_you_type(lsp, tmp_path: Path) -> None:
    path = tmp_path / "typing.yaml"
    assert _diagnostics(lsp, path, GOOD) == []
    uri = path.resolve().as_uri()
    lsp.change(uri, GOOD.replace("next: choose", "next: chose"))
    [typo] = [d for d in lsp.wait_for_diagnostics(uri) if d["code"] == "unknown-target"]
    assert "did you mean 'choose'" in typo["message"]
    assert typo["range"]["start"] == {"line": 9, "character": 10}
    lsp.change(uri, GOOD.replace("    save_as: found\n", "    save_as: found\n    nxt: x\n"))
    codes = {d["code"] for d in lsp.wait_for_diagnostics(uri)}
    assert "unknown-field" in codes
    lsp.change(uri, GOOD + "  broken: [\n")
    assert [d["code"] for d in lsp.wait_for_diagnostics(uri)] == ["yaml-syntax"]
    lsp.change(uri, GOOD)
    assert lsp.wait_for_diagnostics(uri) == []


def test_keystrokes_sent_as_incremental_edits_update_the_diagnostics(lsp, tmp_path) -> None:
    uri = _open_good(lsp, tmp_path)
    line, column = _position(GOOD, "next: choose", len("next: choose"))
    for index, char in enumerate("_now"):  # 'choose' becomes 'choose_now', one key at a time
        lsp.edit(uri, line, column + index, column + index, char)
        found = lsp.wait_for_diagnostics(uri)
    [typo] = [d for d in found if d["code"] == "unknown-target"]
    assert "'choose_now'" in typo["message"] and "did you mean 'choose'" in typo["message"]
    lsp.edit(uri, line, column, column + 4, "")
    assert lsp.wait_for_diagnostics(uri) == []


def _open_good(lsp: LspClient, tmp_path: Path, text: str = GOOD) -> str:
    path = tmp_path / "good.yaml"
    uri = lsp.open(path, text)
    lsp.wait_for_diagnostics(uri)
    return uri


def _position(text: str, needle: str, offset: int = 0) -> tuple[int, int]:
    index = text.index(needle) + offset
    line = text.count("\n", 0, index)
    return line, index - (text.rfind("\n", 0, index) + 1)


STEP_IDS = ["ask", "choose", "compute", "finish"]


@pytest.mark.parametrize(
    ("needle", "offset"),
    [("next: choose", 6), ('"yes": compute', 7), ("on_error: finish", 10)],
)
def test_step_ids_complete_in_next_branches_and_on_error(lsp, tmp_path, needle, offset) -> None:
    uri = _open_good(lsp, tmp_path)
    labels = _labels(lsp.at("textDocument/completion", uri, *_position(GOOD, needle, offset)))
    assert labels[:4] == STEP_IDS
    if needle.startswith("on_error"):
        assert {"fail", "continue"} <= set(labels)


def test_start_completes_step_ids_even_while_the_file_does_not_parse(lsp, tmp_path) -> None:
    text = GOOD.replace("tools: [calculator]\n", "tools: [calculator]\nstart: \n") + "  x: [\n"
    uri = _open_good(lsp, tmp_path, GOOD)
    lsp.change(uri, text)
    assert [d["code"] for d in lsp.wait_for_diagnostics(uri)] == ["yaml-syntax"]
    labels = _labels(lsp.at("textDocument/completion", uri, *_position(text, "start: ", 7)))
    assert labels == STEP_IDS


def test_template_variables_complete_inside_braces(lsp, tmp_path) -> None:
    uri = _open_good(lsp, tmp_path)
    at = _position(GOOD, "{{ found }} enough", 3)
    labels = set(_labels(lsp.at("textDocument/completion", uri, *at)))
    assert {"task", "last", "progress", "visits", "city", "found"} <= labels
    assert not labels & set(STEP_IDS)


def test_tool_names_complete_in_tool_and_tools(lsp, tmp_path) -> None:
    uri = _open_good(lsp, tmp_path)
    for needle, offset in (("tool: calculator", 6), ("tools: [calculator]", 8)):
        labels = _labels(lsp.at("textDocument/completion", uri, *_position(GOOD, needle, offset)))
        assert "calculator" in labels and "search_flights" in labels


def test_go_to_definition_of_a_step_id(lsp, tmp_path) -> None:
    uri = _open_good(lsp, tmp_path)
    for needle, offset, target in (
        ("next: choose", 8, "  choose:"),
        ('"yes": compute', 9, "  compute:"),
        ('"no": ask', 7, "  ask:"),
        ("on_error: finish", 12, "  finish:"),
    ):
        found = lsp.at("textDocument/definition", uri, *_position(GOOD, needle, offset))
        line, _ = _position(GOOD, target + "\n")
        assert found["uri"] == uri
        assert found["range"]["start"] == {"line": line, "character": 2}


def test_hover_summarises_a_step_and_a_tools_arguments(lsp, tmp_path) -> None:
    uri = _open_good(lsp, tmp_path)
    step = lsp.at("textDocument/hover", uri, *_position(GOOD, "  choose:\n", 3))
    text = step["contents"]["value"]
    assert "**choose** · decision" in text and "Is {{ found }} enough?" in text
    assert "`yes` → `compute`" in text and "at most 3 visits" in text
    step = lsp.at("textDocument/hover", uri, *_position(GOOD, "next: finish", 8))
    assert "**finish** · terminal" in step["contents"]["value"]
    tool = lsp.at("textDocument/hover", uri, *_position(GOOD, "tool: calculator", 8))
    assert "**calculator** (tool)" in tool["contents"]["value"]
    assert "`expression` (string, required)" in tool["contents"]["value"]


def test_a_file_that_is_not_an_agent_gets_one_diagnostic_and_no_crash(lsp, tmp_path) -> None:
    for text in ("", "- a\n- b\n", "name: [\n", "\ufeffname: X\n", "a: *b\n", "a\0b", "\t- x"):
        diagnostics = _diagnostics(lsp, tmp_path / "odd.yaml", text)
        assert diagnostics and all(d["source"] == "flowengine" for d in diagnostics), text
    uri = (tmp_path / "odd.yaml").resolve().as_uri()
    assert lsp.at("textDocument/completion", uri, 0, 0)["items"] == []
    assert lsp.at("textDocument/hover", uri, 0, 0) is None


def test_lsp_help_names_the_editors_set_up() -> None:
    done = run_cli("lsp", "--help")
    assert done.returncode == 0 and "VS Code" in done.stdout


_yaml_bits = st.sampled_from(
    [
        "name: X\n",
        "steps:\n",
        "  a:\n",
        "    type: process\n",
        "    next: ",
        "    branches:\n",
        "      yes: a\n",
        "{{ ",
        "}}",
        "tool: ",
        "tools: [",
        "- ",
        ": ",
        "'",
        '"',
        "\t",
        "#",
        "\n",
        "&x ",
        "*x",
    ]
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.lists(st.one_of(_yaml_bits, st.text(max_size=8)), max_size=12).map("".join),
    line=st.integers(0, 12),
    character=st.integers(0, 40),
)
def test_any_text_gets_diagnostics_and_answers_never_errors(lsp, tmp_path, text, line, character):
    uri = lsp.open(tmp_path / "fuzz.yaml", text)
    diagnostics = lsp.wait_for_diagnostics(uri)
    assert all(d["source"] == "flowengine" and d["code"] for d in diagnostics)
    for method in ("textDocument/completion", "textDocument/hover", "textDocument/definition"):
        lsp.at(method, uri, line, character)  # an error reply fails the request


def test_columns_after_an_emoji_are_counted_in_utf16_as_lsp_clients_expect(lsp, tmp_path) -> None:
    text = (
        "name: Emoji\nsteps:\n"
        '  a: {type: process, instruction: "🙂 hi", next: nowhere}\n'
        "  b: {type: terminal, output: ok}\n"
    )
    [typo] = [
        d for d in _diagnostics(lsp, tmp_path / "emoji.yaml", text) if d["code"] == "unknown-target"
    ]
    line = text.splitlines()[2]
    assert typo["range"]["start"] == {"line": 2, "character": line.index("nowhere") + 1}


SPACED = """\
name: Spaced
steps:
  Step 1:
    type: process
    instruction: Go.
    next: Step
  "Step 2: check":
    type: terminal
    output: ok
"""


def test_completing_a_spaced_step_id_replaces_the_whole_value_and_quotes_when_needed(
    lsp, tmp_path
) -> None:
    uri = _open_good(lsp, tmp_path, SPACED)
    line, column = _position(SPACED, "next: Step", len("next: Step"))
    items = lsp.at("textDocument/completion", uri, line, column)["items"]
    edits = {item["label"]: item["textEdit"] for item in items}
    assert edits["Step 1"]["newText"] == "Step 1"
    assert edits["Step 2: check"]["newText"] == '"Step 2: check"'
    assert edits["Step 1"]["range"] == {
        "start": {"line": line, "character": column - 4},
        "end": {"line": line, "character": column},
    }
    lsp.change(uri, SPACED.replace("next: Step", 'next: "Step 2: check"  # quoted'))
    lsp.wait_for_diagnostics(uri)
    found = lsp.at("textDocument/definition", uri, line, column + 2)
    assert found["range"] == {
        "start": {"line": 6, "character": 2},
        "end": {"line": 6, "character": 2 + len("Step 2: check")},
    }


TYPED = """\
name: Typed
tools: [calculator]
state:
  ideas: {schema: {type: array}, default: [], reducer: append}
steps:
  compute:
    type: process
    tool: calculator
    args: {expression: "1 + 1"}
    save_as: refund
    set: {total: "{{ refund.value }}"}
    next: finish
  finish:
    type: terminal
    output: "{{ refund.va }} {{ ideas }}"
"""


def test_state_and_set_variables_and_tool_result_fields_complete(lsp, tmp_path) -> None:
    uri = _open_good(lsp, tmp_path, TYPED.replace("{{ refund.va }}", "{{ refund.value }}"))
    lsp.change(uri, TYPED)
    line, column = _position(TYPED, "{{ refund.va", len("{{ refund.va"))
    result = lsp.at("textDocument/completion", uri, line, column)
    items = result["items"] if isinstance(result, dict) else result
    assert [item["label"] for item in items] == ["error", "expression", "value"]
    value = next(item for item in items if item["label"] == "value")
    assert value["textEdit"]["newText"] == "refund.value"  # replaces the dotted word
    assert value["textEdit"]["range"]["start"]["character"] == column - len("refund.va")
    line, column = _position(TYPED, "}} {{ ideas", len("}} {{ "))
    labels = set(_labels(lsp.at("textDocument/completion", uri, line, column)))
    assert {"ideas", "total", "refund", "task"} <= labels


def test_the_new_diagnostics_arrive_as_you_type(lsp, tmp_path) -> None:
    uri = _open_good(lsp, tmp_path, TYPED.replace("{{ refund.va }}", "{{ refund.value }}"))
    lsp.change(uri, TYPED.replace("{{ refund.va }}", "{{ refund.valeu }}"))
    [typo] = lsp.wait_for_diagnostics(uri)
    assert typo["code"] == "unknown-attribute" and "did you mean 'value'" in typo["message"]
