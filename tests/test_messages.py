"""Diagnostics read as plain words that say what to do, not as raw jsonschema dumps."""

from __future__ import annotations

from flowengine.graph import validate_text
from flowengine.steps.registry import builtin_kinds

from .conftest import BROKEN, run_cli

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


def test_an_input_steps_default_without_timeout_says_what_the_input_step_needs() -> None:
    path = BROKEN / "input_default_without_timeout.yaml"
    checked = run_cli("validate", str(path))
    assert checked.returncode == 1
    assert (
        f"{path}:3:3: error: in step 'confirm': 'default' is the answer taken once the wait "
        "is over; add 'timeout: SECONDS' (how long to wait), or remove 'default' "
        "[missing-field]" in checked.stderr + checked.stdout
    )
    assert "only goes with 'when'" not in checked.stderr + checked.stdout
    other = BROKEN / "input_timeout_without_default.yaml"
    said = run_cli("validate", str(other))
    assert "'timeout' needs 'default', the answer taken once it has passed" in (
        said.stderr + said.stdout
    )


def test_a_missing_type_lists_every_step_kind() -> None:
    checked = run_cli("validate", str(BROKEN / "missing_field.yaml"))
    said = checked.stderr + checked.stdout
    [line] = [line for line in said.splitlines() if "required field 'type'" in line]
    named = [kind.name for kind in builtin_kinds()]
    assert len(named) == 5 and "input" in named and "set" in named
    *first, last = [f"'type: {name}'" for name in named]
    assert f"; add {', '.join(first)} or {last} [missing-field]" in line
