"""Engine overhead per step: flowengine vs LangGraph on the same TravelAgent graph.

Both engines walk the 24-step AIOS TravelAgent graph along one fixed path of more than 200
steps. The path comes from ``choose``, a policy that answers each decision from how many
times that decision was visited before, so both engines take the same branches. The LLM is an
instant stand-in on both sides; what is left is the engine: prompt rendering, scheduling,
memory, and logging.

    python bench/overhead.py          # prints JSON; bench/run.py puts it in BENCHMARKS.md
"""

from __future__ import annotations

import json
import operator
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypedDict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowengine.agentfile.diagnostics import Reporter  # noqa: E402
from flowengine.agentfile.model import Agent  # noqa: E402
from flowengine.importers.aios import import_config  # noqa: E402
from flowengine.kernel.backends.base import Capability, Message  # noqa: E402
from flowengine.kernel.kernel import Kernel  # noqa: E402
from flowengine.kernel.scheduler import SchedulerConfig  # noqa: E402
from flowengine.runtime.interpreter import AgentRun, RunSetup  # noqa: E402
from flowengine.runtime.prepare import runnable_agent as load_agent  # noqa: E402
from flowengine.storage.writer import Storage  # noqa: E402

# The copy kept in the repository (MIT licence beside it), so a fresh clone can run this.
AIOS_TRAVEL = ROOT / "tests" / "data" / "aios" / "TravelAgent.json"
TASK = "Plan a 3-day trip from Seattle to California"
REPLY = "ok"
# Step 13 answers "no" (another round) this many times before it ends the plan; the other
# loops go round on every other visit. The path is then 212 steps.
DAYS = 11


def choose(step_id: str, visit: int, labels: Sequence[str]) -> str:
    """The fixed policy both engines follow: loop back on every other visit."""
    if step_id == "Step 2":
        return "state"
    if step_id == "Step 13":
        return "no" if visit < DAYS else "yes"
    loop_back = {"Step 7": "no", "Step 20": "no", "Step 22": "no", "Step 23": "no"}[step_id]
    other = next(label for label in labels if label != loop_back)
    return loop_back if visit % 2 == 0 else other


def expected_path(agent: Agent) -> list[str]:
    visits: dict[str, int] = {}
    path: list[str] = []
    current: str | None = agent.start_step
    while current is not None:
        step = agent.steps[current]
        path.append(current)
        seen = visits.get(current, 0)
        visits[current] = seen + 1
        if step.type == "decision":
            current = step.branches[choose(current, seen, list(step.branches))]
        else:
            current = step.next
    return path


# -- flowengine side --------------------------------------------------------------------

_OK, _EOS = hash(REPLY), 0


class InstantContext:
    def __init__(self, backend: InstantBackend) -> None:
        self.backend = backend
        self.tokens: list[int] = []

    def evaluate(self, tokens: Sequence[int]) -> None:
        self.tokens += tokens

    def truncate(self, length: int) -> None:
        del self.tokens[length:]

    def next_token(self, allowed: Any = None) -> int:
        return _EOS if self.tokens and self.tokens[-1] == _OK else _OK

    def log_prob(self, token: int) -> float:
        return 0.0 if token == self.backend.wanted_label() else -20.0


class InstantBackend:
    """A model that answers at once: "ok" to every ask, the policy's label to a decision.

    It reads the decision from the last prompt built, so it serves one run at a time.
    """

    name = model_name = "instant"
    capabilities = frozenset({Capability.LABEL_LOGPROBS, Capability.KV_REUSE})
    context_length = 1 << 30
    eos_token_id = _EOS

    def __init__(self, agent: Agent) -> None:
        self._questions = {
            step.question.strip(): step for step in agent.steps.values() if step.question
        }
        self._last_user = ""
        self._wanted: tuple[str, int] = ("", 0)

    def encode(self, text: str) -> list[int]:
        return list(map(hash, text.split()))

    def label_tokens(self, label: str) -> list[int]:
        return self.encode(label)

    def decode(self, tokens: Sequence[int]) -> str:
        return REPLY if _OK in tokens else ""

    def chat_prompt(self, messages: Sequence[Message]) -> str:
        self._last_user = messages[-1].content
        return "".join(f"<|{m.role}|>\n{m.content}<|end|>\n" for m in messages) + "<|assistant|>"

    def wanted_label(self) -> int:
        user = self._last_user
        if self._wanted[0] is not user:
            question = user.rsplit("\n", 2)[-2].strip()
            step = self._questions[question]
            visit = user.count(f"\n- {step.id}: ")
            self._wanted = (user, hash(choose(step.id, visit, list(step.branches))))
        return self._wanted[1]

    def grammar_tokenizer(self) -> Any:
        return None

    def new_cache(self) -> InstantContext:
        return InstantContext(self)

    def close(self) -> None:
        pass


def run_flowengine(
    agent: Agent, source: str, db: Path | None, journal: bool = True
) -> tuple[float, list[str]]:
    backend = InstantBackend(agent)
    Storage.journal = journal
    storage = Storage(db) if db is not None else None
    Storage.journal = True
    kernel = Kernel(backend, SchedulerConfig("fifo"), storage, pool_size=1)
    setup = RunSetup(agent, source, TASK)
    start = time.perf_counter()
    outcome = AgentRun(kernel, setup).run()
    seconds = time.perf_counter() - start
    kernel.close()
    if storage is not None:
        storage.close()
    assert outcome.status == "completed", outcome.error
    return seconds, outcome.path


# -- LangGraph side ---------------------------------------------------------------------


class TravelState(TypedDict):
    task: str
    progress: Annotated[list[tuple[str, str]], operator.add]
    visits: dict[str, int]
    choice: str


def instant_llm(prompt: str) -> str:
    return REPLY


def _chosen(state: TravelState) -> str:
    return state["choice"]


def langgraph_app(agent: Agent, checkpointer: Any = None) -> Any:
    """The same graph as a LangGraph StateGraph, written as its documentation shows."""
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(TravelState)

    def node(step_id: str) -> Callable[[TravelState], dict[str, Any]]:
        step = agent.steps[step_id]
        ask = (step.instruction or step.question or "").strip()
        if step.type == "decision":
            ask += "\nAnswer with one word: " + " or ".join(step.branches) + "."
        system = agent.description.strip()

        def run(state: TravelState) -> dict[str, Any]:
            progress = "\n".join(f"- {sid}: {result}" for sid, result in state["progress"])
            user = f"Task: {state['task']}\n\nProgress so far:\n{progress}\n\n{ask}"
            prompt = f"<|system|>\n{system}<|end|>\n<|user|>\n{user}<|end|>\n<|assistant|>"
            visit = state["visits"].get(step_id, 0)
            if step.type == "decision":
                instant_llm(prompt)
                result = choose(step_id, visit, list(step.branches))
            else:
                result = instant_llm(prompt)
            return {
                "progress": [(step_id, result)],
                "visits": {**state["visits"], step_id: visit + 1},
                "choice": result,
            }

        return run

    for step_id in agent.steps:
        graph.add_node(step_id, node(step_id))
    graph.add_edge(START, agent.start_step)
    for step_id, step in agent.steps.items():
        if step.type == "decision":
            graph.add_conditional_edges(step_id, _chosen, dict(step.branches))
        elif step.next is None:
            graph.add_edge(step_id, END)
        else:
            graph.add_edge(step_id, step.next)
    return graph.compile(checkpointer=checkpointer)


def run_langgraph(
    app: Any, steps: int, thread: str, durability: str | None = None
) -> tuple[float, list[str]]:
    """One walk; ``durability`` "sync" makes LangGraph write each checkpoint before the
    next step starts (its default, "async", writes it while the next step runs)."""
    config = {"recursion_limit": steps + 10, "configurable": {"thread_id": thread}}
    start = time.perf_counter()
    final = app.invoke(
        {"task": TASK, "progress": [], "visits": {}, "choice": ""}, config, durability=durability
    )
    seconds = time.perf_counter() - start
    return seconds, [step_id for step_id, _ in final["progress"]]


# -- the benchmark ----------------------------------------------------------------------


def imported_travel_agent(folder: Path) -> tuple[Agent, str]:
    """AIOS TravelAgent through our importer, with a step limit that admits the long path,
    and prompts that carry the run's progress (the stand-in model counts visits in it)."""
    reporter = Reporter(str(AIOS_TRAVEL))
    imported = import_config(str(AIOS_TRAVEL), "agent.schema.json", reporter)
    if imported.yaml is None:
        raise SystemExit("\n".join(d.format() for d in reporter.diagnostics))
    text = re.sub(
        r"^name: .*$", r"\g<0>\nmax_steps: 1000\nprogress: all", imported.yaml, count=1, flags=re.M
    )
    path = folder / "travel_agent.yaml"
    path.write_text(text, encoding="utf-8")
    return load_agent(str(path))


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


LOGGED = "flowengine, logging on (journal, the default)"
SQLITE = "LangGraph, SqliteSaver (file; durability async, its default)"
SQLITE_SYNC = "LangGraph, SqliteSaver (file; durability sync)"


def main(repeat: int = 7) -> dict[str, Any]:
    import langgraph
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.checkpoint.sqlite import SqliteSaver

    del langgraph
    load_before = __import__("os").getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        agent, source = imported_travel_agent(folder)
        path = expected_path(agent)
        steps = len(path)
        plain = langgraph_app(agent)
        in_memory = langgraph_app(agent, InMemorySaver())
        sqlite = SqliteSaver(sqlite3.connect(folder / "lg.sqlite", check_same_thread=False))
        on_disk = langgraph_app(agent, sqlite)
        variants: dict[str, Callable[[int], tuple[float, list[str]]]] = {
            LOGGED: lambda i: run_flowengine(agent, source, folder / f"fe{i}.duckdb"),
            "flowengine, a DuckDB transaction a step (before the journal)": (
                lambda i: run_flowengine(agent, source, folder / f"fd{i}.duckdb", journal=False)
            ),
            "flowengine, logging off": lambda i: run_flowengine(agent, source, None),
            "LangGraph, no checkpointer": lambda i: run_langgraph(plain, steps, f"p{i}"),
            "LangGraph, InMemorySaver": lambda i: run_langgraph(in_memory, steps, f"m{i}"),
            SQLITE: lambda i: run_langgraph(on_disk, steps, f"s{i}"),
            SQLITE_SYNC: lambda i: run_langgraph(on_disk, steps, f"y{i}", "sync"),
        }
        for variant in variants.values():  # warm-up: imports, caches, first DuckDB file
            variant(-1)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for index in range(repeat):
            for name, variant in variants.items():
                seconds, walked = variant(index)
                assert walked == path, f"{name} left the fixed path"
                times[name].append(seconds / steps * 1e6)
    logged = times[LOGGED]
    unlogged = times["flowengine, logging off"]

    def ratio(peer: str, ours: list[float]) -> dict[str, float]:
        return spread([p / o for p, o in zip(times[peer], ours, strict=True)])

    return {
        "steps": steps,
        "distinct_steps": len(set(path)),
        "decisions": sum(1 for s in path if agent.steps[s].type == "decision"),
        "repeat": repeat,
        "load_average_before": load_before,
        "load_average_after": __import__("os").getloadavg()[0],
        "langgraph_version": _version("langgraph"),
        "microseconds_per_step": {name: spread(values) for name, values in times.items()},
        "ratios": {
            "LangGraph (no checkpointer) / flowengine (logging on)": ratio(
                "LangGraph, no checkpointer", logged
            ),
            "LangGraph (no checkpointer) / flowengine (logging off)": ratio(
                "LangGraph, no checkpointer", unlogged
            ),
            "LangGraph (SqliteSaver) / flowengine (logging on)": ratio(SQLITE, logged),
            "LangGraph (SqliteSaver, durability sync) / flowengine (logging on)": ratio(
                SQLITE_SYNC, logged
            ),
            "flowengine logging on / off": spread(
                [a / b for a, b in zip(logged, unlogged, strict=True)]
            ),
        },
    }


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
