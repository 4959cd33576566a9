"""Diagnostics read as plain words that say what to do, not as raw jsonschema dumps."""

from __future__ import annotations

from flowengine.graph import validate_text

AGENT = """name: A
steps:
  Step 4:
    type: process
    instruction: Go.
    nxt: done
  done:
    type: terminal
    output: ok
"""


def messages(text: str) -> list[str]:
    return [d.format() for d in validate_text(text, "agent.yaml").diagnostics]


def test_unknown_field_suggests_the_intended_one() -> None:
    assert messages(AGENT) == [
        "agent.yaml:6:5: error: unknown field 'nxt' in step 'Step 4'; did you mean 'next'? "
        "[unknown-field]"
    ]


def test_unknown_field_without_a_close_match_lists_the_allowed_fields() -> None:
    (line,) = messages(AGENT.replace("nxt: done", "next: done\n    colour: red"))
    assert "unknown field 'colour' in step 'Step 4'; allowed here: type, instruction" in line


def test_top_level_typo_is_located_at_the_key() -> None:
    (line,) = messages("nam: A\n" + AGENT.split("\n", 1)[1].replace("nxt", "next"))
    assert line.startswith("agent.yaml:1:1: error: unknown field 'nam' in the agent")
    assert "did you mean 'name'?" in line


def test_wrong_type_says_what_was_found() -> None:
    (line,) = messages(AGENT.replace("nxt: done", "next: done\n    max_visits: often"))
    assert "'max_visits' of step 'Step 4' must be a whole number, not text ('often')" in line


def test_a_list_instead_of_an_agent() -> None:
    (line,) = messages("- a\n- b\n")
    assert "an agent file is a mapping with 'name' and 'steps'" in line


def test_no_raw_jsonschema_wording_reaches_the_user() -> None:
    broken = "name: 3\nsteps:\n  a: {type: decision, branches: [x]}\n  b: 4\nmax_steps: -1\n"
    for line in messages(broken):
        assert "is not of type" not in line
        assert "Additional properties" not in line


def test_each_missing_required_field_is_reported_once() -> None:
    # jsonschema raises one 'required' error per missing field; k fields once gave k*k lines.
    assert messages("description: nothing else\n") == [
        "agent.yaml:1:1: error: the agent is missing the required field 'name'; "
        "add 'name: YourAgent' [missing-field]",
        "agent.yaml:1:1: error: the agent is missing the required field 'steps'; "
        "add 'steps:' with at least one step [missing-field]",
    ]
