"""The openai backend against a real OpenAI-compatible server on 127.0.0.1.

llama-cpp-python's server (installed by `make server`, which `make test` runs) serves the
embedded SmolLM2 GGUF file. The four agents run through it together, two processes share
it and are read back in one `stats`, and a server stopped mid-run is started again and the
run resumed. Slow: minutes on two cores.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest

from flowengine.kernel.backends.ctransformers import embedded_model_path
from tests.conftest import AGENTS, ROOT, flowengine_command, run_cli

FOUR = [str(AGENTS / f"{name}_agent.yaml") for name in ("math", "rec", "narrative", "travel")]
ENDED = ("completed", "max_steps", "max_visits")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LlamaServer:
    """llama-cpp-python's OpenAI-compatible server in its own process."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> LlamaServer:
        try:
            import llama_cpp.server  # noqa: F401
        except ImportError:
            pytest.fail("llama-cpp-python[server] is not installed; run `make server`")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "llama_cpp.server",
                "--model", str(embedded_model_path()),
                "--host", "127.0.0.1", "--port", str(self.port),
                "--n_ctx", "2048", "--n_threads", "2", "--verbose", "false",
                # by default it cuts a streamed reply short when another request arrives
                "--interrupt_requests", "false",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the llama-cpp-python server exited ({self.process.returncode})")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        pytest.fail("the llama-cpp-python server did not come up within 300 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


@pytest.fixture(scope="session")
def server() -> Iterator[LlamaServer]:
    running = LlamaServer().start()
    yield running
    running.stop()


def _stored(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as connection:
        return connection.execute(sql).fetchall()


def _options(url: str, db: Path, *extra: str) -> list[str]:
    return ["--backend", "openai", "--base-url", url, "--db", str(db), "--max-tokens", "16", *extra]


def test_the_four_agents_run_together_through_the_server(server: LlamaServer, tmp_path: Path):
    db = tmp_path / "four.duckdb"
    result = run_cli(
        "run", *FOUR, "--input", "Plan a 3-day trip from Seattle to California",
        *_options(server.url, db, "--max-inflight", "4", "--scheduler", "rr", "--quantum", "4"),
        "--json", timeout=1800,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    outcomes = json.loads(result.stdout)
    assert sorted(o["agent"] for o in outcomes) == [
        "MathAgent", "NarrativeAgent", "RecAgent", "TravelAgent",
    ]  # fmt: skip
    assert all(o["status"] in ENDED for o in outcomes), [
        (o["status"], o["error"]) for o in outcomes
    ]
    assert _stored(db, "SELECT count(*) FROM llm_requests WHERE error IS NOT NULL") == [(0,)]
    assert _stored(db, "SELECT DISTINCT backend FROM runs") == [("openai",)]
    # token counts are the server's own
    [(smallest_prompt, outputs)] = _stored(
        db, "SELECT min(prompt_tokens), sum(output_tokens) FROM llm_requests"
    )
    assert smallest_prompt > 0 and outputs > 0
    # decisions were made from the label log-probabilities llama.cpp returns, or, where
    # the first tokens were not among them, by its grammar: always a label, never an error
    scored = _stored(db, "SELECT label_scores FROM llm_requests WHERE kind = 'choose'")
    assert any(scores and json.loads(scores) for (scores,) in scored)
    # JSON steps went out with a schema the server enforces (llama.cpp's json_object)
    codes = {code for (code,) in _stored(db, "SELECT code FROM errors")}
    assert "json-unconstrained" not in codes and "llm-failed" not in codes
    # requests of different runs were in flight together
    spans = _stored(db, "SELECT run_id, first_start, ended FROM llm_requests")
    assert any(a[0] != b[0] and a[1] < b[2] and b[1] < a[2] for a in spans for b in spans), (
        "no two runs' requests were ever in flight together"
    )
    # rr cut streamed replies into slices of at most the quantum
    [(requests, slices, widest)] = _stored(
        db,
        "SELECT count(DISTINCT request_id), count(*), max(s.tokens) FROM llm_slices s "
        "JOIN llm_requests r USING (request_id) WHERE r.kind = 'generate'",
    )
    assert slices > requests and widest <= 4


def _popen_run(url: str, db: Path, agent: str, task: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*flowengine_command(), "run", agent, "--input", task, *_options(url, db)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_share_a_server_and_are_read_together(
    server: LlamaServer, tmp_path: Path
) -> None:
    first = _popen_run(server.url, tmp_path / "a.duckdb", FOUR[0], "What is 12 * (3 + 4)?")
    second = _popen_run(server.url, tmp_path / "b.duckdb", FOUR[1], "cheap hotels in Paris")
    for process in (first, second):
        _, err = process.communicate(timeout=1200)
        assert process.returncode in (0, 1), err
    per_file = [
        _stored(tmp_path / name, "SELECT count(*) FROM llm_requests")[0][0]
        for name in ("a.duckdb", "b.duckdb")
    ]
    both = run_cli(
        "stats", "--db", str(tmp_path / "a.duckdb"), "--db", str(tmp_path / "b.duckdb"),
        "--format", "json",
    )  # fmt: skip
    assert both.returncode == 0, both.stderr
    rows = json.loads(both.stdout)["scheduler"]
    assert {row["agent"] for row in rows} == {"MathAgent", "RecAgent"}
    assert sum(row["requests"] for row in rows) == sum(per_file)
    listed = run_cli("logs", "--db", str(tmp_path / "*.duckdb"), "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(run["agent"] for run in json.loads(listed.stdout)) == ["MathAgent", "RecAgent"]


def test_a_server_stopped_mid_run_then_started_again_lets_the_run_resume(
    tmp_path: Path,
) -> None:
    own = LlamaServer().start()  # its own, so the session's server is not disturbed
    db = tmp_path / "dies.duckdb"
    try:
        process = _popen_run(own.url, db, FOUR[0], "What is 12 * (3 + 4)?")
        assert process.stdout is not None
        run_id = None
        for line in process.stdout:
            if " #1 " in line:
                run_id = line.split()[1]
                break
        own.stop()  # the server dies while the run goes on to its next step
        _, err = process.communicate(timeout=300)
        assert run_id is not None, err
        assert process.returncode == 1
        message = err.strip().splitlines()
        assert len(message) == 1 and "flowengine resume" in message[0], err
        assert "Traceback" not in err
        [(status,)] = _stored(db, f"SELECT status FROM runs WHERE run_id = '{run_id}'")
        assert status == "interrupted"
        kept = [s for (s,) in _stored(db, f"SELECT seq FROM steps WHERE run_id = '{run_id}'")]
        assert kept and sorted(kept) == list(range(1, len(kept) + 1))

        own.start()  # back on the same port
        resumed = run_cli("resume", run_id, *_options(own.url, db), "--json", timeout=1200)
        assert resumed.returncode in (0, 1), resumed.stderr
        [outcome] = json.loads(resumed.stdout)
        assert outcome["status"] in ENDED, outcome["error"]
        seqs = [
            s
            for (s,) in _stored(db, f"SELECT seq FROM steps WHERE run_id = '{run_id}' ORDER BY seq")
        ]
        assert seqs == list(range(1, outcome["steps"] + 1)) and len(seqs) > len(kept)
    finally:
        own.stop()
