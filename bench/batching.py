"""Batched decoding: N concurrent agents doing the same work, one at a time or batched.

Three ways to serve N = 1, 4, 8 and 16 copies of one agent (same task) on the same GGUF
file, side by side in one run: ctransformers one request at a time (the embedded kernel),
llama.cpp one request at a time (``--max-batch 1``), and llama.cpp batched (``--max-batch
N``). For each: generated tokens a second, makespan and mean turnaround of the LLM
requests, all under ``fifo``; batched ``rr`` is added at 8 and 16.

Then correctness: each of the agents run alone (llama.cpp, one at a time) and all of them
at once in one batch: how many took the same path with the same outputs.

    python bench/batching.py             # prints JSON
    python bench/batching.py --quick     # N = 1 and 8 only, one round
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowengine.graph.validate import validate_text  # noqa: E402
from flowengine.kernel.backends.base import Message  # noqa: E402
from flowengine.kernel.scheduler import SchedulerConfig  # noqa: E402
from flowengine.runtime.interpreter import RunSetup  # noqa: E402
from flowengine.runtime.session import Session, SessionConfig  # noqa: E402

WORKER = """\
name: Worker
description: Writes three short notes about a task, then judges them.
steps:
  Outline:
    type: process
    instruction: List the three main parts of this task, one line each.
    next: Detail
  Detail:
    type: process
    instruction: Describe the first part of the task in two sentences.
    next: Risks
  Risks:
    type: process
    instruction: Name one thing that could go wrong, and how to avoid it.
    save_as: risks
    next: Judge
  Judge:
    type: decision
    question: Is the plan complete?
    branches: {yes: Done, no: Done}
  Done:
    type: terminal
    output: "{{ risks }}"
"""
TASK = "Organise a small science fair for a primary school"
MAX_TOKENS = 48

CORRECTNESS = [
    ("agents/math_agent.yaml", "What is 12 times 7 plus 3?"),
    ("agents/rec_agent.yaml", "I want cheap Italian restaurants in Boston, 3 of them"),
    ("agents/narrative_agent.yaml", "A lighthouse keeper finds a message in a bottle"),
    ("agents/travel_agent.yaml", "Plan a 3-day trip from Seattle to California"),
    ("worker", TASK),
    ("worker", "Write a guide to growing tomatoes on a balcony"),
]


def _worker() -> Any:
    agent = validate_text(WORKER, "worker.yaml").agent
    assert agent is not None
    return agent


def _setup(path: str, task: str) -> RunSetup:
    if path == "worker":
        return RunSetup(_worker(), WORKER, task, max_tokens=MAX_TOKENS)
    text = (ROOT / path).read_text()
    agent = validate_text(text, path).agent
    assert agent is not None
    return RunSetup(agent, text, task, max_tokens=MAX_TOKENS)


def one_mode(
    folder: Path,
    name: str,
    backend: str,
    n: int,
    batch: int,
    policy: str,
) -> dict:
    config = SessionConfig(
        db=folder / f"{name}.duckdb",
        backend=backend,
        scheduler=SchedulerConfig(policy),
        options={"max_batch": batch},
        pool_size=max(2 * batch, n) if backend == "llama-cpp" else 4,
    )
    with Session(config) as session:
        setups = [(_setup("worker", TASK), None) for _ in range(n)]
        start = time.perf_counter()
        outcomes = session.run_all(setups)
        makespan = time.perf_counter() - start
        session.storage.commit()
        [(generated, turnaround, waiting)] = session.storage.query(
            "SELECT sum(output_tokens), avg(turnaround_s), avg(waiting_s) FROM llm_requests"
        )
        # The kernel keeps only its newest decodes; storage has them all.
        [(mean_batch, decoded, decode_seconds, full, full_seconds)] = session.storage.query(
            "SELECT avg(sequences), sum(tokens) FILTER (WHERE prompt_tokens = 0), "
            "sum(epoch(ended) - epoch(started)) FILTER (WHERE prompt_tokens = 0), "
            f"sum(tokens) FILTER (WHERE prompt_tokens = 0 AND sequences = {batch}), "
            "sum(epoch(ended) - epoch(started)) "
            f"FILTER (WHERE prompt_tokens = 0 AND sequences = {batch}) "
            "FROM batch_ticks"
        )
    assert all(o.status == "completed" for o in outcomes), [o.error for o in outcomes]
    return {
        "tokens_per_s": generated / makespan,
        "makespan_s": makespan,
        "mean_turnaround_s": turnaround,
        "mean_waiting_s": waiting,
        "generated": generated,
        "mean_batch": mean_batch if mean_batch is not None else 1.0,
        # Ticks that only decode (no prompt chunk): what batching itself gains.
        "decode_tokens_per_s": decoded / decode_seconds if decode_seconds else None,
        # Those with the batch full: the same batch as llama.cpp alone decodes.
        "full_batch_decode_tokens_per_s": full / full_seconds if full_seconds else None,
    }


def throughput(folder: Path, sizes: list[int], rounds: int) -> dict[str, Any]:
    modes = {
        "ctransformers, one at a time": ("ctransformers", 1, "fifo"),
        "llama.cpp, one at a time": ("llama-cpp", 1, "fifo"),
        "llama.cpp, batched": ("llama-cpp", 0, "fifo"),
        "llama.cpp, batched, rr": ("llama-cpp", 0, "rr"),
    }
    results: dict[str, Any] = {}
    for n in sizes:
        per_mode: dict[str, list[dict]] = {m: [] for m in modes}
        for index in range(rounds):
            # Alternate the order so that a change in the machine's load does not always
            # fall on the same mode.
            order = list(modes) if index % 2 == 0 else list(reversed(modes))
            for mode in order:
                backend, batch, policy = modes[mode]
                if policy == "rr" and n < 8:
                    continue
                per_mode[mode].append(
                    one_mode(
                        folder,
                        f"{n}-{index}-{list(modes).index(mode)}",
                        backend,
                        n,
                        batch or n,
                        policy,
                    )
                )
        # Ratios are taken within each round (modes side by side), then their median.
        for index in range(rounds):
            base = per_mode["llama.cpp, one at a time"][index]
            for runs in per_mode.values():
                if len(runs) > index:
                    row = runs[index]
                    row["tokens_per_s_vs_llama_one"] = row["tokens_per_s"] / base["tokens_per_s"]
                    row["turnaround_vs_llama_one"] = (
                        row["mean_turnaround_s"] / base["mean_turnaround_s"]
                    )
                    if row["decode_tokens_per_s"] and base["decode_tokens_per_s"]:
                        row["decode_vs_llama_one"] = (
                            row["decode_tokens_per_s"] / base["decode_tokens_per_s"]
                        )
        results[str(n)] = {
            mode: {
                key: statistics.median(r[key] for r in runs)
                for key in runs[0]
                if all(r.get(key) is not None for r in runs)
            }
            for mode, runs in per_mode.items()
            if runs
        }
        print(f"N={n}: {json.dumps(results[str(n)], indent=1)}", file=sys.stderr)
    return results


def raw_decode(rounds: int = 3, steps: int = 32) -> dict[str, float]:
    """llama.cpp alone, no engine: tokens a second decoding 1 and 8 sequences of a
    300-token context in one ``llama_decode`` a token (greedy, logits read back)."""
    from flowengine.kernel.backends.llamacpp import Feed, LlamaCppBackend

    backend = LlamaCppBackend(sequences=8, max_batch=8)
    text = "Tell me about the sea, its waves and the ships on it. " * 25
    prompt = backend.encode(backend.chat_prompt([Message("user", text)]))

    def speed(n: int) -> float:
        nexts = []
        for sequence in range(n):
            backend.forget(sequence)
            [rows] = backend.decode_batch([Feed(sequence, prompt, 0)])
            nexts.append(int(rows[-1].argmax()))
        start = time.perf_counter()
        for step in range(steps):
            feeds = [Feed(s, [nexts[s]], len(prompt) + step) for s in range(n)]
            nexts = [int(rows[-1].argmax()) for rows in backend.decode_batch(feeds)]
        return n * steps / (time.perf_counter() - start)

    one, eight = [], []
    for _ in range(rounds):
        one.append(speed(1))
        eight.append(speed(8))
    backend.close()
    return {
        "one": statistics.median(one),
        "eight": statistics.median(eight),
        "ratio": statistics.median(e / o for e, o in zip(eight, one, strict=True)),
        "context": len(prompt),
    }


def same_batch(folder: Path, rounds: int = 3) -> dict[str, Any]:
    """The batched engine's decode-only ticks with all 8 agents in the batch, against
    llama.cpp alone decoding 8 sequences in one batch, alternating, a ratio a round."""
    engine, alone, ratios = [], [], []
    load = f"{os.getloadavg()[0]:.1f} at the start"
    for index in range(rounds):
        eight = raw_decode(rounds=1)["eight"]
        run = one_mode(folder, f"same-{index}", "llama-cpp", 8, 8, "fifo")
        full = run["full_batch_decode_tokens_per_s"]
        engine.append(full)
        alone.append(eight)
        ratios.append(full / eight)
    return {
        "engine": statistics.median(engine),
        "alone": statistics.median(alone),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "rounds": rounds,
        "load": load + f", {os.getloadavg()[0]:.1f} at the end",
    }


def _signature(outcome: Any) -> tuple:
    return (outcome.status, tuple(outcome.path), json.dumps(outcome.output, sort_keys=True))


def correctness(folder: Path) -> dict[str, Any]:
    alone = []
    for index, (path, task) in enumerate(CORRECTNESS):
        config = SessionConfig(
            db=folder / f"alone{index}.duckdb", backend="llama-cpp", options={"max_batch": 1}
        )
        with Session(config) as session:
            [outcome] = session.run_all([(_setup(path, task), None)])
        alone.append(outcome)
    config = SessionConfig(
        db=folder / "together.duckdb", backend="llama-cpp", options={"max_batch": len(CORRECTNESS)}
    )
    with Session(config) as session:
        together = session.run_all([(_setup(path, task), None) for path, task in CORRECTNESS])
    rows = []
    for (path, _task), a, b in zip(CORRECTNESS, alone, together, strict=True):
        rows.append(
            {
                "agent": a.agent,
                "file": path,
                "same_path": a.path == b.path,
                "same_path_and_outputs": _signature(a) == _signature(b),
                "steps_alone": a.steps,
                "steps_batched": b.steps,
            }
        )
    return {
        "runs": rows,
        "same_path": sum(r["same_path"] for r in rows),
        "same_path_and_outputs": sum(r["same_path_and_outputs"] for r in rows),
        "of": len(rows),
    }


def main(quick: bool = False) -> dict[str, Any]:
    sizes = [1, 8] if quick else [1, 4, 8, 16]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        result = {
            "max_tokens": MAX_TOKENS,
            "rounds": 1 if quick else 2,
            "load": f"{os.getloadavg()[0]:.1f} at the start",
            "throughput": throughput(folder, sizes, 1 if quick else 2),
            "correctness": correctness(folder),
            "raw_decode": raw_decode(),
            "same_batch": same_batch(folder, 1 if quick else 3),
        }
        result["load"] += f", {os.getloadavg()[0]:.1f} at the end"
    return result


if __name__ == "__main__":
    print(json.dumps(main("--quick" in sys.argv), indent=2))


def render(b: dict[str, Any]) -> list[str]:
    """The BENCHMARKS.md section for these results."""
    lines = [
        "## 9. Batched decoding (issue 16)",
        "",
        "`python bench/batching.py`: N copies of one four-step agent (three process steps of at",
        f"most {b['max_tokens']} tokens and a decision, the same task), started together, on the",
        "embedded SmolLM2 GGUF file: through ctransformers one request at a time (the embedded",
        "kernel), through llama.cpp one request at a time (`--backend llama-cpp --max-batch 1`),",
        "and through llama.cpp batched (`--max-batch N`), all under `fifo`; batched `rr`",
        "(quantum 16) too at 8 and 16 agents. Modes alternate order between rounds; medians of",
        f"{b.get('rounds', 2)} rounds. Load average: {b.get('load', 'not recorded')}.",
        "",
        "| agents | mode | generated tokens/s | vs llama.cpp one at a time | decode-only "
        "ticks: tokens/s | vs one at a time | makespan | mean turnaround of a request | vs "
        "llama.cpp one at a time | mean batch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n, modes in b["throughput"].items():
        for mode, row in modes.items():
            decode = (
                f"{row['decode_tokens_per_s']:.0f} | {row['decode_vs_llama_one']:.2f}x"
                if "decode_vs_llama_one" in row
                else "n/a | n/a"
            )
            lines.append(
                f"| {n} | {mode} | {row['tokens_per_s']:.0f} | "
                f"{row['tokens_per_s_vs_llama_one']:.2f}x | {decode} | "
                f"{row['makespan_s']:.1f} s | "
                f"{row['mean_turnaround_s']:.2f} s | {row['turnaround_vs_llama_one']:.2f}x | "
                f"{row['mean_batch']:.1f} |"
            )
    raw = b.get("raw_decode")
    eight = b["throughput"].get("8", {})
    if raw and "llama.cpp, batched" in eight:
        batched, ct = eight["llama.cpp, batched"], eight["ctransformers, one at a time"]
        lines += [
            "",
            "**Where batching stops short of 2.5x.** On this 2-core machine, llama.cpp alone",
            f"(no engine: one `llama_decode` a token, {raw['context']}-token contexts) decodes",
            f"{raw['one']:.0f} tokens/s for one sequence and {raw['eight']:.0f} for eight in one",
            f"batch: **{raw['ratio']:.2f}x**. For a 135M model the weights are small enough that",
            "a pass is bound by arithmetic on two cores more than by reading them, so a batch of",
            "eight costs several times one. The engine's decode-only ticks gain",
            f"{batched.get('decode_vs_llama_one', 0):.2f}x at 8 agents: the runs' own work",
            "(templates, tools, storage) shares the same two cores with the decoding threads, and",
            "prompt chunks gain nothing from batching. Against today's embedded kernel",
            f"(ctransformers one at a time), batched llama.cpp gives "
            f"{batched['tokens_per_s'] / ct['tokens_per_s']:.1f}x the tokens/s at 8 agents and",
            f"{batched['makespan_s'] / ct['makespan_s']:.2f}x the makespan.",
        ]
    one = b["throughput"].get("1", {})
    if "llama.cpp, one at a time" in one:
        ratio = (
            one["llama.cpp, one at a time"]["tokens_per_s"]
            / one["ctransformers, one at a time"]["tokens_per_s"]
        )
        lines += [
            "",
            f"**One agent alone** runs at {ratio:.2f}x ctransformers' tokens a second on llama.cpp",
            "(the first rows). Section 2's 0.81x timed llama-cpp-python's high-level",
            "`Llama.generate` on one long generation; this is the whole agent through the engine,",
            "where llama.cpp's newer prompt evaluation and the kept sequence count too.",
        ]
    same = b.get("same_batch")
    if same:
        lines += [
            "",
            "**The engine against llama.cpp alone on the same batch** (issue 24; target 0.9",
            "or more). Side by side, alternating, "
            f"{same['rounds']} round{'s' if same['rounds'] > 1 else ''} (load average"
            f" {same['load']}{'; ' + same['date'] if 'date' in same else ''}): llama.cpp"
            " alone decodes eight sequences in one batch",
            f"({raw['context'] if raw else 381}-token contexts) at {same['alone']:.0f} tokens/s;",
            "the batched engine's decode-only ticks with all 8 agents in the batch ran at",
            f"{same['engine']:.0f}: **{same['ratio']:.2f}x** (rounds: "
            + ", ".join(f"{r:.2f}x" for r in same["ratios"])
            + "). A tick is timed around its `llama_decode` and the copy of the logits rows",
            "it asked for, the same call as llama.cpp alone, so what differs is what else runs",
            "on the two cores meanwhile (the agents' threads) and the contexts: the agents'",
            "prompts are shorter than llama.cpp alone's, which is why the engine can come out",
            "ahead. So the engine adds nothing measurable inside a decode; what it does between",
            "decodes (sampling, grammar masks, the agents' steps) is outside these ticks, and",
            "shows in the tokens/s of the table above.",
            "Issue 24's 0.73x divided the two gains over one at a time instead (1.34x for the",
            "engine, 1.83x for llama.cpp alone), which folds in how much each one-at-a-time",
            "baseline was slowed by the other.",
        ]
    c = b["correctness"]
    lines += [
        "",
        "**Same outputs alone and batched?** Each agent below ran alone (llama.cpp, one at a",
        "time), then all of them at once in one batch. llama.cpp does not promise the same",
        "logits whatever else is in the batch, so greedy decoding may pick another token once",
        f"two are close. Same path: **{c['same_path']} of {c['of']}**; same path and the same",
        f"outputs: **{c['same_path_and_outputs']} of {c['of']}**.",
        "",
        "| agent | same path | same path and outputs | steps alone | steps batched |",
        "| --- | --- | --- | --- | --- |",
    ]
    for run in c["runs"]:
        lines.append(
            f"| {run['agent']} (`{run['file']}`) | {'yes' if run['same_path'] else 'no'} | "
            f"{'yes' if run['same_path_and_outputs'] else 'no'} | {run['steps_alone']} | "
            f"{run['steps_batched']} |"
        )
    return [*lines, ""]
