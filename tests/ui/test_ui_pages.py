"""``flowengine ui`` over HTTP: a real server process, real DuckDB files, a real HTTP client.

The browser tests (test_ui_browser.py) click through the same pages in Chromium.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import duckdb
import pytest

from flowengine.ui.data import Database, DatabaseProblem
from tests.conftest import AGENTS, ROOT, run_cli
from tests.ui.conftest import HOSTILE, HOSTILE_ID_RUN, HUGE_RUN, HUGE_STEPS, LiveRun, Server, UIData

RAW_HOSTILE = (
    "<script>alert(",
    'onmouseover="alert',
    'href="javascript:',
    "<img src=x onerror",
)


def _rows(body: str, css: str) -> list[str]:
    """The run ids linked from a runs table."""
    return [
        html.unescape(r) for r in re.findall(rf'<a class="{css}" href="[^"]*">([^<]*)</a>', body)
    ]


def _step_seq(ui_data: UIData, run: dict, step_id: str) -> int:
    return run["path"].index(step_id) + 1


def test_the_runs_list_shows_every_run_and_filters_them(server: Server, ui_data: UIData) -> None:
    status, _, body = server.get("/")
    assert status == 200
    shown = _rows(body, "run-link")
    expected = {o["run_id"] for o in ui_data.batch} | {ui_data.hostile["run_id"], HUGE_RUN}
    assert expected <= set(shown)
    # The broken files are named on the page, and the readable ones still listed.
    assert "cannot be read as a flowengine database" in body
    assert "missing.duckdb: no such database file" in body

    _, _, math_only = server.get("/?agent=MathAgent")
    assert set(_rows(math_only, "run-link")) == {
        o["run_id"] for o in ui_data.batch if o["agent"] == "MathAgent"
    }
    for wanted in {o["status"] for o in ui_data.batch}:
        _, _, by_status = server.get(f"/?status={wanted}")
        listed = set(_rows(by_status, "run-link"))
        assert {o["run_id"] for o in ui_data.batch if o["status"] == wanted} <= listed
        assert not {o["run_id"] for o in ui_data.batch if o["status"] != wanted} & listed
    _, _, future = server.get("/?since=2999-01-01T00:00")
    assert _rows(future, "run-link") == [] and "0 runs match" in future
    _, _, past = server.get("/?until=2000-01-01")
    assert _rows(past, "run-link") == []
    with duckdb.connect(str(ui_data.runs_db), read_only=True) as con:
        found = con.execute("SELECT created FROM runs WHERE agent = 'MathAgent'").fetchone()
    day = found[0].date().isoformat()  # a bare date as `until` means the whole day
    _, _, that_day = server.get(f"/?since={day}&until={day}&agent=MathAgent")
    assert len(_rows(that_day, "run-link")) == 1


def test_a_step_shows_its_prompt_reply_scores_tool_call_and_variables(
    server: Server, ui_data: UIData
) -> None:
    [math] = [o for o in ui_data.batch if o["agent"] == "MathAgent"]
    run = f"/runs/{math['run_id']}"
    status, _, page = server.get(run)
    assert status == 200
    assert '<img src="/runs/' in page and "graph.svg" in page  # the graph with the path
    assert page.count('class="step-link"') >= 2 * len(math["path"])  # timeline bars + table

    _, _, classify = server.get(f"{run}?step={_step_seq(ui_data, math, 'classify')}")
    detail = classify[classify.index('id="step"') :]
    assert "Which kind of mathematics does this problem need?" in detail
    assert '<pre class="reply">arithmetic</pre>' in detail
    for label in ("arithmetic", "algebra", "calculus", "geometry"):
        assert f">{label}</text>" in detail  # the label scores chart

    _, _, calculate = server.get(f"{run}?step={_step_seq(ui_data, math, 'calculate')}")
    detail = calculate[calculate.index('id="step"') :]
    assert "Tool call: calculator" in detail
    assert "(3 + 4) * 2" in html.unescape(detail) and '"value": 14' in html.unescape(detail)
    assert "<th>expression</th>" in detail  # the saved variables after the step

    graph_status, headers, svg = server.get(f"{run}/graph.svg")
    assert graph_status == 200 and headers["content-type"].startswith("image/svg+xml")
    assert "<svg" in svg and "ran 1×" in svg  # noqa: RUF001


def test_the_scheduler_timeline_marks_preemptions_and_restores(
    server: Server, ui_data: UIData
) -> None:
    [math] = [o for o in ui_data.batch if o["agent"] == "MathAgent"]
    with duckdb.connect(str(ui_data.runs_db), read_only=True) as con:
        preempted, restored = con.execute(
            "SELECT count(*) FILTER (preempted), count(*) FILTER (restored) FROM llm_slices"
        ).fetchone()
    assert preempted > 0 and restored > 0  # the batch under rr with one cache makes them
    status, _, page = server.get(f"/timeline?run={math['run_id']}")
    assert status == 200
    assert page.count('class="preempt"') == preempted
    assert page.count('class="restore"') == restored
    for outcome in ui_data.batch:
        assert outcome["run_id"] in page


def test_stats_and_agents_pages(server: Server, ui_data: UIData) -> None:
    status, _, stats = server.get("/stats")
    assert status == 200
    for title in ("Mean waiting", "Mean turnaround", "Generated tokens per second"):
        assert title in stats
    assert "MathAgent · rr" in stats
    status, _, agents = server.get("/agents")
    assert status == 200
    for name in ("MathAgent", "RecAgent", "TravelAgent", "NarrativeAgent"):
        assert f"<h2>{name} " in agents
    svg_paths = re.findall(r'<img src="(/agents/\d+/[0-9a-f]+\.svg)"', agents)
    assert svg_paths
    svg_status, _, svg = server.get(svg_paths[0])
    assert svg_status == 200 and "<svg" in svg


def test_a_huge_run_is_paginated(server: Server) -> None:
    status, _, first = server.get(f"/runs/{HUGE_RUN}")
    assert status == 200
    assert f"page 1 of {HUGE_STEPS // 100}" in first
    assert first.count("<tr class=") == 100
    _, _, last = server.get(f"/runs/{HUGE_RUN}?step={HUGE_STEPS - 1}")
    assert f"page {HUGE_STEPS // 100} of {HUGE_STEPS // 100}" in last
    assert f"Step #{HUGE_STEPS - 1}:" in last
    assert len(last) < 400_000  # one page of steps, not ten thousand
    _, _, requests = server.get(f"/timeline?run={HUGE_RUN}")
    assert "page 1 of 2" in requests  # 100 requests, 60 a page


def test_bad_addresses_and_unknown_runs_get_clear_pages(server: Server) -> None:
    for path, code, text in (
        ("/runs/no-such-run", 404, "There is no run &#39;no-such-run&#39;"),
        (f"/runs/{HUGE_RUN}?step=abc", 400, "step=&#39;abc&#39; is not a whole number"),
        (f"/runs/{HUGE_RUN}?step={HUGE_STEPS + 5}", 404, f"has no step {HUGE_STEPS + 5}"),
        ("/?page=0", 400, "page=&#39;0&#39; is not a whole number"),
        ("/?since=yesterday", 400, "is not a time"),
        ("/timeline?run=nope", 404, "no run"),
        ("/nowhere", 404, "There is no page at /nowhere"),
    ):
        status, headers, body = server.get(path)
        assert status == code, (path, body)
        assert text in body, (path, body)
        assert "Traceback" not in body and headers["content-type"].startswith("text/html")


def test_there_are_no_write_endpoints(server: Server) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/", f"/runs/{HUGE_RUN}", "/static/app.css", "/api/changes"):
            status, _, body = server.get(path, method=method)
            assert status == 405, (method, path)
            assert "only shows pages" in body or method in body


def test_pages_carry_a_strict_content_security_policy(server: Server) -> None:
    for path in ("/", f"/runs/{HUGE_RUN}", "/runs/unknown", "/static/app.js"):
        _, headers, _ = server.get(path)
        policy = headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert "unsafe-inline" not in policy
        assert headers["x-content-type-options"] == "nosniff"


def test_another_host_name_is_refused_on_loopback(server: Server) -> None:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(server.url + "/", headers={"Host": "attacker.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 421


def test_hostile_strings_are_escaped_everywhere(server: Server, ui_data: UIData) -> None:
    hostile = ui_data.hostile
    run = f"/runs/{quote(hostile['run_id'])}"
    paths = ["/", "/agents", "/stats", f"/timeline?run={hostile['run_id']}", run]
    paths += [f"{run}?step={seq}" for seq in range(1, len(hostile["path"]) + 1)]
    odd = f"/runs/{quote(HOSTILE_ID_RUN, safe='')}"
    paths += [odd, f"{odd}?step=1", f"/timeline?run={quote(HOSTILE_ID_RUN, safe='')}"]
    seen = ""
    for path in paths:
        status, _, body = server.get(path)
        assert status == 200, (path, body)
        for raw in RAW_HOSTILE:
            assert raw not in body, (path, raw)
        seen += html.unescape(body)
    for text in HOSTILE.values():  # shown, as text
        assert text in seen, text
    status, _, svg = server.get(f"{run}/graph.svg")
    assert status == 200 and "<script" not in svg and "&lt;script&gt;" in svg


def test_a_locked_database_is_read_from_a_copy_and_updates(
    live: tuple[LiveRun, Server],
) -> None:
    run, viewer = live
    with pytest.raises(duckdb.IOException):  # the writer really holds the file
        duckdb.connect(str(run.db), read_only=True)
    printed = run.steps()
    status, _, page = viewer.get(f"/runs/{run.run_id}")
    assert status == 200
    assert "is being written by a running flowengine process" in page
    assert '<span class="badge running" id="run-status">running</span>' in page
    shown = int(re.search(r'<dd id="run-steps">(\d+)</dd>', page).group(1))  # type: ignore[union-attr]
    assert shown >= printed
    _, _, before = viewer.get("/api/changes")

    later = run.advance_to(shown + 20)
    _, _, page = viewer.get(f"/runs/{run.run_id}")
    now = int(re.search(r'<dd id="run-steps">(\d+)</dd>', page).group(1))  # type: ignore[union-attr]
    assert now >= later > shown
    _, _, after = viewer.get("/api/changes")
    assert after != before  # what the page polls changes, so the open page reloads


def test_polling_never_opens_a_database(ui_data: UIData, tmp_path: Path) -> None:
    """DuckDB refuses a writer while any reader has the file open, and open pages poll
    every 2 s: the poll must look at the file without opening it. Shown with a file
    DuckDB cannot open at all, and with a run written while a page is open."""
    broken = tmp_path / "broken.duckdb"
    shutil.copyfile(ui_data.corrupt_db, broken)
    db = tmp_path / "open.duckdb"
    shutil.copyfile(ui_data.runs_db, db)
    viewer = Server("--db", str(broken), str(db))
    try:
        status, _, first = viewer.get("/api/changes")
        assert status == 200  # not the 500 that opening the broken file would give
        with broken.open("ab") as grown:
            grown.write(b"more")
        assert viewer.get("/api/changes")[2] != first
        assert viewer.get("/")[0] == 200  # a page view opens, reads and closes the file
        script = tmp_path / "script.json"
        script.write_text('{"default": "done"}')
        done = run_cli(
            "run",
            str(AGENTS / "rec_agent.yaml"),
            "--input",
            "hotels",
            "--backend",
            "scripted",
            "--script",
            str(script),
            "--db",
            str(db),
            "--quiet",
        )
        # The scripted reply is no JSON, so the run ends output_invalid; it is written.
        assert done.returncode == 1 and "does not match its schema" in done.stderr, done.stderr
        assert viewer.get("/api/changes")[2] != first
    finally:
        viewer.stop()


def test_a_copy_that_keeps_failing_gives_a_busy_page(
    live: tuple[LiveRun, Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy torn by the writer every time is something a real run does only by chance;
    here the copy is made to fail on purpose."""
    run, _ = live

    def torn(source: object, target: object) -> None:
        raise OSError("the file changed while it was copied")

    monkeypatch.setattr(shutil, "copyfile", torn)
    database = Database(run.db, "live.duckdb")
    with pytest.raises(DatabaseProblem) as problem, database.open():
        pass
    database.close()
    assert problem.value.kind == "busy"
    assert "held by a running flowengine process" in str(problem.value)


def test_a_corrupt_file_alone_gives_clear_pages_and_log_lines(ui_data: UIData) -> None:
    viewer = Server("--db", str(ui_data.corrupt_db))
    try:
        status, _, listing = viewer.get("/")
        assert status == 200 and "cannot be read as a flowengine database" in listing
        status, _, run = viewer.get("/runs/abc")
        assert status == 500 and "The database cannot be read" in run
        status, _, stats = viewer.get("/stats")
        assert status == 200 and "cannot be read" in stats
    finally:
        log = viewer.log()
    assert "GET /runs/abc: 500 The database cannot be read" in log
    # The file's problem is logged once, not on every page that meets it.
    about_file = f"flowengine ui: {ui_data.corrupt_db}: cannot be read"
    assert [line.startswith(about_file) for line in log.splitlines()].count(True) == 1, log
    assert "Traceback" not in log


def test_the_command_line(tmp_path: object, ui_data: UIData) -> None:
    bad_port = run_cli("ui", "--port", "70000")
    assert bad_port.returncode == 2 and "not a port" in bad_port.stderr
    first = Server("--db", str(ui_data.runs_db))
    try:
        port = first.url.rsplit(":", 1)[1]
        taken = run_cli("ui", "--db", str(ui_data.runs_db), "--port", port)
        assert taken.returncode == 2
        assert taken.stderr.strip().splitlines() == [
            f"flowengine ui: port {port} on 127.0.0.1 is in use; pass --port with another "
            "number (0 picks a free one)"
        ]
    finally:
        first.stop()
    exposed = Server("--db", str(ui_data.runs_db), "--host", "0.0.0.0")
    try:
        assert exposed.url.startswith("http://0.0.0.0:")
    finally:
        log = exposed.log()
    assert "warning: listening on 0.0.0.0" in log and "no login" in log


def test_validate_and_viz_do_not_import_the_web_stack() -> None:
    probe = (
        "import sys\n"
        "from flowengine.cli import main\n"
        "main(['validate', 'agents/'])\n"
        "main(['viz', 'agents/travel_agent.yaml', '--format', 'json', '-o', '/dev/null'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'starlette', 'uvicorn', 'anyio'} or m.startswith('flowengine.ui'))\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


_KILLED_WRITER = """\
import os, sys, time
from pathlib import Path
from flowengine.storage.rows import RunRow
from flowengine.storage.writer import Storage
storage = Storage(Path(sys.argv[1]))
now = time.time()
storage.record_run(RunRow("journaled1", "Journaled", "j.yaml", "", {"task": "t"}, "running",
                          "scripted", "m", "fifo", 8, now, now, 0, None, None, [], None))
storage.commit()
os._exit(0)  # killed: the run's row is in the journal only
"""


def test_a_run_a_killed_writer_left_in_its_journal_is_shown(tmp_path: Path) -> None:
    db = tmp_path / "killed.duckdb"
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(db)], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert db.with_name(db.name + ".journal").stat().st_size > 0
    viewer = Server("--db", str(db))
    try:
        status, _, body = viewer.get("/")
        assert status == 200
        assert _rows(body, "run-link") == ["journaled1"]
    finally:
        viewer.stop()


def test_a_v1_file_reads_with_each_row_at_its_step_and_is_left_as_it_was(
    tmp_path: Path,
) -> None:
    """A file from before schema version 7 stored ``step_seq`` one less than its step's
    seq, and its steps the whole memory: the page shows each row at its own step and the
    memory after it, through storage's reader, without changing the file."""
    v1 = tmp_path / "v1.duckdb"
    shutil.copyfile(ROOT / "tests" / "data" / "v1.duckdb", v1)
    before = v1.read_bytes()
    database = Database(v1, "v1.duckdb")
    with database.open() as (records, copied_at):
        assert copied_at is None
        [failed] = [run for run in records.runs() if run["status"] == "failed"]
        path = records.path(failed["run_id"])
        calculate = records.step(failed["run_id"], path.index("calculate") + 1)
    database.close()
    assert calculate is not None
    assert [error["code"] for error in calculate["errors"]] == ["tool-failed"]
    assert [call["tool"] for call in calculate["tool_calls"]] == ["calculator"]
    assert calculate["state"]["path"] == path[: path.index("calculate") + 1]
    assert v1.read_bytes() == before


def test_each_step_shows_the_state_after_it_and_what_it_set(
    server: Server, ui_data: UIData
) -> None:
    [math] = [o for o in ui_data.batch if o["agent"] == "MathAgent"]
    run = f"/runs/{math['run_id']}"
    seq = _step_seq(ui_data, math, "calculate")
    _, _, page = server.get(f"{run}?step={seq}")
    table = page[page.index('<table class="steps">') : page.index("</table>")]
    assert "<th>sets</th>" in table
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)[1:]
    [calculate] = [r for r in rows if ">calculate</a>" in r]
    assert "<td>result</td>" in calculate  # what the step wrote (its save_as)
    detail = page[page.index('id="step"') :]
    assert "<h3>State after this step</h3>" in detail
    assert '<tr class="set-here"><th>result <span class="small">set by this step</span>' in detail
    # A variable an earlier step set is in the state, but not marked.
    _, _, later = server.get(f"{run}?step={seq + 1}")
    after = later[later.index('id="step"') :]
    assert "<th>result</th>" in after


ASKING = f"""\
name: Asking
steps:
  draft:
    type: process
    instruction: "Draft a plan for {{{{ task }}}}"
    save_as: plan
    next: confirm
  confirm:
    type: input
    ask: "Book this plan {HOSTILE["script"]}? {{{{ plan }}}}"
    next: done
  done:
    type: terminal
    output: "{{{{ last }}}}"
"""


def test_a_waiting_runs_page_shows_its_question_and_the_command_that_answers_it(
    tmp_path: Path,
) -> None:
    agent = tmp_path / "asking.yaml"
    agent.write_text(ASKING)
    script = tmp_path / "script.json"
    script.write_text(f'{{"default": "a plan {HOSTILE["image"]}"}}')
    db = tmp_path / "runs.duckdb"
    ran = run_cli(
        "run", str(agent), "--input", "a trip", "--backend", "scripted", "--script",
        str(script), "--db", str(db), "--json",
    )  # fmt: skip
    assert ran.returncode == 3, ran.stderr
    [outcome] = json.loads(ran.stdout)
    run_id = outcome["run_id"]
    server = Server("--db", str(db))
    try:
        status, _, body = server.get(f"/runs/{quote(run_id)}")
    finally:
        server.stop()
    assert status == 200
    for raw in RAW_HOSTILE:
        assert raw not in body, raw
    waiting = re.search(r'<section class="waiting" id="waiting">(.*?)</section>', body, re.S)
    assert waiting is not None, body
    shown = html.unescape(re.sub(r"<[^>]+>", " ", waiting.group(1)))
    assert outcome["question"] == f"Book this plan {HOSTILE['script']}? a plan {HOSTILE['image']}"
    assert outcome["question"] in shown
    assert f"flowengine resume {run_id} --answer TEXT" in shown
    # and the command, as shown, is the one that answers it
    answered = run_cli(
        "resume", run_id, "--answer", "yes", "--backend", "scripted", "--script", str(script),
        "--db", str(db), "--json",
    )  # fmt: skip
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout)[0]["output"] == "yes"
    # a run that does not wait shows no such section
    server = Server("--db", str(db))
    try:
        _, _, body = server.get(f"/runs/{quote(run_id)}")
    finally:
        server.stop()
    assert 'id="waiting"' not in body
