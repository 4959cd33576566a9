"""8 concurrent agents on one GGUF file: through a model server and through the embedded kernel.

8 MathAgent runs at once, each on its own problem, on the embedded SmolLM2-135M GGUF file:
once through llama-cpp-python's OpenAI-compatible server on 127.0.0.1 (``--backend openai
--max-inflight 8``), once through the embedded kernel (ctransformers), one after the other
in one process, so the two are measured under the same load. Reported for each: output
tokens a second, the makespan, the mean waiting of a request in the kernel, and the runs'
ends; then the ratios server / embedded.

    python bench/server.py            # prints JSON; bench/run.py puts it in BENCHMARKS.md
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowengine.kernel.backends.ctransformers import embedded_model_path  # noqa: E402
from flowengine.runtime.interpreter import RunSetup  # noqa: E402
from flowengine.runtime.prepare import runnable_agent  # noqa: E402
from flowengine.runtime.session import Session, SessionConfig  # noqa: E402

AGENT = ROOT / "agents" / "math_agent.yaml"
TASKS = [
    "What is 17 * 23 + 4?",
    "Solve for x: 3x + 7 = 22.",
    "What is the area of a circle with radius 5?",
    "What is 15% of 240?",
    "A train goes 180 km in 2.5 hours. What is its average speed?",
    "What is the derivative of x^3 + 2x?",
    "What is 1001 divided by 7?",
    "How many minutes are there in 3.5 hours?",
]
MAX_TOKENS = 16
MAX_INFLIGHT = 8
SERVER_THREADS = 2
# The server's own settings, as the test suite starts it (tests/test_openai_server.py).
SERVER_FLAGS = [
    "--n_ctx", "2048", "--n_threads", str(SERVER_THREADS), "--verbose", "false",
    # by default a new request cuts a streamed reply short
    "--interrupt_requests", "false",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(model: Path) -> tuple[subprocess.Popen[bytes], str]:
    """llama-cpp-python's server on a free port, once it answers."""
    import httpx

    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1"
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host",
         "127.0.0.1", "--port", str(port), *SERVER_FLAGS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the llama-cpp-python server exited ({process.returncode})")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    raise SystemExit("the llama-cpp-python server did not come up within 300 s")


def one_side(config: SessionConfig) -> dict[str, Any]:
    """The 8 runs at once through one backend, and what storage recorded of them."""
    agent, source = runnable_agent(str(AGENT))
    with Session(config) as session:
        setups = [(RunSetup(agent, source, task, max_tokens=MAX_TOKENS), None) for task in TASKS]
        start = time.perf_counter()
        outcomes = session.run_all(setups)
        makespan = time.perf_counter() - start
        [(requests, output_tokens, prompt_tokens, waiting, span, failed)] = session.storage.query(
            "SELECT count(*), sum(output_tokens), sum(prompt_tokens), avg(waiting_s), "
            "epoch(max(ended)) - epoch(min(created)), count(error) FROM llm_requests"
        )
    return {
        "makespan_s": makespan,
        "requests": requests,
        "failed_requests": failed,
        "output_tokens": output_tokens,
        "prompt_tokens": prompt_tokens,
        "output_tokens_per_s": output_tokens / makespan,
        "output_tokens_per_s_over_requests": output_tokens / span,
        "mean_waiting_s": waiting,
        "ends": sorted(outcome.status for outcome in outcomes),
    }


def main() -> dict[str, Any]:
    import llama_cpp

    model = embedded_model_path()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        process, url = start_server(model)
        try:
            server = one_side(
                SessionConfig(
                    db=folder / "server.duckdb",
                    backend="openai",
                    options={"base_url": url, "max_inflight": MAX_INFLIGHT},
                )
            )
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        embedded = one_side(SessionConfig(db=folder / "embedded.duckdb", model=model))
    load_after = os.getloadavg()
    return {
        "agent": "MathAgent",
        "runs": len(TASKS),
        "max_tokens": MAX_TOKENS,
        "max_inflight": MAX_INFLIGHT,
        "server_threads": SERVER_THREADS,
        "server_flags": SERVER_FLAGS,
        "llama_cpp_python_version": llama_cpp.__version__,
        "model": model.name,
        "load_average_before": load_before[0],
        "load_average_after": load_after[0],
        "server": server,
        "embedded": embedded,
        "ratios": {
            "output tokens/s, server / embedded": server["output_tokens_per_s"]
            / embedded["output_tokens_per_s"],
            "makespan, server / embedded": server["makespan_s"] / embedded["makespan_s"],
        },
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
