"""Kernel benchmarks on the embedded model: throughput vs ctransformers called directly,
fifo vs rr for 8 concurrent requests, and the cost of DuckDB logging.

    python bench/kernel.py            # prints JSON; bench/run.py puts it in BENCHMARKS.md
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowengine.kernel.backends.base import Message  # noqa: E402
from flowengine.kernel.backends.local import GREEDY, LocalBackend  # noqa: E402
from flowengine.kernel.kernel import Kernel  # noqa: E402
from flowengine.kernel.requests import LLMRequest  # noqa: E402
from flowengine.kernel.scheduler import SchedulerConfig  # noqa: E402
from flowengine.kernel.storage import Storage  # noqa: E402

ASKS = [
    "Describe a day in Seattle.",
    "Explain how a bicycle works.",
    "Write a short poem about rain.",
    "List five uses of a paper clip.",
    "What should I pack for a beach trip?",
    "Explain what a prime number is.",
    "Give tips for learning to cook.",
    "Describe the water cycle.",
]


def _request(backend: LocalBackend, ask: str, max_tokens: int, run: str = "r") -> LLMRequest:
    prompt = backend.chat_prompt([Message("user", ask)])
    return LLMRequest(
        run_id=run,
        agent=f"agent-{run}",
        step_id="s",
        step_seq=0,
        kind="generate",
        prompt=prompt,
        prompt_tokens=backend.encode(prompt),
        max_tokens=max_tokens,
    )


def throughput(backend: LocalBackend, repeat: int = 5, tokens: int = 128) -> dict[str, Any]:
    """Tokens per second for one request, kernel vs a bare ctransformers generate loop."""
    from ctransformers import LLM, Config

    prepared = backend._prepared
    llm = LLM(
        str(prepared.path),
        model_type=prepared.model_type,
        config=Config(context_length=backend.context_length, threads=backend._threads),
    )
    kernel = Kernel(backend, SchedulerConfig("rr", 16), pool_size=1)
    kernel.contexts.prewarm()
    ask = ASKS[0]
    direct, through = [], []
    for _ in range(repeat):
        ids = _request(backend, ask, tokens).prompt_tokens
        start = time.perf_counter()
        produced = 0
        for _token in llm.generate(
            ids,
            **GREEDY,
            batch_size=64,
            threads=backend._threads,
            reset=True,
        ):
            produced += 1
            if produced >= tokens:
                break
        direct.append((len(ids) + produced) / (time.perf_counter() - start))
        llm.prepare_inputs_for_generation([0], reset=True)  # drop the cache, as a new prompt would
        request = _request(backend, ask, tokens)
        kernel.contexts._slots[0].context.feed([0])
        start = time.perf_counter()
        done = kernel.run_request(request)
        through.append(
            (len(done.prompt_tokens) + len(done.output_tokens)) / (time.perf_counter() - start)
        )
    kernel._queue.close()
    kernel._worker.join()
    ratio = statistics.median(t / d for t, d in zip(through, direct, strict=True))
    return {
        "tokens": tokens,
        "direct_tokens_per_s": statistics.median(direct),
        "kernel_tokens_per_s": statistics.median(through),
        "ratio": ratio,
    }


def concurrency(backend: LocalBackend, pool: int, tokens: int = 48) -> dict[str, Any]:
    """8 requests ready at once: mean waiting and turnaround, and total time, fifo vs rr."""
    results: dict[str, Any] = {}
    for policy in ("fifo", "rr"):
        kernel = Kernel(backend, SchedulerConfig(policy, 16), pool_size=pool)  # type: ignore[arg-type]
        kernel.contexts.prewarm()
        for slot in kernel.contexts._slots:
            slot.context.feed([0])
        requests = [_request(backend, ask, tokens, f"r{i}") for i, ask in enumerate(ASKS)]
        start = time.perf_counter()
        done = [f.result() for f in kernel.submit_all(requests)]
        total = time.perf_counter() - start
        kernel._queue.close()
        kernel._worker.join()
        results[policy] = {
            "total_s": total,
            "mean_waiting_s": statistics.mean(r.waiting for r in done),
            "mean_turnaround_s": statistics.mean(r.turnaround for r in done),
            "mean_first_start_s": statistics.mean((r.first_start or 0) - r.created for r in done),
            "preemptions": sum(r.preemptions for r in done),
            "restores": sum(r.restores for r in done),
            "outputs": [r.response for r in done],
        }
    same = results["fifo"].pop("outputs") == results["rr"].pop("outputs")
    results["rr_total_vs_fifo"] = results["rr"]["total_s"] / results["fifo"]["total_s"]
    results["same_outputs"] = same
    results["pool"] = pool
    return results


def logging_rate(rows: int = 100_000) -> dict[str, Any]:
    """Rows a second through the storage writer, with rows shaped like llm_slices."""
    with tempfile.TemporaryDirectory() as folder:
        storage = Storage(Path(folder) / "bench.duckdb")
        now = time.time()
        start = time.perf_counter()
        for index in range(rows):
            storage.insert(
                "llm_slices",
                (f"req{index // 8}", "run", index % 8, now, now, now, 16, 17, False, True),
            )
        storage.commit()
        seconds = time.perf_counter() - start
        storage.close()
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}


def logging_share() -> dict[str, Any]:
    """The writer's busy time as a share of a real MathAgent run on the embedded model."""
    from flowengine.runtime.interpreter import RunSetup
    from flowengine.runtime.launch import load_agent
    from flowengine.runtime.session import Session, SessionConfig

    with tempfile.TemporaryDirectory() as folder:
        config = SessionConfig(db=Path(folder) / "share.duckdb")
        agent, source = load_agent(str(ROOT / "agents" / "math_agent.yaml"))
        with Session(config) as session:
            start = time.perf_counter()
            [outcome] = session.run_all([(RunSetup(agent, source, "What is 12 * (3 + 4)?"), None)])
            wall = time.perf_counter() - start
            busy = session.storage.write_seconds
            rows = session.storage.rows_written
    return {
        "run_s": wall,
        "writer_busy_s": busy,
        "rows": rows,
        "share": busy / wall,
        "steps": outcome.steps,
    }


def main() -> None:
    backend = LocalBackend()
    results = {
        "throughput": throughput(backend),
        "concurrency": concurrency(backend, pool=8),
        "concurrency_small_pool": concurrency(backend, pool=4),
        "logging_rate": logging_rate(),
        "logging_share": logging_share(),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
