"""Hostile templates, faults with retry and on_error, access control, runaway agents.

Runs go through the real interpreter, kernel and a DuckDB file, on the scripted backend.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from flowengine.agentfile.templates import environment, render_bounded
from flowengine.errors import AccessDenied
from flowengine.graph.validate import validate_text
from flowengine.kernel.backends.scripted import Rule, Script, ScriptedBackend
from flowengine.kernel.kernel import Kernel
from flowengine.kernel.scheduler import SchedulerConfig
from flowengine.runtime.interpreter import AgentRun, RunOutcome, RunSetup
from flowengine.storage.writer import Storage
from flowengine.tools.base import Tool
from flowengine.tools.catalog import builtin_tools
from flowengine.tools.registry import ToolRegistry

NO_ARGS: dict[str, Any] = {"type": "object", "properties": {}}


class Flaky:
    """Fails the first ``failures`` calls, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> dict[str, int]:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(f"flaky failure {self.calls}")
        return {"answer": 42}


def _hang() -> None:
    time.sleep(5)


def _garbage() -> object:
    return {"not data": object()}


def _tools(flaky: Flaky | None = None) -> ToolRegistry:
    registry = ToolRegistry(builtin_tools())
    for name, function, timeout in (
        ("flaky", flaky or Flaky(0), 5.0),
        ("hang", _hang, 0.2),
        ("garbage", _garbage, 5.0),
        ("broken", Flaky(10**9), 5.0),
    ):
        registry.register(Tool(name, name, NO_ARGS, function, timeout))
    return registry


def _run(
    tmp_path: Path,
    yaml: str,
    script: Script | None = None,
    tools: ToolRegistry | None = None,
    quota: int | None = None,
    inputs: dict[str, str] | None = None,
) -> tuple[RunOutcome, Storage]:
    # The agent is checked against the tools this kernel will have, test tools included.
    validated = validate_text(yaml, "agent.yaml", tools=tools.tools() if tools else None)
    assert not validated.errors, [d.format() for d in validated.errors]
    assert validated.agent is not None
    storage = Storage(tmp_path / "runs.duckdb")
    backend = ScriptedBackend(script or Script(default="fine"))
    extra = {"memory_quota": quota} if quota else {}
    kernel = Kernel(backend, SchedulerConfig("fifo"), storage, tools=tools, **extra)  # type: ignore[arg-type]
    outcome = AgentRun(kernel, RunSetup(validated.agent, yaml, "the task", inputs or {})).run()
    kernel.close()
    storage.commit()
    return outcome, storage


def _errors(storage: Storage, run_id: str) -> list[tuple[str, str, str]]:
    return [
        (row[0], row[1], row[2])
        for row in storage.query(
            "SELECT step_id, code, message FROM errors WHERE run_id = ? ORDER BY occurred",
            [run_id],
        )
    ]


# -- hostile templates and expressions ---------------------------------------------------

HOSTILE = {
    "{{ ''.__class__.__mro__[1].__subclasses__() }}": "private",
    "{{ task.__class__ }}": "private",
    "{{ task['__class__'] }}": "private",
    "{{ cycler(1, 2).__init__.__globals__ }}": "private",
    "{{ joiner().__call__ }}": "private",
    "{{ namespace(a=1) }}": "not available",
    "{{ lipsum(1000) }}": "not available",
    "{{ cycler('a') }}": "not available",
    "{{ task|attr('__class__') }}": "private",
    "{{ '{0.__class__}'.format(task) }}": "format-string",
    "{{ '{0[__globals__]}'.format(task) }}": "format-string",
}

AT_RUN_TIME = {
    "{{ task|attr('__class__') }}": "unsafe",
    "{{ '{0.__class__}'.format(task) }}": "unsafe",
    "{{ '%s'.__mod__ }}": "unsafe",
    "{{ 'x' * 1000000000 }}": "limited",
    "{{ [1] * 1000000000 }}": "limited",
    "{{ 2 ** 64 ** 64 ** 64 }}": "limited",
    "{{ '%0999999999d' % 1 }}": "limited",
    "{{ 'a'|center(1000000000) }}": "limited",
    "{{ 'a'|indent(1000000000, true) }}": "limited",
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}": ("range"),
    "{{ range(10000000000)|list }}": "range",
    "{{ task.upper.__self__ }}": "unsafe",
}


@pytest.mark.parametrize("template", sorted(HOSTILE))
def test_validate_refuses_templates_that_reach_for_python(template: str) -> None:
    yaml = (
        "name: Hostile\nsteps:\n  Ask:\n    type: process\n"
        f"    instruction: {template!r}\n    next: Done\n  Done:\n    type: terminal\n"
        "    output: done\n"
    )
    validated = validate_text(yaml, "hostile.yaml")
    errors = [d for d in validated.errors if d.code == "template-syntax"]
    assert errors, [d.format() for d in validated.diagnostics]
    assert HOSTILE[template] in errors[0].message
    assert errors[0].line == 5 and errors[0].column >= 18


@pytest.mark.parametrize("template", sorted(AT_RUN_TIME))
def test_rendering_refuses_escapes_and_huge_work(template: str) -> None:
    started = time.perf_counter()
    with pytest.raises(Exception) as caught:
        render_bounded(lambda: environment().from_string(template).render(task="t"))
    assert AT_RUN_TIME[template] in str(caught.value)
    assert time.perf_counter() - started < 5  # refused, not computed and thrown away


# The private name arrives as run input, so validate cannot see it: the sandbox must.
def test_a_hostile_template_fails_the_run_with_a_stored_error(tmp_path: Path) -> None:
    yaml = (
        "name: Hostile\ninputs: {field: {}}\nsteps:\n  Ask:\n    type: process\n"
        '    instruction: "{{ task|attr(field) }}"\n    next: Done\n'
        "  Done:\n    type: terminal\n    output: done\n"
    )
    outcome, storage = _run(tmp_path, yaml, inputs={"field": "__class__"})
    assert outcome.status == "failed" and "unsafe" in (outcome.error or "")
    assert [code for _, code, _ in _errors(storage, outcome.run_id)] == ["template-failed"]
    storage.close()


def test_when_expressions_cannot_reach_the_process(tmp_path: Path) -> None:
    yaml = (
        "name: Sneaky\ninputs: {field: {}}\nsteps:\n  Pick:\n    type: decision\n"
        "    question: which?\n    branches: {a: Done, b: Done}\n    when:\n"
        '      a: "task|attr(field)"\n    default: b\n'
        "  Done:\n    type: terminal\n    output: done\n"
    )
    outcome, storage = _run(tmp_path, yaml, inputs={"field": "__init__"})
    assert outcome.status == "failed" and "unsafe" in (outcome.error or "")
    storage.close()


# -- faults: retry and on_error ------------------------------------------------------------

TOOL_AGENT = """\
name: Faulty
tools: [flaky, hang, garbage, broken]
steps:
  Call:
    type: process
    tool: {tool}
    {policy}
    next: Done
  Done:
    type: terminal
    output: "{{{{ last }}}}"
"""
FALLBACK = """\
  Fallback:
    type: terminal
    output: fell back
"""


def _with_fallback(yaml: str) -> str:
    return yaml + FALLBACK if "Fallback" in yaml else yaml


def _tool_agent(tool: str, policy: str = "") -> str:
    return _with_fallback(TOOL_AGENT.format(tool=tool, policy=policy or "save_as: result"))


def test_a_flaky_tool_is_retried_until_it_answers(tmp_path: Path) -> None:
    flaky = Flaky(2)
    outcome, storage = _run(tmp_path, _tool_agent("flaky", "retry: 2"), tools=_tools(flaky))
    assert outcome.status == "completed" and flaky.calls == 3
    calls = storage.query("SELECT ok, error FROM tool_calls ORDER BY started")
    assert [ok for ok, _ in calls] == [False, False, True]
    assert "flaky failure 1" in calls[0][1]
    storage.close()


@pytest.mark.parametrize(
    ("tool", "says"),
    [
        ("broken", "RuntimeError"),
        ("hang", "did not finish within 0.2 s"),
        ("garbage", "not JSON data"),
    ],
)
def test_a_failing_tool_follows_on_error_fail(tmp_path: Path, tool: str, says: str) -> None:
    outcome, storage = _run(
        tmp_path, _tool_agent(tool, "retry: 1\n    on_error: fail"), tools=_tools()
    )
    assert outcome.status == "failed" and "tried 2 times" in (outcome.error or "")
    assert says in (outcome.error or "")
    calls = storage.query("SELECT ok, error FROM tool_calls")
    assert len(calls) == 2 and not any(ok for ok, _ in calls)
    codes = [code for _, code, _ in _errors(storage, outcome.run_id)]
    assert codes == ["tool-failed", "tool-failed", "tool-failed"]
    storage.close()


def test_on_error_can_name_a_step(tmp_path: Path) -> None:
    outcome, storage = _run(tmp_path, _tool_agent("broken", "on_error: Fallback"), tools=_tools())
    assert outcome.status == "completed" and outcome.output == "fell back"
    assert outcome.path == ["Call", "Fallback"]
    recovered = [m for _, code, m in _errors(storage, outcome.run_id) if code == "step-recovered"]
    assert len(recovered) == 1 and "went to 'Fallback'" in recovered[0]
    storage.close()


def test_a_tool_failure_continues_by_default_with_the_error_as_result(tmp_path: Path) -> None:
    outcome, storage = _run(tmp_path, _tool_agent("garbage"), tools=_tools())
    assert outcome.status == "completed"
    assert "not JSON data" in str(outcome.output)
    storage.close()


LLM_AGENT = """\
name: Asker
steps:
  Ask:
    type: process
    instruction: please answer
    {policy}
    next: Done
  Done:
    type: terminal
    output: "{{{{ last }}}}"
"""


def _llm_agent(policy: str) -> str:
    return _with_fallback(LLM_AGENT.format(policy=policy))


def _failing_model(times: int | None) -> Script:
    return Script(
        rules=[Rule("an answer", contains="please answer", error="model crashed", fail_times=times)]
    )


def test_a_failed_model_request_is_retried(tmp_path: Path) -> None:
    yaml = _llm_agent("retry: 2")
    outcome, storage = _run(tmp_path, yaml, script=_failing_model(2))
    assert outcome.status == "completed" and outcome.output == "an answer"
    errors = storage.query("SELECT error FROM llm_requests ORDER BY created")
    assert [e for (e,) in errors] == ["BackendError: model crashed"] * 2 + [None]
    storage.close()


def test_a_model_that_keeps_failing_fails_the_step_by_default(tmp_path: Path) -> None:
    outcome, storage = _run(tmp_path, _llm_agent("retry: 1"), _failing_model(None))
    # the run stops, resumable once the model answers again (`flowengine resume`)
    assert outcome.status == "interrupted"
    assert "the model failed (tried 2 times): BackendError: model crashed" in (outcome.error or "")
    assert f"flowengine resume {outcome.run_id}" in (outcome.error or "")
    assert [c for _, c, _ in _errors(storage, outcome.run_id)] == ["llm-failed"]
    storage.close()


def test_a_model_failure_can_continue_or_go_elsewhere(tmp_path: Path) -> None:
    yaml = _llm_agent("on_error: continue")
    outcome, storage = _run(tmp_path, yaml, _failing_model(None))
    assert outcome.status == "completed" and "model crashed" in str(outcome.output)
    storage.close()
    outcome, storage = _run(tmp_path, _llm_agent("on_error: Fallback"), _failing_model(None))
    assert outcome.status == "completed" and outcome.output == "fell back"
    storage.close()


def test_on_error_to_an_unknown_step_is_a_located_error() -> None:
    validated = validate_text(_llm_agent("on_error: Fallbak"), "a.yaml")
    [error] = [d for d in validated.errors if d.code == "unknown-target"]
    assert (error.line, error.column) == (6, 15)
    assert "'Fallbak', which is not a step" in error.message


# -- access control ----------------------------------------------------------------------


def test_an_undeclared_tool_is_refused_and_the_refusal_stored(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "a.duckdb")
    kernel = Kernel(ScriptedBackend(Script()), storage=storage, tools=_tools())
    kernel.register_run("r1", "A", ["flaky"])
    with pytest.raises(AccessDenied):
        kernel.call_tool("r1", "s", 1, "calculator", {"expression": "1+1"})
    kernel.close()
    [(code, message)] = storage.query("SELECT code, message FROM errors")
    assert code == "tool-denied" and "calculator" in message
    assert storage.query("SELECT count(*) FROM tool_calls") == [(0,)]
    storage.close()


def test_one_run_cannot_read_another_runs_memory() -> None:
    kernel = Kernel(ScriptedBackend(Script()))
    kernel.register_run("r1", "A", []).variables["secret"] = "r1 only"
    kernel.register_run("r2", "B", [])
    with pytest.raises(AccessDenied):
        kernel.memory.read("r2", "r1")
    assert kernel.memory.read("r1", "r1").variables == {"secret": "r1 only"}
    kernel.close()


def test_a_run_over_its_memory_quota_is_stopped_and_stored(tmp_path: Path) -> None:
    yaml = (
        "name: Hoarder\nmax_steps: 50\nsteps:\n  Grow:\n    type: process\n"
        "    instruction: grow\n    next: More\n  More:\n    type: decision\n"
        "    question: More?\n    branches: {yes: Grow, no: Done}\n"
        "  Done:\n    type: terminal\n    output: never\n"
    )
    script = Script(rules=[Rule("yes", contains="More?")], default="x" * 2000)
    outcome, storage = _run(tmp_path, yaml, script=script, quota=20_000)
    assert outcome.status == "failed" and "quota" in (outcome.error or "")
    assert outcome.steps < 30
    assert [c for _, c, _ in _errors(storage, outcome.run_id)] == ["memory-quota"]
    storage.close()


# -- runaway agents ----------------------------------------------------------------------

AGAIN = Script(rules=[Rule("yes", contains="Again?"), Rule("no", contains="Done yet?")])


@pytest.mark.parametrize(
    ("yaml", "status", "steps", "message"),
    [
        (  # a self-loop the model never leaves ends at the agent's max_steps
            "name: Spin\nmax_steps: 25\nsteps:\n  Spin:\n    type: decision\n"
            "    question: Again?\n    branches: {yes: Spin, no: End}\n"
            "  End:\n    type: terminal\n    output: never\n",
            "max_steps",
            25,
            "stopped after 25 steps (max_steps) before 'Spin'",
        ),
        (  # a two-step loop guarded by max_visits on its first step
            "name: Loop\nsteps:\n  A:\n    type: process\n    instruction: a\n    next: B\n"
            "    max_visits: 4\n  B:\n    type: decision\n    question: Done yet?\n"
            "    branches: {yes: End, no: A}\n  End:\n    type: terminal\n    output: never\n",
            "max_visits",
            8,
            "step 'A' would run a 5th time; its max_visits is 4",
        ),
        (  # a decision that always picks its back edge, guarded on the decision
            "name: Stuck\nmax_steps: 1000\nsteps:\n  Work:\n    type: process\n"
            "    instruction: work\n    next: Check\n  Check:\n    type: decision\n"
            "    question: Done yet?\n    branches: {yes: End, no: Work}\n    max_visits: 6\n"
            "  End:\n    type: terminal\n    output: done\n",
            "max_visits",
            13,
            "step 'Check' would run a 7th time; its max_visits is 6",
        ),
    ],
)
def test_runaway_agents_stop_with_a_clear_status(
    tmp_path: Path, yaml: str, status: str, steps: int, message: str
) -> None:
    outcome, storage = _run(tmp_path, yaml, script=AGAIN)
    assert outcome.status == status and outcome.steps == steps
    assert message in (outcome.error or "")
    [(stored_status, stored_steps)] = storage.query(
        "SELECT status, steps FROM runs WHERE run_id = ?", [outcome.run_id]
    )
    assert (stored_status, stored_steps) == (status, steps)
    assert storage.query("SELECT count(*) FROM steps") == [(steps,)]
    storage.close()


def test_a_number_too_large_to_store_fails_its_step_before_anything_changes(
    tmp_path: Path,
) -> None:
    """Python writes no integer of more than 4,300 digits as text, so such a value would
    have failed the step's checkpoint after the state had changed; it is refused where it
    is made, as the step's own error, and the run's stored rows say so."""
    from tests.conftest import run_cli

    agent = tmp_path / "big.yaml"
    agent.write_text(
        "name: Big\ndescription: Big numbers.\n"
        "state:\n  n: {schema: {type: integer}, default: 0}\n"
        "steps:\n  start:\n    type: set\n    set: {n: '{{ 10 ** 5000 }}'}\n    next: done\n"
        "  done:\n    type: terminal\n    output: '{{ n }}'\n"
    )
    script = tmp_path / "script.json"
    script.write_text('{"default": "ok"}')
    db = tmp_path / "big.duckdb"
    done = run_cli(
        "run", str(agent), "--input", "x", "--backend", "scripted", "--script", str(script),
        "--db", str(db),
    )  # fmt: skip
    assert done.returncode == 1
    assert "too large to keep" in done.stderr and "Traceback" not in done.stderr
    assert "internal error" not in done.stderr
    shown = run_cli("logs", "latest", "--db", str(db), "--json")
    detail = json.loads(shown.stdout)
    assert detail["run"]["status"] == "failed" and detail["steps"] == []
    assert any("too large to keep" in e["message"] for e in detail["errors"])
