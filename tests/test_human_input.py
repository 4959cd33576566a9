"""Input steps: a run waits for a person, the process exits 3, and `resume --answer` goes on.

Everything runs the real CLI as a subprocess on the scripted backend, against a real
DuckDB file (the real model is in test_local_model.py)."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from flowengine.agentfile.answers import MAX_ANSWER_BYTES
from flowengine.graph import validate_file

from .conftest import AGENTS, flowengine_command, run_cli

CONFIRM = """\
name: Confirm
steps:
  draft:
    type: process
    instruction: "Draft a plan for {{ task }}"
    save_as: plan
    next: confirm
  confirm:
    type: input
    ask: "Book this plan? {{ plan }}"
    schema:
      type: object
      required: [ok]
      additionalProperties: false
      properties:
        ok: {type: boolean}
        note: {type: string}
    save_as: reply
    timeout: TIMEOUT
    default: {ok: false, note: nobody answered}
    next: done
  done:
    type: terminal
    output: "booked={{ reply.ok }} {{ reply.note | default('') }}"
"""

ASK_NAME = """\
name: AskName
steps:
  name:
    type: input
    ask: What is your name?
    save_as: who
    next: greet
  greet:
    type: terminal
    output: "Hello, {{ who }}"
"""

PLAIN = """\
name: Plain
steps:
  only:
    type: terminal
    output: "done: {{ task }}"
"""

TRIP = "Plan a 3-day trip from Seattle to California"
TRAVEL_SCRIPT = {
    "default": "no",
    "rules": [
        {"contains": "Select a city", "reply": '"San Diego"'},
        {"contains": "Select an unvisited city", "reply": '"San Diego"'},
    ],
}


def _files(tmp_path: Path, timeout: float = 3600) -> dict[str, str]:
    files = {
        "confirm": CONFIRM.replace("TIMEOUT", str(timeout)),
        "ask_name": ASK_NAME,
        "plain": PLAIN,
    }
    paths = {}
    for name, text in files.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        paths[name] = str(path)
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"default": "a plan"}))
    paths["script"] = str(script)
    travel_script = tmp_path / "travel_script.json"
    travel_script.write_text(json.dumps(TRAVEL_SCRIPT))
    paths["travel_script"] = str(travel_script)
    return paths


def _backend(files: dict[str, str], db: Path, script: str = "script") -> list[str]:
    return ["--backend", "scripted", "--script", files[script], "--db", str(db)]


def _query(db: Path, sql: str, parameters: list | None = None) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as connection:
        return connection.execute(sql, parameters or []).fetchall()


def _snapshot(db: Path) -> tuple:
    """Everything stored, to show that a refused answer wrote nothing."""
    return tuple(
        _query(db, f"SELECT * FROM {table} ORDER BY ALL")
        for table in ("runs", "steps", "llm_requests", "tool_calls", "errors")
    )


def _start_waiting(files: dict[str, str], db: Path, agent: str = "confirm") -> str:
    done = run_cli("run", files[agent], "-i", "a trip", *_backend(files, db), "--json")
    assert done.returncode == 3, done.stderr
    [outcome] = json.loads(done.stdout)
    assert outcome["status"] == "waiting"
    return str(outcome["run_id"])


def test_validate_and_every_viz_format_carry_the_input_step(tmp_path: Path) -> None:
    path = str(AGENTS / "travel_agent_confirm.yaml")
    result = validate_file(path)
    assert result.errors == [] and result.warnings == []
    assert result.graph is not None
    node = result.graph.nodes["Confirm"]
    assert node["kind"] == "input" and node["structured"] and node["timeout"] == 86400
    assert result.graph.edges["Confirm", "Booked?"]["label"] == "next"
    mermaid = run_cli("viz", path, "--format", "mermaid", "-o", "-")
    assert mermaid.returncode == 0, mermaid.stderr
    confirm = next(line for line in mermaid.stdout.splitlines() if "<b>Confirm</b>" in line)
    assert '[/"' in confirm and confirm.endswith('"/]:::input')
    # the footnote's settings, grouped into lines short enough for any font
    assert "saves answer #183; asks a person #40;JSON#41;</i><br/><i>timeout 86400 s" in confirm
    dot = run_cli("viz", path, "--format", "dot", "-o", "-")
    assert '"Confirm" [shape=parallelogram' in dot.stdout
    page = tmp_path / "travel.html"
    html = run_cli("viz", path, "--format", "html", "-o", str(page))
    assert html.returncode == 0, html.stderr
    assert "a person answers (JSON), default answer after 86400 s" in page.read_text()
    as_json = run_cli("viz", path, "--format", "json", "-o", "-")
    nodes = {n["id"]: n for n in json.loads(as_json.stdout)["nodes"]}
    assert nodes["Confirm"]["kind"] == "input"


def test_a_run_waits_exits_3_and_logs_list_its_question(tmp_path: Path) -> None:
    files, db = _files(tmp_path), tmp_path / "runs.duckdb"
    done = run_cli("run", files["confirm"], "-i", "a trip", *_backend(files, db))
    assert done.returncode == 3, done.stderr
    assert "waiting after 1 step" in done.stdout
    assert "waits at step 'confirm' for an answer: Book this plan? a plan" in done.stderr
    assert "Traceback" not in done.stderr
    [(run_id, status, question, steps)] = _query(
        db, "SELECT run_id, status, question, steps FROM runs"
    )
    assert (status, question, steps) == ("waiting", "Book this plan? a plan", 1)
    assert f"flowengine resume {run_id} --answer TEXT" in done.stderr
    # The input step has not run: only the step before it is stored.
    assert _query(db, "SELECT step_id, next_step FROM steps") == [("draft", "confirm")]
    logs = run_cli("logs", "--db", str(db))
    assert logs.returncode == 0, logs.stderr
    waiting = logs.stdout.split("waiting for an answer", 1)[1]
    assert run_id in waiting and "Book this plan? a plan" in waiting
    as_json = json.loads(run_cli("logs", "--db", str(db), "--format", "json").stdout)
    assert as_json[0]["question"] == "Book this plan? a plan"
    one = run_cli("logs", run_id, "--db", str(db))
    assert "waiting for an answer to: Book this plan? a plan" in one.stdout


REFUSE_IN_PROCESS = """\
import json, sys, time
from flowengine.cli.main import main
started = time.monotonic()
status = main(sys.argv[1:])
runtimes = [name for name in ("ctransformers", "llama_cpp") if name in sys.modules]
print(json.dumps({"status": status, "seconds": time.monotonic() - started, "loaded": runtimes}))
"""


def test_a_bad_answer_is_refused_before_any_model_loads(tmp_path: Path) -> None:
    files, db = _files(tmp_path), tmp_path / "runs.duckdb"
    run_id = _start_waiting(files, db)
    before = _snapshot(db)
    # On the default backend, the embedded model: opening it would import ctransformers
    # and load the model (about 1 s); the answer is refused before that.
    done = subprocess.run(
        [sys.executable, "-c", REFUSE_IN_PROCESS, "resume", run_id, "--answer", "yes",
         "--db", str(db)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    said = json.loads(done.stdout)
    assert said["status"] == 1 and said["loaded"] == [], (said, done.stderr)
    assert "the answer for step 'confirm' is not JSON" in done.stderr
    assert "the run keeps waiting" in done.stderr
    assert _snapshot(db) == before
    # and a good answer, on the same path, goes on to the end
    good = run_cli("resume", run_id, "--answer", '{"ok": true}', *_backend(files, db), "--json")
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)[0]["output"].startswith("booked=True")


def test_bad_answers_are_refused_in_one_line_and_write_nothing(tmp_path: Path) -> None:
    files, db = _files(tmp_path), tmp_path / "runs.duckdb"
    run_id = _start_waiting(files, db)
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps({"ok": True, "note": "x" * MAX_ANSWER_BYTES}))
    not_json = tmp_path / "not.json"
    not_json.write_text("{ok: yes")
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"ok": "maybe"}')
    cases = [
        (["--answer", ""], 1, "the answer for step 'confirm' is empty"),
        (["--answer", "   "], 1, "is empty"),
        (["--answer", "yes"], 1, "is not JSON"),
        (["--answer", '{"ok": "yes"}'], 1, "does not match the step's schema at ok"),
        (["--answer", '{"ok": true, "x": 1}'], 1, "Additional properties"),
        (["--answer-file", str(wrong)], 1, "the answer file for step 'confirm' does not match"),
        (["--answer-file", str(not_json)], 1, "is not JSON"),
        (["--answer-file", str(huge)], 2, "the answer is too large"),
        (["--answer-file", str(tmp_path / "missing.json")], 2, "no such file"),
        # Before the timeout has passed, no answer is no answer.
        ([], 1, "is waiting for an answer to step 'confirm'"),
    ]
    before = _snapshot(db)
    for extra, status, message in cases:
        done = run_cli("resume", run_id, *extra, *_backend(files, db))
        assert done.returncode == status, (extra, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (extra, done.stderr)
        assert "Traceback" not in done.stderr
        assert _snapshot(db) == before, extra
    both = run_cli("resume", run_id, "--answer", "x", "--answer-file", str(wrong))
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    # A run that does not wait takes no answer, and nothing is written either.
    plain = run_cli("run", files["plain"], "-i", "x", *_backend(files, db), "--json")
    plain_id = json.loads(plain.stdout)[0]["run_id"]
    before = _snapshot(db)
    done = run_cli("resume", plain_id, "--answer", "yes", *_backend(files, db))
    assert done.returncode == 1 and "already ended with status completed" in done.stderr
    assert _snapshot(db) == before


def test_resume_with_the_answer_completes_and_the_answer_is_stored(tmp_path: Path) -> None:
    files, db = _files(tmp_path), tmp_path / "runs.duckdb"
    run_id = _start_waiting(files, db)
    answer = tmp_path / "answer.json"
    answer.write_text('{"ok": true, "note": "window seat"}')
    done = run_cli("resume", run_id, "--answer-file", str(answer), *_backend(files, db))
    assert done.returncode == 0, done.stderr
    assert "booked=True window seat" in done.stdout
    rows = _query(db, "SELECT seq, step_id, kind, result FROM steps ORDER BY seq")
    assert [(seq, step, kind) for seq, step, kind, _ in rows] == [
        (1, "draft", "process"),
        (2, "confirm", "input"),
        (3, "done", "terminal"),
    ]
    assert json.loads(rows[1][3]) == {"ok": True, "note": "window seat"}
    [(status, question, output)] = _query(db, "SELECT status, question, output FROM runs")
    assert (status, question, output) == ("completed", None, "booked=True window seat")
    # A text answer (no schema) is stored as the text.
    name_id = _start_waiting(files, db, "ask_name")
    done = run_cli("resume", name_id, "--answer", "Ada", *_backend(files, db))
    assert done.returncode == 0 and "Hello, Ada" in done.stdout
    stored = _query(db, "SELECT result FROM steps WHERE run_id = ? AND seq = 1", [name_id])
    assert stored == [('"Ada"',)]


def test_after_the_timeout_a_resume_takes_the_default_answer(tmp_path: Path) -> None:
    files, db = _files(tmp_path, timeout=0.5), tmp_path / "runs.duckdb"
    run_id = _start_waiting(files, db)
    [(asked,)] = _query(db, "SELECT epoch(updated) FROM runs")
    while time.time() < asked + 0.6:  # past the timeout, by the stored clock
        time.sleep(0.1)
    done = run_cli("resume", run_id, *_backend(files, db))
    assert done.returncode == 0, done.stderr
    assert "booked=False nobody answered" in done.stdout
    result = _query(db, "SELECT result FROM steps WHERE step_id = 'confirm'")
    assert json.loads(result[0][0]) == {"ok": False, "note": "nobody answered"}


def test_two_resumes_at_once_one_wins_and_no_step_is_duplicated(tmp_path: Path) -> None:
    files, db = _files(tmp_path), tmp_path / "runs.duckdb"
    run_id = _start_waiting(files, db)
    # While another process holds the file, a resume is refused and the run waits on.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('open', flush=True); "
            "sys.stdin.read()",
            str(db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        blocked = run_cli("resume", run_id, "--answer", '{"ok": true}', *_backend(files, db))
        assert blocked.returncode == 1
        assert "in use by another flowengine process" in blocked.stderr
        assert len(blocked.stderr.strip().splitlines()) == 1
    finally:
        holder.communicate("")
    assert _query(db, "SELECT status FROM runs") == [("waiting",)]
    # Two at once: whichever opens the file first wins; the other is refused.
    command = [
        *flowengine_command(),
        "resume",
        run_id,
        "--answer",
        '{"ok": true}',
        *_backend(files, db),
    ]
    racers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(racer.wait(120), *racer.communicate()) for racer in racers]
    assert sorted(code for code, _, _ in results) == [0, 1], results
    [loser] = [stderr for code, _, stderr in results if code == 1]
    assert "in use by another flowengine process" in loser or "already ended" in loser
    assert "Traceback" not in loser
    steps = _query(db, "SELECT step_id FROM steps ORDER BY seq")
    assert steps == [("draft",), ("confirm",), ("done",)]
    assert _query(db, "SELECT status FROM runs") == [("completed",)]


def test_in_a_batch_the_other_runs_go_on_while_one_waits(tmp_path: Path) -> None:
    files, db = _files(tmp_path), tmp_path / "runs.duckdb"
    batch = tmp_path / "jobs.jsonl"
    batch.write_text(
        "\n".join(
            json.dumps({"agent": files[name], "input": f"job {index}"})
            for index, name in enumerate(["confirm", "plain", "plain"])
        )
    )
    done = run_cli("run", "--batch", str(batch), *_backend(files, db), "--json")
    assert done.returncode == 3, done.stderr
    outcomes = json.loads(done.stdout)
    assert [o["status"] for o in outcomes] == ["waiting", "completed", "completed"]
    assert outcomes[0]["question"] == "Book this plan? a plan"
    assert [o["output"] for o in outcomes[1:]] == ["done: job 1", "done: job 2"]
    # A failed run outweighs a waiting one.
    broken = tmp_path / "fails.yaml"
    broken.write_text(PLAIN.replace("{{ task }}", "{{ task.nope.deeper }}"))
    batch.write_text(
        json.dumps({"agent": files["confirm"], "input": "x"})
        + "\n"
        + json.dumps({"agent": str(broken), "input": "x"})
    )
    mixed = run_cli("run", "--batch", str(batch), *_backend(files, db), "--json")
    assert [o["status"] for o in json.loads(mixed.stdout)] == ["waiting", "failed"]
    assert mixed.returncode == 1


def _read_until(leader: int, wanted: bytes, seen: bytearray) -> None:
    """Read the terminal's output into ``seen`` until ``wanted`` has appeared (again)."""
    count = seen.count(wanted) + 1
    while seen.count(wanted) < count:
        ready, _, _ = select.select([leader], [], [], 60)
        assert ready, f"the terminal showed no {wanted!r}; it showed: {bytes(seen)!r}"
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the other side closed: the process ended
            chunk = b""
        assert chunk, f"the process ended before {wanted!r}; it showed: {bytes(seen)!r}"
        seen += chunk


def test_on_a_terminal_run_asks_the_question_itself(tmp_path: Path) -> None:
    files, db = _files(tmp_path), tmp_path / "runs.duckdb"
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*flowengine_command(), "run", files["ask_name"], "-i", "x", *_backend(files, db)],
        stdin=follower,
        stdout=follower,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(follower)
    seen = bytearray()
    try:
        _read_until(leader, b"answer> ", seen)
        assert b"asks: What is your name?" in seen
        os.write(leader, b"\n")  # an empty answer is refused, and asked again
        _read_until(leader, b"answer> ", seen)
        os.write(leader, b"Grace\n")
        _read_until(leader, b"Hello, Grace", seen)
        _, stderr = process.communicate(timeout=60)
    finally:
        os.close(leader)
    assert process.returncode == 0, stderr
    assert "the answer for step 'name' is empty" in stderr
    assert _query(db, "SELECT status, output FROM runs") == [("completed", "Hello, Grace")]
    # End of input (Ctrl-D) leaves the run waiting, and the process exits 3.
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*flowengine_command(), "run", files["ask_name"], "-i", "y", *_backend(files, db)],
        stdin=follower,
        stdout=follower,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(follower)
    try:
        _read_until(leader, b"answer> ", seen)
        os.write(leader, b"\x04")
        _, stderr = process.communicate(timeout=60)
    finally:
        os.close(leader)
    assert process.returncode == 3, stderr
    assert "waits at step 'name' for an answer: What is your name?" in stderr
    statuses = _query(db, "SELECT status FROM runs ORDER BY created")
    assert statuses == [("completed",), ("waiting",)]


@pytest.mark.parametrize(
    ("answer", "ending", "output"),
    [
        ('{"confirm": "yes"}', "Booked", "PLAN"),
        ('{"confirm": "no", "note": "too far"}', "Not booked", "Not booked: too far"),
    ],
)
def test_travel_agent_confirm_waits_for_the_traveller(
    tmp_path: Path, answer: str, ending: str, output: str
) -> None:
    files, db = _files(tmp_path), tmp_path / "travel.duckdb"
    agent = str(AGENTS / "travel_agent_confirm.yaml")
    done = run_cli("run", agent, "-i", TRIP, *_backend(files, db, "travel_script"), "--json")
    assert done.returncode == 3, done.stderr
    [outcome] = json.loads(done.stdout)
    assert outcome["status"] == "waiting" and outcome["waiting_step"] == "Confirm"
    assert outcome["path"][-1] == "Step 18"
    assert outcome["question"].startswith("Here is the plan for 3 days from Seattle to San Diego")
    resumed = run_cli(
        "resume", outcome["run_id"], "--answer", answer, *_backend(files, db, "travel_script")
    )
    assert resumed.returncode == 0, resumed.stderr
    path = [step for (step,) in _query(db, "SELECT step_id FROM steps ORDER BY seq")]
    assert path[-3:] == ["Confirm", "Booked?", ending]
    [(status, stored)] = _query(db, "SELECT status, output FROM runs")
    assert status == "completed"
    if output == "PLAN":  # the plan Step 18 assembled from the days the run picked
        plan = json.loads(stored)
        assert (plan["origin"], plan["destination"]) == ("Seattle", "San Diego")
        assert [day["day"] for day in plan["days"]] == [1, 2, 3]
        assert outcome["question"].endswith(
            'Shall I book it? Answer {"confirm": "yes"}, or {"confirm": "no", "note": "why"}.'
        )
        assert json.dumps(plan, ensure_ascii=False) in outcome["question"]
    else:
        assert stored == output
    [(result,)] = _query(db, "SELECT result FROM steps WHERE step_id = 'Confirm'")
    assert json.loads(result) == json.loads(answer)


def test_ctrl_c_at_the_terminals_question_leaves_the_run_waiting(tmp_path: Path) -> None:
    files, db = _files(tmp_path), tmp_path / "runs.duckdb"
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*flowengine_command(), "run", files["ask_name"], "-i", "x", *_backend(files, db)],
        stdin=follower,
        stdout=follower,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(follower)
    seen = bytearray()
    try:
        _read_until(leader, b"answer> ", seen)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        os.close(leader)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    [(run_id, status)] = _query(db, "SELECT run_id, status FROM runs")
    assert status == "waiting"
    assert f"answer with: flowengine resume {run_id} --answer TEXT" in stderr
    assert "Ctrl-C stopped 0 of 1 run (0 had ended, 1 waits for an answer)" in stderr
