"""Kernel benchmarks on the embedded model: throughput vs ctransformers called directly,
fifo vs rr for 8 concurrent requests, and the cost of DuckDB logging.

    python bench/kernel.py            # prints JSON; bench/run.py puts it in BENCHMARKS.md
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowengine.kernel.backends.base import Message  # noqa: E402
from flowengine.kernel.backends.ctransformers import GREEDY, CTransformersBackend  # noqa: E402
from flowengine.kernel.kernel import Kernel  # noqa: E402
from flowengine.kernel.llm_request import LLMRequest  # noqa: E402
from flowengine.kernel.scheduler import SchedulerConfig  # noqa: E402
from flowengine.storage.rows import SliceRow  # noqa: E402
from flowengine.storage.writer import Storage  # noqa: E402

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


def _request(
    backend: CTransformersBackend, ask: str, max_tokens: int, run: str = "r"
) -> LLMRequest:
    return LLMRequest.for_messages(
        backend, [Message("user", ask)], run_id=run, agent=f"agent-{run}", max_tokens=max_tokens
    )


class SharedContexts:
    """The embedded backend with its model instances kept from one kernel to the next.

    Loading an instance takes about a second; each benchmark configuration gets a new kernel
    (its own scheduler) but reuses the instances, emptied."""

    def __init__(self, backend: CTransformersBackend) -> None:
        self._backend = backend
        self._made: list[Any] = []
        self._handed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def new_cache(self) -> Any:
        if self._handed == len(self._made):
            self._made.append(self._backend.new_cache())
        context = self._made[self._handed]
        self._handed += 1
        context.reset()
        return context

    def kernel(self, policy: str, quantum: int, pool: int, storage: Any = None) -> Kernel:
        self._handed = 0
        kernel = Kernel(self, SchedulerConfig(policy, quantum), storage, pool_size=pool)  # type: ignore[arg-type]
        kernel.contexts.prewarm()
        return kernel

    def close(self) -> None:
        """Kernels close their backend; the shared one stays open."""


def _llama_cpp(backend: CTransformersBackend) -> Any:
    """llama-cpp-python on the original GGUF file, or the reason it is not there."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return "llama-cpp-python is not installed (`make bench` builds it; the build failed)"
    from flowengine.kernel.backends.ctransformers import embedded_model_path

    return Llama(
        model_path=str(embedded_model_path()),
        n_ctx=backend.context_length,
        n_threads=backend._threads,
        n_batch=64,
        verbose=False,
    )


def throughput(shared: SharedContexts, repeat: int = 5, tokens: int = 128) -> dict[str, Any]:
    """Tokens per second for one request: the kernel, ctransformers called directly, and
    llama-cpp-python, on the same weights, prompt tokens and greedy settings, alternating."""
    from ctransformers import LLM, Config

    backend = shared._backend
    prepared = backend._prepared
    llm = LLM(
        str(prepared.path),
        model_type=prepared.model_type,
        config=Config(context_length=backend.context_length, threads=backend._threads),
    )
    llama = _llama_cpp(backend)
    kernel = shared.kernel("rr", 16, pool=1)
    ids = _request(backend, ASKS[0], tokens).prompt_tokens
    times: dict[str, list[float]] = {"direct": [], "kernel": [], "llama_cpp": []}
    produced_by: dict[str, int] = {}

    def rate(name: str, produced: int, start: float) -> None:
        times[name].append((len(ids) + produced) / (time.perf_counter() - start))
        produced_by[name] = produced

    for _ in range(repeat):
        start = time.perf_counter()
        produced = 0
        for _token in llm.generate(
            ids, **GREEDY, batch_size=64, threads=backend._threads, reset=True
        ):
            produced += 1
            if produced >= tokens:
                break
        rate("direct", produced, start)
        llm.prepare_inputs_for_generation([0], reset=True)  # drop the cache, as a new prompt would

        request = _request(backend, ASKS[0], tokens)
        kernel.contexts._slots[0].context.feed([0])
        start = time.perf_counter()
        done = kernel.run_request(request)
        rate("kernel", len(done.output_tokens), start)

        if not isinstance(llama, str):
            llama.reset()
            start = time.perf_counter()
            produced = 0
            for token in llama.generate(
                ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=GREEDY["repetition_penalty"]
            ):
                if token == backend.eos_token_id:
                    break
                produced += 1
                if produced >= tokens:
                    break
            rate("llama_cpp", produced, start)
    kernel.close()
    result: dict[str, Any] = {
        "prompt_tokens": len(ids),
        "generated": produced_by,
        "tokens_per_s": {name: spread(v) for name, v in times.items() if v},
        "kernel_vs_direct": spread(
            [k / d for k, d in zip(times["kernel"], times["direct"], strict=True)]
        ),
    }
    if isinstance(llama, str):
        result["llama_cpp_missing"] = llama
    else:
        from importlib.metadata import version

        result["llama_cpp_version"] = version("llama-cpp-python")
        result["llama_cpp_vs_kernel"] = spread(
            [c / k for c, k in zip(times["llama_cpp"], times["kernel"], strict=True)]
        )
    return result


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


ASKER = """\
name: Asker
description: You are a helpful assistant. Answer briefly.
steps:
  Answer:
    type: process
    instruction: Answer the task in a few sentences.
    save_as: answer
    next: Done
  Done:
    type: terminal
    output: "{{ answer }}"
"""


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _agents_at_once(
    shared: SharedContexts,
    agent: Any,
    count: int,
    policy: str,
    quantum: int,
    pool: int,
    folder: Path,
    tokens: int,
) -> dict[str, Any]:
    """``count`` Asker runs started together on one kernel; figures from what it stored."""
    from flowengine.runtime.interpreter import AgentRun, RunSetup

    storage = Storage(folder / f"{policy}{quantum}-{count}-{pool}-{time.monotonic_ns()}.duckdb")
    kernel = shared.kernel(policy, quantum, pool, storage)
    setups = [
        RunSetup(agent, ASKER, ASKS[i % len(ASKS)] + f" (request {i + 1})", max_tokens=tokens)
        for i in range(count)
    ]
    outcomes: list[Any] = [None] * count
    threads = [
        threading.Thread(
            target=lambda i=i: outcomes.__setitem__(i, AgentRun(kernel, setups[i]).run())
        )
        for i in range(count)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    makespan = time.perf_counter() - start
    kernel.close()
    rows = storage.query(
        "SELECT waiting_s, turnaround_s, output_tokens, preemptions, restores, response, "
        "epoch(first_start) - epoch(created) FROM llm_requests ORDER BY prompt"
    )
    storage.close()
    assert all(o.status == "completed" for o in outcomes), [o.error for o in outcomes]
    waiting = [r[0] for r in rows]
    return {
        "mean_first_start_s": statistics.mean(r[6] for r in rows),
        "mean_waiting_s": statistics.mean(waiting),
        "p95_waiting_s": _percentile(waiting, 0.95),
        "mean_turnaround_s": statistics.mean(r[1] for r in rows),
        "makespan_s": makespan,
        "tokens_per_s": sum(r[2] for r in rows) / makespan,
        "preemptions": sum(r[3] for r in rows),
        "restores": sum(r[4] for r in rows),
        "outputs": [r[5] for r in rows],
    }


SCHEDULES = (("fifo", 0), ("rr", 8), ("rr", 16), ("rr", 32))


def scheduling(shared: SharedContexts, repeat: int = 3, tokens: int = 48) -> dict[str, Any]:
    """1, 4, 8 and 16 agents at once under fifo and rr (each quantum), pool = agents."""
    from flowengine.graph.validate import validate_text

    agent = validate_text(ASKER, "asker.yaml").agent
    table: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for count in (1, 4, 8, 16):
            samples: dict[str, list[dict[str, Any]]] = {}
            for _ in range(repeat):  # schedules alternate within each repetition
                for policy, quantum in SCHEDULES:
                    name = policy if policy == "fifo" else f"rr q={quantum}"
                    samples.setdefault(name, []).append(
                        _agents_at_once(
                            shared, agent, count, policy, quantum or 16, count, folder, tokens
                        )
                    )
            reference = samples["fifo"][0]["outputs"]
            for name, runs in samples.items():
                assert all(r["outputs"] == reference for r in runs), f"{name} changed outputs"
                table[f"{count}/{name}"] = {
                    "agents": count,
                    "schedule": name,
                    **{
                        key: statistics.median(r[key] for r in runs)
                        for key in runs[0]
                        if key != "outputs"
                    },
                    "makespan_range_s": [
                        min(r["makespan_s"] for r in runs),
                        max(r["makespan_s"] for r in runs),
                    ],
                }
        switch = context_switch(shared, agent, folder, tokens, repeat)
    return {"tokens_per_agent": tokens, "repeat": repeat, "rows": table, "switch": switch}


def context_switch(
    shared: SharedContexts, agent: Any, folder: Path, tokens: int, repeat: int
) -> dict[str, Any]:
    """4 agents under rr q=8: a context per agent (KV kept) vs one context for all
    (every switch re-evaluates the incoming request's token snapshot)."""
    kept, restored = [], []
    for _ in range(repeat):
        kept.append(_agents_at_once(shared, agent, 4, "rr", 8, 4, folder, tokens))
        restored.append(_agents_at_once(shared, agent, 4, "rr", 8, 1, folder, tokens))
    extra = statistics.median(
        (r["makespan_s"] - k["makespan_s"]) / max(1, r["restores"])
        for k, r in zip(kept, restored, strict=True)
    )
    return {
        "kv_kept_makespan_s": statistics.median(k["makespan_s"] for k in kept),
        "snapshot_makespan_s": statistics.median(r["makespan_s"] for r in restored),
        "preemptions": statistics.median(k["preemptions"] for k in kept),
        "restores": statistics.median(r["restores"] for r in restored),
        "seconds_per_restore": extra,
        "same_outputs": all(
            k["outputs"] == r["outputs"] for k, r in zip(kept, restored, strict=True)
        ),
    }


def logging_rate(rows: int = 100_000) -> dict[str, Any]:
    """Rows a second through the storage writer, with rows shaped like llm_slices."""
    with tempfile.TemporaryDirectory() as folder:
        storage = Storage(Path(folder) / "bench.duckdb")
        now = time.time()
        start = time.perf_counter()
        for index in range(rows):
            storage.record_slice(
                SliceRow(f"req{index // 8}", "run", index % 8, now, now, now, 16, 17, False, True)
            )
        storage.commit()
        seconds = time.perf_counter() - start
        storage.close()
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}


def logging_share() -> dict[str, Any]:
    """The writer's busy time as a share of a real MathAgent run on the embedded model."""
    from flowengine.runtime.interpreter import RunSetup
    from flowengine.runtime.prepare import runnable_agent as load_agent
    from flowengine.runtime.session import Session, SessionConfig

    with tempfile.TemporaryDirectory() as folder:
        config = SessionConfig(db=Path(folder) / "share.duckdb")
        agent, source = load_agent(str(ROOT / "agents" / "math_agent.yaml"))
        with Session(config) as session:
            start = time.perf_counter()
            [outcome] = session.run_all([(RunSetup(agent, source, "What is 12 * (3 + 4)?"), None)])
            wall = time.perf_counter() - start
            busy = session.storage.write_seconds + session.storage.load_seconds
            rows = session.storage.rows_written
    return {
        "run_s": wall,
        "writer_busy_s": busy,
        "rows": rows,
        "share": busy / wall,
        "steps": outcome.steps,
    }


def main() -> None:
    shared = SharedContexts(CTransformersBackend())
    results = {
        "throughput": throughput(shared),
        "scheduling": scheduling(shared),
        "logging_rate": logging_rate(),
        "logging_share": logging_share(),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
