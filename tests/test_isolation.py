"""Failing runs stay inside their step: a crash is the step's failure, a batch finishes, and
renders are bounded while they run (removed globals, reprs, time, nested values)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from flowengine.agentfile.templates import environment, render_bounded
from flowengine.graph.validate import validate_text
from flowengine.kernel.backends.scripted import Script, ScriptedBackend
from flowengine.kernel.kernel import Kernel
from flowengine.kernel.scheduler import SchedulerConfig
from flowengine.runtime.interpreter import AgentRun, RunSetup
from flowengine.runtime.session import Session, SessionConfig
from flowengine.storage.writer import Storage
from tests.conftest import run_cli
from tests.test_hardening import _errors, _run

CALCULATE = """\
name: {name}
tools: [calculator]
inputs: {{v: {{default: x}}}}
steps:
  Calc:
    type: process
    tool: calculator
    args: {{expression: "{expression}"}}
    next: Done
  Done:
    type: terminal
    output: "{{{{ last }}}}"
"""


def _scripted(tmp_path: Path, db: Path) -> list[str]:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"default": "fine"}))
    return ["--backend", "scripted", "--script", str(script), "--db", str(db)]


def test_a_nested_undefined_tool_argument_fails_its_run_and_the_batch_goes_on(
    tmp_path: Path,
) -> None:
    """Issue 14: these crashed the whole command with 'internal error: UndefinedError'."""
    files = []
    for name, expression in (
        ("Nested", "{{ [task.nope] }}"),
        ("Refused", "{{ [task]|map('attr', v)|list }}"),
        ("Function", "{{ dict(a=range) }}"),
        ("Good", "2 * 21"),
    ):
        path = tmp_path / f"{name}.yaml"
        path.write_text(CALCULATE.format(name=name, expression=expression))
        files.append(str(path))
    assert run_cli("validate", *files).returncode == 0  # only the run can tell
    db = tmp_path / "runs.duckdb"
    ran = run_cli("run", *files, "--input", "hi", "--var", "v=__class__", *_scripted(tmp_path, db))
    assert ran.returncode == 1
    assert "Traceback" not in ran.stderr and "internal error" not in ran.stderr
    for name in ("Nested", "Refused", "Function"):
        assert f"== {name} (run " in ran.stdout and "failed after 0 steps" in ran.stdout
    assert "completed after 2 steps" in ran.stdout and "'value': 42" in ran.stdout
    lines = ran.stderr.splitlines()
    assert any("tool argument 'expression'" in s and "no attribute 'nope'" in s for s in lines)
    assert any("'__class__' of 'str' object is unsafe" in line for line in lines)
    assert any("a function is not data" in line for line in lines)
    with duckdb.connect(str(db), read_only=True) as con:
        statuses = con.execute("SELECT agent, status FROM runs ORDER BY agent").fetchall()
        codes = con.execute("SELECT DISTINCT code FROM errors").fetchall()
    assert statuses == [
        ("Function", "failed"),
        ("Good", "completed"),
        ("Nested", "failed"),
        ("Refused", "failed"),
    ]
    assert codes == [("template-failed",)]


class BrokenLabels(ScriptedBackend):
    """A back end whose tokenizer breaks: a case no real part produces on demand."""

    def __init__(self) -> None:
        super().__init__(Script(default="fine"))
        self.calls = 0

    def encode(self, text: str) -> list[int]:
        if text in ("yes", "no"):
            self.calls += 1
            raise ZeroDivisionError("the tokenizer broke")
        return super().encode(text)


DECIDER = """\
name: Decider
steps:
  Pick:
    type: decision
    question: Go on?
    branches: {{yes: Done, no: Other}}
    {policy}
  Done:
    type: terminal
    output: done
  Other:
    type: terminal
    output: other
"""


@pytest.mark.parametrize(
    ("policy", "status", "output", "codes"),
    [
        ("", "failed", None, ["step-crashed"] * 2),  # the attempt, then the run's end
        ("retry: 2\n    on_error: Other", "completed", "other", ["step-crashed"] * 3),
    ],
)
def test_an_unexpected_exception_is_the_steps_failure_and_follows_on_error(
    tmp_path: Path, policy: str, status: str, output: str | None, codes: list[str]
) -> None:
    validated = validate_text(DECIDER.format(policy=policy), "decider.yaml")
    assert validated.agent is not None and not validated.errors
    storage = Storage(tmp_path / "runs.duckdb")
    backend = BrokenLabels()
    kernel = Kernel(backend, SchedulerConfig("fifo"), storage)
    outcome = AgentRun(kernel, RunSetup(validated.agent, "", "t")).run()
    kernel.close()
    assert (outcome.status, outcome.output) == (status, output)
    assert backend.calls == (3 if policy else 1)
    stored = _errors(storage, outcome.run_id)
    assert [code for _, code, _ in stored if code != "step-recovered"] == codes
    assert "ZeroDivisionError: the tokenizer broke" in stored[0][2]
    assert storage.query("SELECT status FROM runs") == [(status,)]
    storage.close()


def test_a_run_that_breaks_outside_its_steps_is_failed_and_the_others_finish(
    tmp_path: Path,
) -> None:
    text = "name: One\nsteps:\n  Done:\n    type: terminal\n    output: '{{ task }}'\n"
    agent = validate_text(text, "one.yaml").agent
    assert agent is not None
    broken = validate_text(text, "one.yaml").agent
    assert broken is not None
    broken.start = "Nowhere"  # a step the loop cannot find: outside any step
    script = tmp_path / "script.json"
    script.write_text("{}")
    config = SessionConfig(
        db=tmp_path / "runs.duckdb", backend="scripted", options={"script": script}
    )
    with Session(config) as session:
        setups = [(RunSetup(agent, text, f"task {i}"), None) for i in range(3)]
        setups.insert(1, (RunSetup(broken, text, "broken"), None))
        outcomes = session.run_all(setups)
        stored = session.storage.query("SELECT status, count(*) FROM runs GROUP BY 1 ORDER BY 1")
        codes = session.storage.query("SELECT code FROM errors")
    assert [o.status for o in outcomes] == ["completed", "failed", "completed", "completed"]
    assert "crashed" in (outcomes[1].error or "") and "Nowhere" in (outcomes[1].error or "")
    assert stored == [("completed", 3), ("failed", 1)]
    assert codes == [("run-crashed",)]


@pytest.mark.parametrize(
    "template",
    ["{{ lipsum }}", "{{ cycler.reset }}", "{{ joiner }}", "{{ namespace }}", "{{ lipsum.x }}"],
)
@pytest.mark.parametrize("where", ["instruction", "args"])
def test_validate_refuses_removed_globals_even_in_plain_substitutions(
    template: str, where: str
) -> None:
    field = (
        f"instruction: {template!r}"
        if where == "instruction"
        else f"tool: calculator\n    args: {{expression: {template!r}}}"
    )
    yaml = (
        f"name: Removed\ntools: [calculator]\nsteps:\n  Ask:\n    type: process\n    {field}\n"
        "    next: Done\n  Done:\n    type: terminal\n    output: done\n"
    )
    validated = validate_text(yaml, "removed.yaml")
    errors = [d for d in validated.diagnostics if d.severity.name.lower() == "error"]
    assert errors and "not available in templates" in errors[0].message
    assert errors[0].line == (6 if where == "instruction" else 7)


def _render(template: str, **context: Any) -> str:
    return render_bounded(lambda: environment().from_string(template).render(**context))


@pytest.mark.parametrize(
    "template",
    [
        "{{ range }}",
        "{{ dict }}",
        "{{ [range] }}",
        "{{ 'x' ~ range }}",
        "{{ task.upper }}",
        "{{ '{0.upper}'.format(task) }}",
        "{{ '%s' % task.upper }}",
        "{{ task.upper|string }}",
    ],
)
def test_printed_values_never_show_a_memory_address(template: str) -> None:
    with pytest.raises(Exception) as caught:
        _render(template, task="t")
    assert "not data" in str(caught.value) and "0x" not in str(caught.value)


def test_a_nested_undefined_is_an_error_when_printed() -> None:
    with pytest.raises(Exception, match="no attribute 'nope'"):
        _render("{{ [task.nope] }}", task="t")


@pytest.mark.parametrize(
    "template",
    [
        "{% for a in 'x' * 99999 %}{% for b in 'x' * 99999 %}{% endfor %}{% endfor %}",
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(40) }}",
    ],
)
def test_a_pathological_template_fails_the_step_quickly(tmp_path: Path, template: str) -> None:
    yaml = f"name: Slow\nsteps:\n  Done:\n    type: terminal\n    output: {json.dumps(template)}\n"
    started = time.perf_counter()
    outcome, storage = _run(tmp_path, yaml)
    took = time.perf_counter() - started
    assert outcome.status == "failed"
    assert "iterations" in (outcome.error or "") or "longer than" in (outcome.error or "")
    assert [code for _, code, _ in _errors(storage, outcome.run_id)] == ["template-failed"]
    assert took < 2, took  # the render budget is 0.25 s; generous for a busy machine
    storage.close()


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ '%5s|%-3d' % ('ab', 7) }}", "   ab|7  "),
        ("{{ 'ab'.center(6, '*') }}", "**ab**"),
        ("{{ '{:>5}'.format('ab') }}", "   ab"),
        ("{{ ['a', 'b']|join(', ') }}", "a, b"),
        ("{{ 'a-b'.replace('-', '+') }}", "a+b"),
        ("{{ 'x'|indent(2, true) }}", "  x"),
        (
            "{% for x in [1, 2, 3] %}{{ loop.index }}{{ loop.cycle('a', 'b') }}{% endfor %}",
            "1a2b3a",
        ),
        ("{{ dict(a=1).items()|list }}", "[('a', 1)]"),
        ("{{ [3, 1, 2]|sort|map('string')|join }}", "123"),
        ("{{ 'x' * 99999 }}", "x" * 99999),
    ],
)
def test_ordinary_templates_render_as_before(template: str, expected: str) -> None:
    assert _render(template) == expected
