"""Declared state with reducers, ``set`` on every step and the ``set`` step kind, and
structured outputs (issue 25, items 1-3): checked by ``validate``, run through the real
interpreter, kernel and a DuckDB file on the scripted backend, and through the CLI. The
real model runs the three-ideas loop in test_local_model.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flowengine.agentfile.reducers import UNSET, ReducerError, combine
from flowengine.graph.validate import validate_text
from flowengine.kernel.backends.scripted import Rule, Script, ScriptedBackend
from flowengine.kernel.kernel import Kernel
from flowengine.kernel.scheduler import SchedulerConfig
from flowengine.runtime.interpreter import AgentRun, RunOutcome, RunSetup
from flowengine.storage.checkpoints import fold
from flowengine.storage.writer import Storage
from tests.conftest import run_cli

IDEAS = """\
name: Ideas
max_steps: 20
state:
  ideas: {schema: {type: array, items: {type: string}}, default: [], reducer: append}
steps:
  think:
    type: process
    instruction: "One new idea for {{ task }}. So far: {{ ideas | join('; ') }}"
    save_as: ideas
    next: enough
  enough:
    type: decision
    question: Enough ideas?
    when: {yes: "ideas | length >= 3"}
    default: no
    branches: {yes: done, no: think}
  done:
    type: terminal
    output: {ideas: "{{ ideas }}", count: "{{ ideas | length }}", about: "for {{ task }}"}
    schema:
      type: object
      required: [ideas, count]
      properties: {ideas: {type: array, minItems: 3}, count: {type: integer}}
"""

IDEAS_SCRIPT = Script(
    default="idea one",
    rules=[
        Rule("idea three", "So far: idea one; idea two"),
        Rule("idea two", "So far: idea one"),
    ],
)


def _run(tmp_path: Path, yaml: str, script: Script | None = None) -> tuple[RunOutcome, Storage]:
    validated = validate_text(yaml, "agent.yaml")
    assert not validated.errors, [d.format() for d in validated.errors]
    assert validated.agent is not None
    storage = Storage(tmp_path / "runs.duckdb")
    kernel = Kernel(
        ScriptedBackend(script or Script(default="fine")), SchedulerConfig("fifo"), storage
    )
    outcome = AgentRun(kernel, RunSetup(validated.agent, yaml, "a party", {})).run()
    kernel.close()
    storage.commit()
    return outcome, storage


def _codes(yaml: str) -> list[tuple[str, int, str]]:
    return [(d.code, d.line, d.message) for d in validate_text(yaml, "agent.yaml").diagnostics]


def _states(storage: Storage, run_id: str) -> list[tuple[str, Any]]:
    rows = storage.query(
        "SELECT step_id, result, state FROM steps WHERE run_id = ? ORDER BY seq", [run_id]
    )
    return [(step_id, json.loads(state)["set"]) for step_id, _, state in rows]


# -- reducers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reducer", "current", "value", "expected"),
    [
        ("replace", [1], [2], [2]),
        ("append", UNSET, "a", ["a"]),
        ("append", ["a"], "b", ["a", "b"]),
        ("extend", ["a"], ["b", "c"], ["a", "b", "c"]),
        ("extend", UNSET, ["b"], ["b"]),
        ("merge", {"a": 1, "b": 1}, {"b": 2}, {"a": 1, "b": 2}),
        ("add", 2, 3, 5),
        ("add", UNSET, 3, 3),
        ("max", 2, 7, 7),
        ("max", 9, 7, 9),
        ("min", 2, 7, 2),
    ],
)
def test_named_reducers_combine_current_and_new(
    reducer: str, current: Any, value: Any, expected: Any
) -> None:
    assert combine(reducer, current, value) == expected


@pytest.mark.parametrize(
    ("reducer", "current", "value", "said"),
    [
        ("append", 3, "a", "needs a list to append to, and the variable holds a number"),
        ("extend", [], "a", "needs a list of items to add, and got text"),
        ("merge", {}, [1], "needs a mapping to merge in, and got a list"),
        ("add", 1, "2", "needs a number, and got text"),
        ("max", 1, True, "needs a number, and got a boolean"),
    ],
)
def test_a_reducer_refuses_what_it_cannot_combine(
    reducer: str, current: Any, value: Any, said: str
) -> None:
    with pytest.raises(ReducerError, match=said):
        combine(reducer, current, value)


# -- the three-ideas loop --------------------------------------------------------------


def test_three_ideas_are_collected_by_an_append_reducer_and_output_with_their_types(
    tmp_path: Path,
) -> None:
    outcome, storage = _run(tmp_path, IDEAS, IDEAS_SCRIPT)
    assert outcome.status == "completed", outcome.error
    assert outcome.output == {
        "ideas": ["idea one", "idea two", "idea three"],
        "count": 3,  # a lone {{ expression }} keeps its type
        "about": "for a party",
    }
    assert outcome.output_valid is True
    # Each step stored the variable's new value, and the fold of the rows is the memory.
    states = _states(storage, outcome.run_id)
    assert [s for s in states if s[0] == "think"] == [
        ("think", {"ideas": ["idea one"]}),
        ("think", {"ideas": ["idea one", "idea two"]}),
        ("think", {"ideas": ["idea one", "idea two", "idea three"]}),
    ]
    rows = storage.query(
        "SELECT step_id, result, state FROM steps WHERE run_id = ? ORDER BY seq",
        [outcome.run_id],
    )
    assert fold(rows)["variables"]["ideas"] == ["idea one", "idea two", "idea three"]


def test_a_structured_output_that_fails_its_schema_is_reported(tmp_path: Path) -> None:
    yaml = IDEAS.replace("minItems: 3", "minItems: 4")
    outcome, storage = _run(tmp_path, yaml, IDEAS_SCRIPT)
    assert outcome.output_valid is False
    assert outcome.output_errors == ["ideas: ['idea one', 'idea two', 'idea three'] is too short"]
    assert outcome.status == "output_invalid"
    assert storage.query(
        "SELECT code FROM errors WHERE run_id = ? ORDER BY occurred", [outcome.run_id]
    ) == [("output-invalid",), ("run-output-invalid",)]
    assert storage.query("SELECT status FROM runs") == [("output_invalid",)]


def test_a_value_that_fails_the_declared_schema_is_a_located_run_error(tmp_path: Path) -> None:
    yaml = IDEAS.replace("items: {type: string}", "items: {type: string, maxLength: 8}")
    outcome, storage = _run(tmp_path, yaml, IDEAS_SCRIPT)
    assert outcome.status == "failed"
    assert outcome.error is not None
    # file:line:col of the save_as that wrote it
    assert outcome.error.startswith("agent.yaml:9:14: step 'think': state 'ideas' would become")
    assert "does not match its schema: 2: 'idea three' is too long" in outcome.error
    assert outcome.path == ["think", "enough", "think", "enough"]  # the third failed
    assert storage.query("SELECT code FROM errors WHERE run_id = ?", [outcome.run_id]) == [
        ("state-invalid",)
    ]


def test_a_value_a_reducer_cannot_combine_is_a_located_run_error(tmp_path: Path) -> None:
    yaml = """\
name: Count
state:
  total: {default: 0, reducer: add}
steps:
  ask:
    type: process
    instruction: A number, please.
    set: {total: "{{ result }}"}
    next: done
  done: {type: terminal, output: "{{ total }}"}
"""
    outcome, _ = _run(tmp_path, yaml, Script(default="seven"))
    assert outcome.status == "failed"
    assert outcome.error == (
        "agent.yaml:8:18: step 'ask': state 'total' cannot take 'seven': 'add' needs a "
        "number, and got text"
    )


# -- set, on every kind and as a kind of its own ---------------------------------------

SETS = """\
name: Sets
max_steps: 30
state:
  count: {schema: {type: integer}, default: 0, reducer: add}
  best: {default: 0, reducer: max}
  seen: {default: {}, reducer: merge}
  words: {default: [], reducer: extend}
  log: {default: "", reducer: "current ~ value ~ ';'"}
steps:
  start:
    type: set
    set: {count: "{{ 1 }}", log: start, plain: "{{ {'a': [1, 2]} }}"}
    next: ask
  ask:
    type: process
    instruction: Say something.
    save_as: said
    set:
      count: "{{ 2 }}"
      best: "{{ result | length }}"
      seen: {said: "{{ said }}", n: "{{ visits['ask'] }}"}
      words: ["{{ result }}", "and {{ said }}"]
      log: ask
    next: check
  check:
    type: decision
    question: Again?
    when: {again: "visits['ask'] < 2"}
    default: stop
    set: {log: "{{ result }}"}
    branches: {again: ask, stop: done}
  done:
    type: terminal
    output:
      count: "{{ count }}"
      best: "{{ best }}"
      seen: "{{ seen }}"
      words: "{{ words }}"
      log: "{{ log }}"
      plain: "{{ plain }}"
      visits_before: "{{ visits['done'] }}"
    schema: {type: object, required: [count]}
"""


def test_set_writes_through_reducers_on_every_kind_and_the_set_kind(tmp_path: Path) -> None:
    outcome, storage = _run(tmp_path, SETS, Script(default="hello"))
    assert outcome.status == "completed", outcome.error
    assert outcome.path == ["start", "ask", "check", "ask", "check", "done"]
    assert outcome.output == {
        "count": 5,
        "best": 5,
        "seen": {"said": "hello", "n": 1},
        "words": ["hello", "and hello", "hello", "and hello"],
        "log": "start;ask;again;ask;stop;",
        "plain": {"a": [1, 2]},  # undeclared: replaced, as save_as always did
        "visits_before": 0,  # a step not run yet has 0 visits
    }
    states = _states(storage, outcome.run_id)
    assert states[0] == ("start", {"count": 1, "log": "start;", "plain": {"a": [1, 2]}})
    assert states[1][1]["count"] == 3 and states[1][1]["said"] == "hello"


def test_validate_checks_declared_state() -> None:
    yaml = """\
name: Bad
state:
  a: {schema: {type: integer}, default: "zero"}
  b: {schema: {type: intger}}
  c: {reducer: apend}
  d: {reducer: "current + other"}
  e: {reducer: "current +"}
  f: {reducer: "current + [value]"}
steps:
  go:
    type: set
    set: {task: "{{ 1 }}"}
    next: end
  end: {type: terminal, output: done}
"""
    found = _codes(yaml)
    assert [(code, line) for code, line, _ in found] == [
        ("invalid-state-default", 3),
        ("invalid-state-schema", 4),
        ("invalid-reducer", 5),
        ("invalid-reducer", 6),
        ("invalid-reducer", 7),
        ("shadowed-variable", 12),
    ]
    messages = [message for _, _, message in found]
    assert "did you mean 'append'?" in messages[2]
    assert "reads 'other'" in messages[3]


def test_a_set_step_needs_set_and_next_and_takes_nothing_else() -> None:
    yaml = """\
name: Bad
steps:
  go:
    type: set
    instruction: hi
    next: end
  end: {type: terminal, output: done}
"""
    codes = [code for code, _, _ in _codes(yaml)]
    assert sorted(codes) == ["missing-field", "unknown-field"], codes


def test_old_agent_files_validate_with_no_new_diagnostic() -> None:
    done = run_cli("validate", "agents/")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 errors, 0 warnings" in done.stderr


def test_the_ideas_loop_runs_through_the_cli(tmp_path: Path) -> None:
    agent = tmp_path / "ideas.yaml"
    agent.write_text(IDEAS)
    script = tmp_path / "script.json"
    script.write_text(
        json.dumps(
            {
                "default": "idea one",
                "rules": [
                    {"contains": "So far: idea one; idea two", "reply": "idea three"},
                    {"contains": "So far: idea one", "reply": "idea two"},
                ],
            }
        )
    )
    db = tmp_path / "runs.duckdb"
    done = run_cli(
        "run", str(agent), "--input", "a party", "--backend", "scripted",
        "--script", str(script), "--db", str(db), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [outcome] = json.loads(done.stdout)
    assert outcome["output"]["ideas"] == ["idea one", "idea two", "idea three"]
    assert outcome["output"]["count"] == 3


# -- definite assignment ---------------------------------------------------------------

BRANCHY = """\
name: Branchy
max_steps: 20
{state}
steps:
  triage:
    type: decision
    question: Broken?
    branches: {{broken: diagnose, fine: loop}}
  diagnose:
    type: process
    instruction: Diagnose.
    save_as: diagnosis
    next: loop
  loop:
    type: process
    instruction: "Again? {{{{ diagnosis{use} }}}}"
    next: again
  again:
    type: decision
    question: Again?
    branches: {{yes: loop, no: done}}
  done:
    type: terminal
    output: ok
"""


@pytest.mark.parametrize(
    ("state", "use", "codes"),
    [
        ("", "", ["maybe-undefined"]),
        ("state: {diagnosis: {default: none}}", "", []),  # a declared default counts as set
        ("", " | default('none')", []),  # a guarded use
        ("", " if diagnosis is defined else ''", []),
    ],
)
def test_a_variable_set_on_one_branch_only_is_an_error_unless_defaulted_or_guarded(
    state: str, use: str, codes: list[str]
) -> None:
    found = _codes(BRANCHY.format(state=state, use=use))
    assert [code for code, _, _ in found] == codes
    if codes:
        assert "'triage' -> 'loop'" in found[0][2]


def test_a_loop_that_sets_a_variable_before_every_use_passes() -> None:
    yaml = """\
name: Loop
max_steps: 20
steps:
  think:
    type: process
    instruction: An idea.
    save_as: idea
    next: check
  check:
    type: decision
    question: "Is {{ idea }} good?"
    branches: {no: think, yes: done}
  done:
    type: terminal
    output: "{{ idea }}"
"""
    assert _codes(yaml) == []


def test_validate_catches_the_one_branch_variable_before_a_person_is_asked() -> None:
    done = run_cli("validate", "tests/broken/maybe_undefined.yaml", "--format", "json")
    assert done.returncode == 1
    [diagnostic] = json.loads(done.stdout)
    assert diagnostic["code"] == "maybe-undefined"
    assert "'triage' -> 'approve' -> 'report'" in diagnostic["message"]


# -- rules first, then the model -------------------------------------------------------

RULES_THEN_MODEL = """\
name: RulesThenModel
inputs:
  size: {default: "0"}
steps:
  check:
    type: decision
    question: Is the order big or small?
    when: {big: "size | int > 10"}
    branches: {big: done, small: done, medium: done}
    save_as: chosen
  done: {type: terminal, output: "{{ chosen }}"}
"""


@pytest.mark.parametrize(("size", "label"), [("50", "big"), ("3", "small")])
def test_a_decision_with_when_and_no_default_asks_the_model_when_no_rule_matches(
    tmp_path: Path, size: str, label: str
) -> None:
    assert _codes(RULES_THEN_MODEL) == []  # no missing-default, no unused-branch
    validated = validate_text(RULES_THEN_MODEL, "agent.yaml")
    assert validated.agent is not None
    storage = Storage(tmp_path / "runs.duckdb")
    kernel = Kernel(ScriptedBackend(Script(default="small")), SchedulerConfig("fifo"), storage)
    setup = RunSetup(validated.agent, RULES_THEN_MODEL, "an order", {"size": size})
    outcome = AgentRun(kernel, setup).run()
    kernel.close()
    storage.commit()
    assert outcome.output == label
    asked = storage.query("SELECT count(*) FROM llm_requests WHERE kind = 'choose'")
    assert asked == [(0 if label == "big" else 1,)]


# -- the run tells the truth -----------------------------------------------------------


def test_run_prints_validate_warnings_first_and_an_invalid_final_output_fails(
    tmp_path: Path,
) -> None:
    agent = tmp_path / "ideas.yaml"
    # No loop guard (a warning), and an output schema the collected ideas cannot meet.
    agent.write_text(IDEAS.replace("max_steps: 20\n", "").replace("minItems: 3", "minItems: 4"))
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"default": "idea one"}))
    db = tmp_path / "runs.duckdb"
    done = run_cli(
        "run", str(agent), "--input", "a party", "--backend", "scripted",
        "--script", str(script), "--db", str(db),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    first = done.stderr.splitlines()[0]
    assert first.startswith(f"{agent}:5:3: warning: steps 'think', 'enough' form a loop")
    assert "== Ideas (run " in done.stdout and "): output_invalid after 7 steps" in done.stdout
    assert "ideas: ['idea one', 'idea one', 'idea one'] is too short" in done.stderr
    logs = run_cli("logs", "--db", str(db))
    assert "output_invalid" in logs.stdout


# -- typed templates -------------------------------------------------------------------


def test_every_built_in_tool_returns_what_its_result_schema_says() -> None:
    from jsonschema import Draft202012Validator

    from flowengine.tools.catalog import builtin_tools

    calls = {
        "calculator": {"expression": "(3 + 4) * 2"},
        "plan_trip": {"query": "Plan a 3-day trip from Seattle to California"},
        "search_flights": {"origin": "Seattle", "destination": "San Francisco"},
        "search_distance": {"origin": "Seattle", "destination": "Sacramento", "mode": "taxi"},
        "search_restaurants": {"city": "Sacramento"},
        "search_accommodations": {"city": "Sacramento"},
        "search_attractions": {"city": "Sacramento"},
    }
    tools = {tool.name: tool for tool in builtin_tools()}
    assert set(calls) == set(tools)
    for name, args in calls.items():
        tool = tools[name]
        assert tool.result is not None, name
        value = tool.function(**args)  # the real tool, on the sample data
        assert list(Draft202012Validator(tool.result).iter_errors(value)) == [], name


def test_flowengine_tools_shows_what_a_tool_returns() -> None:
    text = run_cli("tools", "calculator")
    assert text.returncode == 0, text.stderr
    assert "  returns:\n    expression  string" in text.stdout
    assert "    value       number  (its value)" in text.stdout
    listed = run_cli("tools", "search_restaurants", "--format", "json")
    [tool] = json.loads(listed.stdout)
    rows = tool["result"]["properties"]["restaurants"]["items"]["properties"]
    assert set(rows) == {"name", "cuisine", "average_cost", "rating"}


def test_a_misspelt_field_of_a_tool_result_is_an_error_with_a_suggestion() -> None:
    yaml = """\
name: Refund
tools: [calculator]
steps:
  compute:
    type: process
    tool: calculator
    args: {expression: "2 * 21"}
    save_as: refund
    next: done
  done:
    type: terminal
    output: "{{ refund.valeu }} {{ refund.value }} {{ refund.error }} {{ refund.items() }}"
"""
    [(code, line, message)] = _codes(yaml)
    assert (code, line) == ("unknown-attribute", 12)
    assert "reads 'refund.valeu', but refund has no field 'valeu'; did you mean 'value'?" in message


def test_where_a_type_cannot_be_known_nothing_is_said() -> None:
    yaml = """\
name: Free
tools: [calculator]
steps:
  ask:
    type: process
    instruction: Anything.
    save_as: refund
    next: compute
  compute:
    type: process
    tool: calculator
    args: {expression: "1"}
    save_as: refund
    next: done
  done:
    type: terminal
    output: "{{ refund.valeu }} {% for r in [1] %}{{ r.whatever }}{% endfor %}"
"""
    assert _codes(yaml) == []  # one writer is free text: the field may be there


def test_an_input_step_sets_through_a_reducer_and_resume_keeps_the_state(tmp_path: Path) -> None:
    agent = tmp_path / "ask.yaml"
    agent.write_text(
        """\
name: Ask
state:
  notes: {schema: {type: array}, default: [first], reducer: extend}
steps:
  ask:
    type: input
    ask: "Notes so far: {{ notes | join(', ') }}. More?"
    set: {notes: "{{ result.split(' ') }}"}
    next: done
  done:
    type: terminal
    output: {notes: "{{ notes }}"}
"""
    )
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"default": "unused"}))
    db = tmp_path / "runs.duckdb"
    backend = ["--backend", "scripted", "--script", str(script), "--db", str(db)]
    started = run_cli("run", str(agent), "--input", "x", *backend, "--json")
    assert started.returncode == 3, started.stderr
    [waiting] = json.loads(started.stdout)
    assert waiting["question"] == "Notes so far: first. More?"  # the declared default
    resumed = run_cli("resume", waiting["run_id"], "--answer", "second third", *backend)
    assert resumed.returncode == 0, resumed.stderr
    storage = Storage(db)
    [(output, status)] = storage.query("SELECT output, status FROM runs")
    assert status == "completed"
    assert json.loads(output) == {"notes": ["first", "second", "third"]}


ON_ERROR_INTO_STATE = """\
name: OnErr
description: A tool step that fails, goes on, and saves into declared state.
tools: [calculator]
state:
  total: {schema: {type: number}, default: 0, reducer: add}
  errors: {default: [], reducer: append}
steps:
  add_one:
    type: process
    tool: calculator
    args: {expression: "1 + 1"}
    set: {total: "{{ result.value }}"}
    next: calc
  calc:
    type: process
    tool: calculator
    args: {expression: "1/0"}
    on_error: continue
    save_as: total
    set: {errors: "{{ result.error if result.error is defined else none }}"}
    next: done
  done:
    type: terminal
    output: {total: "{{ total }}", errors: "{{ errors }}"}
"""


def test_a_failed_step_that_goes_on_keeps_its_declared_variable(tmp_path: Path) -> None:
    """The error a step went on from is its result, but a declared variable's reducer and
    schema are for what the step makes: 'total' keeps its value (no run failure for
    adding a mapping to a number), and set: still sees the error."""
    outcome, storage = _run(tmp_path, ON_ERROR_INTO_STATE)
    assert outcome.status == "completed", outcome.error
    assert outcome.output == {"total": 2, "errors": ["division by zero"]}
    storage.close()
