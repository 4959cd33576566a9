"""``flowengine test``: test files are checked with located diagnostics, cases run with
mocked replies and tool results (through the real CLI, into a real DuckDB file), failures
point at their expectation's line, JUnit XML and pass^N come out, a recorded run replays,
and one step runs alone. The cases that need the embedded model are the agents' own
(``agents/*.test.yaml``, run by ``make test`` through ``flowengine test``)."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import duckdb
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from flowengine.testing import checks
from flowengine.testing.spec import TEST_CODES, file_schema, load_test_file

from .conftest import AGENTS, ROOT, run_cli

MATH_CASE = """\
agent: math_agent.yaml
cases:
  - name: multiplies
    input: What is 6 times 7?
    mocks:
      model:
        understand: Multiply 6 by 7.
        classify: arithmetic
        write_expression: 6 * 7
        check: "yes"
        answer: 6 times 7 is 42.
    expect:
      path: [understand, classify, write_expression, calculate, check, answer]
      output: {contains: "42"}
  - name: wrong on purpose
    input: What is 6 times 7?
    mocks:
      model: {understand: x, classify: arithmetic, write_expression: 6 * 7, check: "yes",
              answer: 6 times 7 is 42.}
      tools:
        calculate: {result: {value: 41}}
    expect:
      variables: {result: {value: 42}}
      output:
        contains: "43"
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    # The MathAgent from before issue 27 (a model decision, free-text steps): the cases
    # here mock its replies; agents/math_agent.test.yaml tests today's.
    shutil.copy(ROOT / "tests" / "data" / "classic_math_agent.yaml", tmp_path / "math_agent.yaml")
    shutil.copy(AGENTS / "travel_agent_confirm.yaml", tmp_path)
    return tmp_path


def _write(folder: Path, text: str, name: str = "math.test.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_failing_expectation_shows_expected_and_actual_at_its_line(folder: Path) -> None:
    path = _write(folder, MATH_CASE)
    db, xml = folder / "t.duckdb", folder / "junit.xml"
    done = run_cli(
        "test",
        str(path),
        "--backend",
        "scripted",
        "--db",
        str(db),
        "--junit-xml",
        str(xml),
        cwd=folder,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1] == f"{path} .F"
    # both failures of the case, each at the line of its expectation
    assert f"{path}:23:7: expect variables" in lines
    assert '  expected: {"result": {"value": 42}}' in lines
    assert '  actual:   {"result": {"value": 41}}' in lines
    assert f"{path}:25:9: expect output.contains" in lines
    assert "  expected: an output containing '43'" in lines
    assert lines[-1].startswith("== 1 failed, 1 passed in ")
    # JUnit XML for CI: one suite a file, the failure with its location
    suite = ET.parse(xml).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "1"
    failure = suite.find("testcase[@name='wrong on purpose']/failure")
    assert failure is not None and f"{path}:25:9" in (failure.text or "")
    # each attempt stored, linked to the run it made
    with duckdb.connect(str(db), read_only=True) as connection:
        rows = connection.execute(
            "SELECT case_name, passed, run_ids->>0, failures FROM test_cases ORDER BY case_name"
        ).fetchall()
        assert [(name, passed) for name, passed, _, _ in rows] == [
            ("multiplies", True),
            ("wrong on purpose", False),
        ]
        for _, _, run_id, _ in rows:
            (status,) = connection.execute(
                "SELECT status FROM runs WHERE run_id = ?", [run_id]
            ).fetchone()
            assert status == "completed"
        assert json.loads(rows[1][3])[0]["at"] == f"{path}:23:7"
        # the mocked tool call is stored as a real one would be
        (stored,) = connection.execute(
            "SELECT result FROM tool_calls WHERE run_id = ?", [rows[1][2]]
        ).fetchone()
        assert json.loads(stored) == {"value": 41}


def test_k_selects_and_repeat_reports_pass_at_1_and_pass_hat_n(folder: Path) -> None:
    path = _write(folder, MATH_CASE)
    done = run_cli(
        "test",
        str(path),
        "-k",
        "multi",
        "--repeat",
        "3",
        "--backend",
        "scripted",
        "--db",
        str(folder / "t.duckdb"),
        cwd=folder,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{path} ..." in done.stdout
    assert "1 passed, 1 deselected" in done.stdout
    row = next(line for line in done.stdout.splitlines() if "::multiplies " in line)
    assert row.split()[-3:] == ["3/3", "1.00", "1"]
    done = run_cli(
        "test",
        str(path),
        "-k",
        "not multi",
        "--repeat",
        "2",
        "--backend",
        "scripted",
        "--db",
        str(folder / "t.duckdb"),
        cwd=folder,
    )
    assert done.returncode == 1
    row = next(
        line
        for line in done.stdout.splitlines()
        if "::wrong on purpose " in line and not line.startswith("__")
    )
    assert row.split()[-3:] == ["0/2", "0.00", "0"]


ASKING_AGENT = """\
name: Booker
steps:
  plan:
    type: process
    instruction: Plan {{ task }}.
    save_as: plan
    next: confirm
  confirm:
    type: input
    ask: "Book this? {{ plan }}"
    schema: {type: object, required: [ok], properties: {ok: {enum: ["yes", "no"]}}}
    save_as: answer
    next: decide
  decide:
    type: decision
    question: Booked?
    when: {booked: "answer.ok == 'yes'"}
    default: again
    branches: {booked: done, again: plan}
    max_visits: 3
  done:
    type: terminal
    output: "Booked: {{ plan }}"
"""


def test_a_run_that_asks_a_person_is_answered_by_the_case(folder: Path) -> None:
    (folder / "booker.yaml").write_text(ASKING_AGENT)
    _write(
        folder,
        """\
agent: booker.yaml
cases:
  - name: no, then yes
    input: a weekend in Rome
    mocks:
      model:
        plan: [Two nights at Hotel A., Two nights at Hotel B.]
    answers:
      confirm: [{ok: "no"}, {ok: "yes"}]
    expect:
      path: [plan, confirm, decide, plan, confirm, decide, done]
      variables: {answer: {ok: "yes"}}
      output: {equals: "Booked: Two nights at Hotel B."}
  - name: no answer leaves it waiting
    input: a weekend in Rome
    mocks: {model: {plan: Hotel A.}}
    expect:
      status: waiting
      path: [plan]
  - name: an answer that fails the schema
    input: a weekend in Rome
    mocks: {model: {plan: Hotel A.}}
    answers: {confirm: {ok: maybe}}
    expect: {status: completed}
""",
        "booker.test.yaml",
    )
    done = run_cli("test", "booker.test.yaml", "--db", str(folder / "t.duckdb"), "-v", cwd=folder)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "booker.test.yaml::no, then yes PASSED" in done.stdout
    assert "booker.test.yaml::no answer leaves it waiting PASSED" in done.stdout
    assert "booker.test.yaml::an answer that fails the schema FAILED" in done.stdout
    assert (
        "  actual:   waiting (the case's answer was refused: run " in done.stdout
        and "does not match the step's schema at ok: 'maybe' is not one of ['yes', 'no']"
        in done.stdout
    )
    assert "on mocks only" in done.stdout  # every reply mocked: no model was loaded
    assert "Traceback" not in done.stdout + done.stderr


def test_unknown_steps_branches_and_variables_are_located_with_did_you_mean(
    folder: Path,
) -> None:
    path = _write(
        folder,
        """\
agent: math_agent.yaml
cases:
  - name: typos
    variables: {citty: Paris}
    mocks:
      model:
        clasify: arithmetic
        check: maybe
      tools:
        write_expression: {result: 1}
    expect:
      path: [understand, anwser]
      variables: {resutl: 1}
  - name: typos
""",
    )
    loaded = load_test_file(path)
    assert loaded.test is None
    found = {(d.line, d.column, d.code): d.message for d in loaded.diagnostics}
    assert found[(4, 17, "test-unknown-variable")].startswith("MathAgent has no input 'citty'")
    assert "did you mean 'classify'?" in found[(7, 9, "test-unknown-step")]
    assert "'maybe' is not a branch of decision 'check'" in found[(8, 16, "test-unknown-branch")]
    assert "calls no tool" in found[(10, 9, "test-bad-mock")]
    assert "did you mean 'answer'?" in found[(12, 26, "test-unknown-step")]
    assert "did you mean 'result'?" in found[(13, 19, "test-unknown-variable")]
    assert (14, 11, "test-duplicate-case") in found
    # and on the command line: the diagnostics, exit 1, no traceback
    xml = folder / "junit.xml"
    done = run_cli("test", str(path), "--backend", "scripted", "--junit-xml", str(xml), cwd=folder)
    assert done.returncode == 1
    assert f"{path}:7:9: error: MathAgent has no step 'clasify'" in done.stderr
    error = ET.parse(xml).getroot().find("testsuite/testcase/error")  # CI sees it too
    assert error is not None and f"{path}:7:9: error: MathAgent has no step" in (error.text or "")
    assert "Traceback" not in done.stderr
    # validate checks a test file as one, beside the agents
    done = run_cli("validate", str(folder))
    assert done.returncode == 1
    assert (
        f"{path}:7:9: error: MathAgent has no step 'clasify'; did you mean 'classify'? "
        "[test-unknown-step]" in done.stdout
    )
    assert done.stderr.strip().endswith("7 errors, 0 warnings")


@pytest.mark.parametrize(
    "text, where",
    [
        ("agent: nothere.yaml\ncases: [{name: a}]\n", "1:8: error: no agent file 'nothere.yaml'"),
        (
            "agent: math_agent.yaml\ncases: [{name: a, expect: {output: {matches: '('}}}]\n",
            "2:37: error: the regular expression does not compile",
        ),
        (
            "agent: math_agent.yaml\ncases: [{name: a, expect: {output: {expression: '1 +'}}}]\n",
            "2:37: error: the expression does not compile",
        ),
        ("agent: [unclosed\n", "error: "),
        (
            "agent: math_agent.yaml\ncases: [{name: a, expect: {outptu: {}}}]\n",
            "2:28: error: unknown field 'outptu'; did you mean 'output'?",
        ),
        ("\x00", "error: the file holds binary data"),
        ('agent: "a\\0b.yaml"\ncases: [{name: a}]\n', "1:8: error: cannot read the agent file"),
        (f"agent: {'x' * 300}.yaml\ncases: [{{name: a}}]\n", "1:8: error: "),
    ],
)
def test_broken_test_files_get_one_located_line(folder: Path, text: str, where: str) -> None:
    path = _write(folder, text)
    done = run_cli("test", str(path), cwd=folder)
    assert done.returncode == 1, done.stdout
    assert f"{path}:" in done.stderr and where in done.stderr
    assert "Traceback" not in done.stderr


def test_usage_errors_exit_2(folder: Path) -> None:
    assert run_cli("test", "nothing/here", cwd=folder).returncode == 2
    empty = folder / "empty"
    empty.mkdir()
    done = run_cli("test", str(empty), cwd=folder)
    assert done.returncode == 2 and "no test files" in done.stderr
    done = run_cli("test", "record", cwd=folder)
    assert done.returncode == 2
    done = run_cli("test", "step", "math_agent.yaml", "chek", "--backend", "scripted", cwd=folder)
    assert done.returncode == 2 and "did you mean 'check'?" in done.stderr


def test_a_recorded_run_replays_and_passes(folder: Path) -> None:
    """A run on the scripted backend (a script: the "real" model here), recorded, then
    replayed with no model at all."""
    script = folder / "script.json"
    script.write_text(
        json.dumps(
            {
                "default": "Fine.",
                "rules": [
                    {"contains": "Which kind of mathematics", "reply": "arithmetic"},
                    {"contains": "single arithmetic expression", "reply": "(2 + 3) * 4"},
                    {"contains": "Does this solve", "reply": "yes"},
                    {"contains": "clear explanation", "reply": "It is 20.\n\nDone."},
                ],
            }
        )
    )
    db = folder / "runs.duckdb"
    ran = run_cli(
        "run",
        "math_agent.yaml",
        "-i",
        "What is (2+3)*4?",
        "--backend",
        "scripted",
        "--script",
        str(script),
        "--db",
        str(db),
        "--json",
        cwd=folder,
    )
    assert ran.returncode == 0, ran.stderr
    [outcome] = json.loads(ran.stdout)
    out = folder / "cases" / "recorded.test.yaml"
    done = run_cli("test", "record", outcome["run_id"], "--db", str(db), "-o", str(out), cwd=folder)
    assert done.returncode == 0, done.stderr
    recorded = out.read_text()
    assert "agent: ../math_agent.yaml" in recorded
    assert "write_expression: (2 + 3) * 4" in recorded
    assert (
        "calculate:\n        result:\n          expression: (2 + 3) * 4\n          value: 20"
        in recorded
    )
    assert "equals: |-\n        It is 20.\n\n        Done." in recorded
    replayed = run_cli("test", str(out), "--backend", "scripted", "--db", str(db), cwd=folder)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "1 passed" in replayed.stdout
    # An author edits it: the changed expectation fails at its line.
    mocks, expect = recorded.split("  expect:\n")
    out.write_text(mocks + "  expect:\n" + expect.replace("It is 20.", "It is 21."))
    failed = run_cli("test", str(out), "--backend", "scripted", "--db", str(db), cwd=folder)
    assert failed.returncode == 1
    assert "expect output.equals" in failed.stdout


def test_one_step_shows_prompt_constraint_reply_result_and_next(folder: Path) -> None:
    done = run_cli(
        "test",
        "step",
        "math_agent.yaml",
        "check",
        "--state",
        '{"kind": "arithmetic", "result": {"value": 42}}',
        "--reply",
        "no",
        "--backend",
        "scripted",
        cwd=folder,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("step 'check' (decision) of MathAgent\nprompt:\n")
    assert "The arithmetic work gave: {'value': 42}. Does this solve the whole problem?" in out
    assert "constraint: one of the labels yes, no\nreply (mocked): no\n" in out
    assert out.endswith("branch: no\nnext: classify\n")
    done = run_cli(
        "test",
        "step",
        "math_agent.yaml",
        "calculate",
        "--state",
        '{"expression": "6*7"}',
        "--tool-error",
        "offline",
        "--backend",
        "scripted",
        "--json",
        cwd=folder,
    )
    report = json.loads(done.stdout)
    assert report["tool_calls"][0]["error"] == "offline" and report["tool_calls"][0]["mocked"]
    assert report["result"] == {"error": "offline"} and report["next_step"] == "check"


def test_the_schema_file_is_the_package_s_and_names_every_check() -> None:
    assert json.loads((ROOT / "schemas" / "agent-test.schema.json").read_text()) == file_schema()
    expect = file_schema()["$defs"]["expect"]["properties"]
    output = file_schema()["$defs"]["output"]["properties"]
    assert set(expect) - {"output"} | {f"output.{k}" for k in output} == set(checks.CHECKS)
    # every status a run can end or stop with may be expected
    from flowengine.runtime.interpreter import FINAL_STATUSES

    statuses = set(file_schema()["$defs"]["status"]["enum"])
    assert statuses == {*FINAL_STATUSES, "waiting", "interrupted"}
    assert all(code.startswith("test-") for code in TEST_CODES)


def test_the_repo_agents_test_files_load_and_validate_against_the_schema(tmp_path: Path) -> None:
    from jsonschema import Draft202012Validator

    from flowengine.agentfile.yamlsource import load

    files = sorted(AGENTS.glob("*.test.yaml"))
    assert {f.name.removesuffix(".test.yaml") for f in files} == {
        f.stem for f in AGENTS.glob("*.yaml") if not f.name.endswith(".test.yaml")
    }
    for path in files:
        loaded = load_test_file(path)
        assert loaded.test is not None, [d.format() for d in loaded.diagnostics]
        data = load(path.read_text()).data
        assert not list(Draft202012Validator(file_schema()).iter_errors(data)), path
    # With no model at all, the mocked cases pass and those on the embedded model fail
    # (make test runs those on it): every agent has both.
    done = run_cli(
        "test", "agents/", "--backend", "scripted", "-v", "--db", str(tmp_path / "t.duckdb")
    )
    assert done.returncode == 1, done.stderr
    for path in files:
        lines = [
            line for line in done.stdout.splitlines() if line.startswith(f"agents/{path.name}::")
        ]
        assert any(line.endswith(" s)") and " PASSED " in line for line in lines), path
        assert any(" FAILED " in line for line in lines), path
    assert "no mocked reply for step" in done.stdout


def test_the_readme_s_test_file_and_its_failing_output_are_real(tmp_path: Path) -> None:
    """The README's example test file, run as the README shows, prints what it shows
    (the database path, run id and seconds aside)."""
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### `flowengine test [PATH...]`", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    console = section.split("```console\n", 1)[1].split("```", 1)[0]
    command, *shown = console.splitlines()
    (tmp_path / "agents").mkdir()
    shutil.copy(AGENTS / "math_agent.yaml", tmp_path / "agents")
    (tmp_path / "agents" / "math_agent.test.yaml").write_text(example, encoding="utf-8")
    args = command.removeprefix("$ flowengine ").split()
    done = run_cli(*args, "--db", str(tmp_path / "t.duckdb"), cwd=tmp_path)
    assert done.returncode == 1, done.stderr

    def normal(lines: list[str]) -> list[str]:
        out = []
        for line in lines:
            line = re.sub(r"storing in \S+", "storing in DB", line)
            line = re.sub(r"runs: [0-9a-f]{12}", "runs: RUN", line)
            out.append(re.sub(r"in [0-9.]+ s ==", "in S s ==", line))
        return out

    assert normal(done.stdout.splitlines()) == normal(shown)
    # validate checks the README's file too: it is clean
    assert run_cli("validate", "agents/", cwd=tmp_path).returncode == 0


def test_the_web_page_lists_test_runs_with_their_failures(folder: Path) -> None:
    from tests.ui.conftest import Server

    hostile = MATH_CASE.replace("wrong on purpose", "<script>alert(1)</script>")
    path = _write(folder, hostile)
    db = folder / "t.duckdb"
    done = run_cli("test", str(path), "--backend", "scripted", "--db", str(db), cwd=folder)
    assert done.returncode == 1
    with duckdb.connect(str(db), read_only=True) as connection:
        (run_id,) = connection.execute(
            "SELECT run_ids->>0 FROM test_cases WHERE NOT passed"
        ).fetchone()
    server = Server("--db", str(db))
    try:
        status, _, page = server.get("/tests")
        assert status == 200
        assert "1 passed" in page and "1 failed" in page
        assert f"<code>{path}:23:7</code> variables" in page
        assert "an output containing &#39;43&#39;" in page
        assert f'href="/runs/{run_id}"' in page
        assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        status, _, linked = server.get(f"/runs/{run_id}")
        assert status == 200 and "MathAgent" in linked
    finally:
        server.stop()
    # a file from before test_cases existed shows none, and no error
    older = folder / "runs.duckdb"
    assert (
        run_cli(
            "run",
            "math_agent.yaml",
            "-i",
            "x",
            "--backend",
            "scripted",
            "--script",
            str(_script(folder)),
            "--db",
            str(older),
            cwd=folder,
        ).returncode
        == 0
    )
    with duckdb.connect(str(older)) as connection:
        connection.execute("DROP TABLE test_cases")
    server = Server("--db", str(older))
    try:
        status, _, page = server.get("/tests")
        assert status == 200 and "No tests stored yet." in page
    finally:
        server.stop()


def _script(folder: Path) -> Path:
    script = folder / "plain.json"
    script.write_text(json.dumps({"default": "yes", "rules": []}))
    return script


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_NAMES = st.sampled_from(
    [
        "understand",
        "classify",
        "calculate",
        "check",
        "answer",
        "nothere",
        "result",
        "kind",
        "calculator",
        "yes",
        "arithmetic",
        "",
    ]
)
_SLOTS = st.fixed_dictionaries(
    {"name": st.text(min_size=1, max_size=8)},
    optional={
        "input": st.text(max_size=8) | _JSON,
        "variables": st.dictionaries(_NAMES, _JSON, max_size=2),
        "mocks": st.fixed_dictionaries(
            {},
            optional={
                "model": st.dictionaries(_NAMES, _JSON | _NAMES | st.lists(_NAMES), max_size=3),
                "tools": st.dictionaries(
                    _NAMES,
                    st.dictionaries(
                        st.sampled_from(["result", "error"]), _JSON, min_size=1, max_size=1
                    ),
                    max_size=2,
                ),
            },
        ),
        "answers": st.dictionaries(_NAMES, _JSON, max_size=2),
        "expect": st.fixed_dictionaries(
            {},
            optional={
                "status": st.sampled_from(["completed", "waiting", "failed"]) | _JSON,
                "path": st.lists(_NAMES, max_size=3),
                "path_in_order": st.lists(_NAMES, max_size=3),
                "variables": st.dictionaries(_NAMES, _JSON, max_size=2),
                "tool_calls": st.lists(
                    st.fixed_dictionaries({"tool": _NAMES}, optional={"step": _NAMES}),
                    max_size=2,
                ),
                "errors": st.lists(st.text(max_size=8), max_size=2),
                "max_steps": st.integers(-2, 50),
                "output": st.dictionaries(
                    st.sampled_from(["equals", "contains", "matches", "schema", "expression"]),
                    st.text(max_size=10) | _JSON,
                    min_size=1,
                    max_size=2,
                ),
            },
        ),
    },
)


@given(case=_SLOTS)
def test_any_test_file_gives_diagnostics_never_a_traceback(case: dict) -> None:
    from flowengine.testing.spec import load_test_text

    text = yaml.safe_dump({"agent": "math_agent.yaml", "cases": [case]})
    loaded = load_test_text(text, AGENTS / "fuzz.test.yaml")
    for diagnostic in loaded.diagnostics:
        assert diagnostic.line >= 1 and diagnostic.column >= 1 and diagnostic.message
    assert (loaded.test is None) == bool(loaded.diagnostics)


def test_compare_runs_the_cases_on_two_versions_and_two_backends(folder: Path) -> None:
    import subprocess

    path = _write(folder, MATH_CASE.split("  - name: wrong on purpose")[0])
    agent = folder / "math_agent.yaml"
    v1 = agent.read_text()
    # v2, committed: the answer is a template, not the model's
    answer = v1.index("  answer:\n")
    agent.write_text(
        v1[:answer] + '  answer:\n    type: terminal\n    output: "= {{ result.value }}"\n'
    )
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(folder)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "math_agent.yaml"], check=True)
    subprocess.run([*git, "commit", "-qm", "v2"], check=True)
    agent.write_text(v1)
    done = run_cli(
        "test",
        str(path),
        "--compare",
        "math_agent.yaml",
        "HEAD",
        "--backend",
        "scripted",
        "--db",
        str(folder / "t.duckdb"),
        cwd=folder,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "[A: math_agent.yaml] 1 case from 1 file on mocks only" in out
    assert "[B: HEAD] 1 case from 1 file on mocks only" in out
    [row] = [line for line in out.splitlines() if "::multiplies " in line]
    assert row.split()[-4:-2] == ["pass", "pass"]
    assert "    -6 times 7 is 42.\n    += 42" in out
    assert any(line.startswith("B: HEAD") and "1/1" in line for line in out.splitlines())
    # Two backends: with no model the case on the embedded model fails, with it it passes.
    real = """\
agent: math_agent.yaml
cases:
  - name: real classify
    input: What is 6 times 7?
    mocks:
      model: {understand: Multiply 6 by 7., write_expression: 6 * 7, check: "yes"}
    expect:
      path_in_order: [classify, write_expression, calculate]
"""
    path = _write(folder, real, "real.test.yaml")
    done = run_cli(
        "test",
        str(path),
        "--compare",
        "scripted",
        "ctransformers",
        "--db",
        str(folder / "t.duckdb"),
        cwd=folder,
    )
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    [row] = [line for line in lines if "::real classify " in line]
    assert row.split()[-4:-2] == ["FAIL", "pass"]
    assert any(line.startswith("B: ctransformers") and "1/1" in line for line in lines)
    bad = run_cli("test", str(path), "--compare", "nothing-like-this", "scripted", cwd=folder)
    assert bad.returncode == 2 and "not a backend" in bad.stderr


def test_the_language_server_checks_test_files_as_you_type(folder: Path) -> None:
    from .clients.lsp import LspClient
    from .conftest import flowengine_command

    path = _write(folder, MATH_CASE)
    client = LspClient([*flowengine_command(), "lsp"], ROOT)
    try:
        uri = client.open(path, MATH_CASE)
        assert client.wait_for_diagnostics(uri) == []
        client.change(uri, MATH_CASE.replace("classify: arithmetic", "clasify: arithmetic", 1))
        [typo] = client.wait_for_diagnostics(uri)
        assert typo["code"] == "test-unknown-step"
        assert "did you mean 'classify'?" in typo["message"]
        assert typo["range"]["start"] == {"line": 7, "character": 8}  # as validate: 8:9
    finally:
        client.shutdown()
