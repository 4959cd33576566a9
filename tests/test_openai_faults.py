"""The openai backend against a fake server: faults a real server will not produce on cue.

The real server's tests (tests/test_openai_server.py) are the proof that the backend
works; these add 429 with Retry-After, 5xx, garbage bytes, a cut-off stream, a timeout, a
server that takes neither logprobs nor grammars, and one that refuses response_format.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import duckdb
import pytest

from tests.conftest import run_cli
from tests.fake_openai import Behaviour, FakeServer

AGENT = """\
name: Faulty
description: A small agent for server faults.
steps:
  ask:
    type: process
    instruction: Say something about {{ task }}.
    retry: {retry}
    on_error: {on_error}
    next: pick
  pick:
    type: decision
    question: Is that good?
    branches:
      yes: done
      no: done
  done:
    type: terminal
    output: "{{{{ last }}}}"
"""


def _agent(tmp_path: Path, retry: int = 0, on_error: str = "fail") -> str:
    path = tmp_path / "faulty.yaml"
    path.write_text(AGENT.format(retry=retry, on_error=on_error), encoding="utf-8")
    return str(path)


@pytest.fixture
def fake() -> tuple[FakeServer, Behaviour]:
    behaviour = Behaviour(logprobs=[("yes", -0.1), ("no", -2.5)])
    server = FakeServer(behaviour)
    yield server, behaviour
    server.stop()


def _run(url: str, agent: str, db: Path, *extra: str, command: str = "run"):
    target = [agent, "--input", "rain"] if command == "run" else [agent]
    return run_cli(
        command,
        *target,
        "--backend",
        "openai",
        "--base-url",
        url,
        "--db",
        str(db),
        "--json",
        "--request-timeout",
        "2",
        *extra,
    )


def _rows(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as connection:
        return connection.execute(sql).fetchall()


def test_429_with_retry_after_is_retried_by_the_step(tmp_path: Path, fake) -> None:
    server, behaviour = fake
    behaviour.faults = ["429"]
    db = tmp_path / "runs.duckdb"
    result = _run(server.url, _agent(tmp_path, retry=1), db)
    assert result.returncode == 0, result.stderr
    [outcome] = json.loads(result.stdout)
    assert outcome["status"] == "completed" and outcome["path"] == ["ask", "pick", "done"]
    errors = [row[0] for row in _rows(db, "SELECT error FROM llm_requests ORDER BY created")]
    assert "HTTP 429" in errors[0] and "retry after 1 s" in errors[0]
    assert errors[1:] == [None, None]
    # the decision came from the label log-probabilities the server returned
    [(scores,)] = _rows(db, "SELECT label_scores FROM llm_requests WHERE kind = 'choose'")
    # stored as every decision is: per label, the raw score (a server gives no calibration)
    assert json.loads(scores) == {"yes": {"raw": -0.1}, "no": {"raw": -2.5}}


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        ("garbage", "malformed"),
        ("truncate", "stream ended before the reply was complete"),
        ("sleep", "did not answer within 2 s"),
        ("500", "HTTP 500"),
    ],
)
def test_faults_go_to_on_error(tmp_path: Path, fake, fault: str, said: str) -> None:
    server, behaviour = fake
    behaviour.faults = [fault]
    db = tmp_path / "runs.duckdb"
    result = _run(server.url, _agent(tmp_path, on_error="done"), db)
    [outcome] = json.loads(result.stdout)
    assert outcome["path"] == ["ask", "done"], result.stderr
    [(code, message)] = _rows(db, "SELECT code, message FROM errors")
    assert code == "step-recovered" and said in message and message.isprintable()


def test_connection_refused_interrupts_and_resume_completes(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    db = tmp_path / "runs.duckdb"
    agent = _agent(tmp_path)
    result = _run(url, agent, db)
    assert result.returncode == 1
    [outcome] = json.loads(result.stdout)
    assert outcome["status"] == "interrupted" and outcome["steps"] == 0
    assert "cannot connect to" in outcome["error"] and "flowengine resume" in outcome["error"]
    server = FakeServer(Behaviour(logprobs=[("no", -0.2)]), port)
    try:
        resumed = _run(url, outcome["run_id"], db, command="resume")
    finally:
        server.stop()
    assert resumed.returncode == 0, resumed.stderr
    [done] = json.loads(resumed.stdout)
    assert done["status"] == "completed" and done["path"] == ["ask", "pick", "done"]


def test_a_server_without_logprobs_or_grammar_stops_the_decision(tmp_path: Path) -> None:
    server = FakeServer(Behaviour(logprobs=None, honour_choice=False, reply="I think yes"))
    db = tmp_path / "runs.duckdb"
    try:
        result = _run(server.url, _agent(tmp_path), db)
    finally:
        server.stop()
    assert result.returncode == 1
    [outcome] = json.loads(result.stdout)
    assert outcome["status"] == "failed" and outcome["path"] == ["ask"]
    assert "neither log-probabilities" in outcome["error"]
    codes = [row[0] for row in _rows(db, "SELECT code FROM errors")]
    assert codes == ["decision-unsupported"]


def test_a_constrained_choice_when_there_are_no_logprobs(tmp_path: Path) -> None:
    behaviour = Behaviour(logprobs=None, honour_choice=True)
    server = FakeServer(behaviour)
    try:
        result = _run(server.url, _agent(tmp_path), tmp_path / "runs.duckdb")
    finally:
        server.stop()
    [outcome] = json.loads(result.stdout)
    assert outcome["status"] == "completed" and outcome["path"] == ["ask", "pick", "done"]
    sent = behaviour.bodies[-1]  # the decision's constrained request
    assert sent["guided_choice"] == ["yes", "no"] and sent["grammar"] == 'root ::= "yes" | "no"'


def test_json_output_falls_back_when_response_format_is_refused(tmp_path: Path) -> None:
    agent = tmp_path / "json.yaml"
    agent.write_text(
        "name: Jsonish\ndescription: JSON.\nsteps:\n  give:\n    type: process\n"
        "    instruction: Give a city.\n    format: json\n    schema:\n      type: object\n"
        "      properties: {city: {type: string}}\n      required: [city]\n"
        "    next: done\n  done:\n    type: terminal\n    output: '{{ last.city }}'\n",
        encoding="utf-8",
    )
    behaviour = Behaviour(reply='{"city": "Paris"}', refuse_schema=True)
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    server = FakeServer(behaviour)
    db = tmp_path / "runs.duckdb"
    try:
        result = _run(server.url, str(agent), db)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    [outcome] = json.loads(result.stdout)
    assert outcome["output"] == "Paris"
    first, second, third = behaviour.bodies
    assert first["response_format"]["json_schema"]["schema"]["required"] == ["city"]
    assert second["response_format"] == {"type": "json_object", "schema": schema}
    assert "response_format" not in third
    [(code,)] = _rows(db, "SELECT code FROM errors")
    assert code == "json-unconstrained"


def test_bad_server_settings_are_one_line(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    result = run_cli(
        "run",
        agent,
        "-i",
        "x",
        "--backend",
        "openai",
        "--base-url",
        "ftp://nowhere",
        "--db",
        str(tmp_path / "x.duckdb"),
    )
    assert result.returncode != 0 and "http://HOST:PORT/v1" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = run_cli("run", agent, "-i", "x", "--base-url", "http://x/v1")
    assert result.returncode == 2 and "--base-url goes with --backend openai" in result.stderr


def test_settings_come_from_the_environment_and_the_config_file(
    tmp_path: Path, fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, behaviour = fake
    config = tmp_path / "flowengine.toml"
    config.write_text(
        f'[openai]\nbase_url = "{server.url}"\nmodel = "from-file"\napi_key_env = "MY_KEY"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("FLOWENGINE_CONFIG", str(config))
    monkeypatch.setenv("FLOWENGINE_MODEL", "from-env")  # the environment beats the file
    monkeypatch.setenv("MY_KEY", "sekrit")
    result = run_cli(
        "run", _agent(tmp_path), "-i", "x", "--backend", "openai", "--json",
        "--db", str(tmp_path / "runs.duckdb"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert {body["model"] for body in behaviour.bodies} == {"from-env"}
    assert behaviour.keys == {"Bearer sekrit"}
