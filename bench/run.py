"""Run the benchmarks and write BENCHMARKS.md and bench/results.json.

Machines here are shared and noisy, so every figure is the median of several runs with
its spread (min to max), and comparisons are ratios measured side by side in one run.

    python bench/run.py            # all benchmarks
    python bench/run.py --quick    # fewer repetitions and no 100k-step flow
    python bench/run.py --only overhead --only decisions   # some parts; keep the rest
    python bench/run.py --render-only   # rewrite BENCHMARKS.md from bench/results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from generate import generated_agent  # noqa: E402

# Runs in a fresh interpreter so each size has its own peak memory.
_MEASURE = """
import gc, json, resource, sys, time
from flowengine.graph import validate_file
import flowengine.graph.validate as v
if sys.argv[2] == "gc-on":
    v._gc_paused = __import__("contextlib").nullcontext
start = time.perf_counter()
result = validate_file(sys.argv[1])
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_mib": peak / 1024, "errors": len(result.errors)}))
"""


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def timed_command(command: list[str], repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=False, capture_output=True)
        times.append(time.perf_counter() - start)
    return spread(times)


def measure_file(path: Path, repeat: int, mode: str = "gc-paused") -> dict[str, object]:
    runs = []
    for _ in range(repeat):
        done = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(path), mode],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(done.stdout))
    assert all(run["errors"] == 0 for run in runs), "generated flows must be valid"
    return {
        "seconds": spread([r["seconds"] for r in runs]),
        "peak_mib": max(r["peak_mib"] for r in runs),
    }


def bench_validation(quick: bool) -> dict[str, object]:
    flowengine = str(Path(sys.executable).parent / "flowengine")
    repeat = 5 if quick else 15
    cold = {
        "python -c pass": timed_command([sys.executable, "-c", "pass"], repeat),
        "flowengine --version": timed_command([flowengine, "--version"], repeat),
        "flowengine validate agents/": timed_command([flowengine, "validate", "agents/"], repeat),
    }
    sizes = [1_000, 10_000] + ([] if quick else [100_000])
    scale: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for steps in sizes:
            path = Path(tmp) / f"flow_{steps}.yaml"
            path.write_text(generated_agent(steps), encoding="utf-8")
            result = measure_file(path, repeat=1 if steps >= 100_000 else 3)
            result["megabytes"] = path.stat().st_size / 1e6
            scale[str(steps)] = result
        path = Path(tmp) / "flow_10000.yaml"
        gc_on = measure_file(path, repeat=3, mode="gc-on")
    per_step = {
        s: r["seconds"]["median"] / int(s) * 1e6  # type: ignore[index]
        for s, r in scale.items()
    }
    return {
        "cold_start": cold,
        "scale": scale,
        "microseconds_per_step": per_step,
        "gc_on_10k": gc_on,
    }


def headline(results: dict) -> list[str]:
    """The ratios the README quotes."""
    lines = ["## Headline", ""]
    if "overhead" in results:
        r = results["overhead"]["ratios"]
        lines.append(
            "- Engine overhead, LangGraph / flowengine µs per step: "
            f"{r['LangGraph (no checkpointer) / flowengine (logging off)']['median']:.2f}x with"
            " logging off, "
            f"{r['LangGraph (SqliteSaver) / flowengine (logging on)']['median']:.2f}x with both"
            " persisting (below 1: LangGraph is faster)."
        )
    if "kernel" in results:
        t = results["kernel"]["throughput"]
        line = (
            f"- Decode throughput, kernel / ctransformers: {t['kernel_vs_direct']['median']:.3f}x"
        )
        if "llama_cpp_vs_kernel" in t:
            line += f"; llama-cpp-python / kernel: {t['llama_cpp_vs_kernel']['median']:.2f}x"
        lines.append(line + ".")
        rows = results["kernel"]["scheduling"]["rows"]
        most = max(row["agents"] for row in rows.values())
        fifo, rr = rows[f"{most}/fifo"], rows[f"{most}/rr q=8"]
        lines.append(
            f"- {most} agents, rr q=8 / fifo: mean first slice"
            f" {rr['mean_first_start_s'] / fifo['mean_first_start_s']:.2f}x, mean turnaround"
            f" {rr['mean_turnaround_s'] / fifo['mean_turnaround_s']:.2f}x, makespan"
            f" {rr['makespan_s'] / fifo['makespan_s']:.2f}x."
        )
    if "decisions" in results:
        tuning, holdout = decision_sets(results["decisions"])
        lines.append(
            "- Decisions on the 135M model (tuning / held-out set), 0 invalid: label scores"
            f" {pct(tuning['label_scores'])} / {pct(holdout['label_scores'])} right,"
            f" calibrated {pct(tuning['calibrated'])} / {pct(holdout['calibrated'])};"
            " with 2 examples and calibration"
            f" {pct(tuning['examples_calibrated'])} / {pct(holdout['examples_calibrated'])};"
            f" AIOS way {pct(tuning['aios'])} / {pct(holdout['aios'])} right,"
            f" {tuning['aios']['invalid']} / {holdout['aios']['invalid']} invalid."
        )
    if "batching" in results:
        eight = results["batching"]["throughput"].get("8", {})
        if "llama.cpp, batched" in eight:
            c = results["batching"]["correctness"]
            lines.append(
                "- Batched decoding, 8 agents, llama.cpp batched / one at a time: tokens/s"
                f" {eight['llama.cpp, batched']['tokens_per_s_vs_llama_one']:.2f}x, mean"
                " turnaround"
                f" {eight['llama.cpp, batched']['turnaround_vs_llama_one']:.2f}x; same path"
                f" alone and batched {c['same_path']} of {c['of']}, same outputs"
                f" {c['same_path_and_outputs']} of {c['of']}."
            )
            same = results["batching"].get("same_batch")
            if same:
                lines.append(
                    "- Batched engine, 8 agents, decode-only ticks with the batch full /"
                    f" llama.cpp alone on a batch of eight: {same['ratio']:.2f}x."
                )
    if "durable" in results:
        d = results["durable"]
        best = d["variants"]["journal, group commit (the default)"]["steps_per_s"]
        lines.append(
            f"- Durable steps a second, 32 concurrent runs on an instant model: {best:,.0f}"
            f" (goal 2,000); journal / DuckDB group commit:"
            f" {d['ratios']['journal / DuckDB, group commit']:.2f}x."
        )
    if "server" in results:
        r = results["server"]["ratios"]
        lines.append(
            "- 8 agents on one GGUF file, llama-cpp-python server / embedded kernel: output"
            f" tokens/s {r['output tokens/s, server / embedded']:.2f}x, makespan"
            f" {r['makespan, server / embedded']:.2f}x."
        )
    if "math_agent" in results:
        m = results["math_agent"]
        lines.append(
            "- MathAgent on arithmetic word problems, embedded 135M model (tuning / held-out):"
            f" {m['tuning']['right']}/{m['tuning']['problems']} /"
            f" {m['holdout']['right']}/{m['holdout']['problems']} right"
            f" ({pct(m['tuning'])} / {pct(m['holdout'])})"
            + (
                f"; reworded without the rules' cue words {m['reworded']['right']}/"
                f"{m['reworded']['problems']}."
                if "reworded" in m
                else "."
            )
        )
    return [*lines, ""]


def render(results: dict) -> str:
    v = results["validation"]
    cold, scale, per_step = v["cold_start"], v["scale"], v["microseconds_per_step"]
    base = cold["python -c pass"]["median"]

    def s(d: dict[str, float]) -> str:
        return f"{d['median']:.3f} s ({d['min']:.3f} to {d['max']:.3f})"

    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`bench/run.py`); raw numbers in `bench/results.json`.",
        "Each figure is the median of several runs, with the range in brackets; ratios",
        "compare runs made side by side in the same session, because these machines are",
        "shared and noisy.",
        "",
        f"Machine: {results['machine']}.",
        "",
        *headline(results),
    ]
    if "overhead" in results:
        lines += render_overhead(results["overhead"])
    if "kernel" in results:
        lines += render_throughput(results["kernel"]["throughput"])
        lines += render_scheduling(results["kernel"]["scheduling"])
    if "decisions" in results:
        lines += render_decisions(results["decisions"])
    if "kernel" in results:
        lines += render_storage(results["kernel"])
    if "demo" in results:
        lines += render_demo(results["demo"])
    lines += [
        "## 6. Validation scale",
        "",
        "### Cold start",
        "",
        "A fresh process each time, as a user or an editor runs it. `validate` imports",
        "PyYAML, jsonschema, Jinja2 and networkx, and never the model runtime or DuckDB.",
        "",
        "| command | time | vs bare `python -c pass` |",
        "| --- | --- | --- |",
    ]
    for name, d in cold.items():
        lines.append(f"| `{name}` | {s(d)} | {d['median'] / base:.1f}x |")
    lines += [
        "",
        "### Generated flows",
        "",
        "`bench/generate.py` writes flows of process steps with templates and saved",
        "variables, an LLM decision with a guarded back edge every 10 steps, `when:`",
        "decisions and tool calls. Time is for `validate_file` (read, parse, schema, compile,",
        "all checks); peak memory is the whole process.",
        "",
        "| steps | file | time | per step | per step vs 1k | peak memory |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    first = next(iter(per_step.values()))
    for steps, r in scale.items():
        lines.append(
            f"| {int(steps):,} | {r['megabytes']:.1f} MB | {s(r['seconds'])} | "
            f"{per_step[steps]:.0f} µs | {per_step[steps] / first:.2f}x | "
            f"{r['peak_mib']:.0f} MiB |"
        )
    gc_on = v["gc_on_10k"]["seconds"]["median"]
    gc_off = scale["10000"]["seconds"]["median"]
    lines += [
        "",
        "The cyclic garbage collector is paused while a file is loaded: the document is",
        "millions of small acyclic objects that each collection would scan again. At",
        f"10,000 steps, validation with the collector running takes {gc_on:.2f} s, "
        f"{gc_on / gc_off:.2f}x the {gc_off:.2f} s above.",
        "",
    ]
    if "durable" in results:
        lines += render_durable(results["durable"])
    if "server" in results:
        lines += render_server(results["server"])
    if "batching" in results:
        lines += render_batching(results["batching"])
    if "long_run" in results:
        lines += render_long_run(results["long_run"])
    if "math_agent" in results:
        lines += render_math_agent(results["math_agent"])
    return "\n".join(lines)


def _pair(entry: dict, key: str, scale: float, unit: str, digits: int = 2) -> str:
    """Two table cells: the figure before (n/a when not measured) and after."""
    after = f"{entry['after'][key] / scale:.{digits}f} {unit}"
    if "before" not in entry:
        return f"n/a | {after}"
    return f"{entry['before'][key] / scale:.{digits}f} {unit} | {after}"


def render_long_run(r: dict) -> list[str]:
    """Section 10: one long run's storage, write time and memory against its length."""
    lines = [
        "## 10. Long runs: bounded records (issue 24)",
        "",
        "`python bench/long_run.py --before DIR`: one Looper run (`tests/looper.py`) of N",
        "steps on the scripted backend (an instant model), in a fresh process per run,",
        "writing a fresh DuckDB file. *before* is the code before step rows stored only what",
        "they changed (commit 6ec0d3c, each row holding the whole memory and path), measured",
        "right after *after* on the same machine. *state* is the bytes of the `steps.state`",
        "column; *write* the seconds the storage threads spent (journal and DuckDB); *peak*",
        "the process's `ru_maxrss`, imports included (about 105 MiB). Medians of "
        f"{r.get('repeat', 1)} runs each, before and after alternating; load average "
        f"{r.get('load_average', [0.0])[0]:.1f} at the start.",
        "",
        "| steps | file: before | after | state: before | after | write: before | after "
        "| run: before | after | peak: before | after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for entry in r["sizes"].values():
        lines.append(
            f"| {entry['after']['steps']:,} | {_pair(entry, 'db_bytes', 2**20, 'MiB')} | "
            f"{_pair(entry, 'state_bytes', 2**20, 'MiB')} | {_pair(entry, 'write_s', 1, 's')} | "
            f"{_pair(entry, 'seconds', 1, 's')} | {_pair(entry, 'peak_mib', 1, 'MiB', 0)} |"
        )
    lines.append("")
    longest = list(r["sizes"].values())[-1]
    if "before" in longest:
        b, a = longest["before"], longest["after"]
        lines += [
            f"At {a['steps']:,} steps the `state` column is "
            f"{b['state_bytes'] / a['state_bytes']:,.0f}x smaller; it doubles when the run's",
            "length doubles, where it grew four times. The storage threads write for "
            f"{a['write_s'] / b['write_s']:.2f}x the time,",
            f"and the process peaks at {a['peak_mib'] / b['peak_mib']:.2f}x the memory. The file",
            "itself grows less than the column, because DuckDB compresses the repeated JSON",
            "and allocates in blocks (a small file stays at its first 1.76 MiB). A run's time",
            "still grows faster than its length on both sides: each step's prompt carries the",
            "progress so far (up to the context window), and the memory quota is checked on",
            "the whole memory; that is the run's work, not storage's.",
            "",
        ]
    return lines


def render_batching(b: dict) -> list[str]:
    sys.path.insert(0, str(ROOT / "bench"))
    import batching

    return batching.render(b)


def render_durable(d: dict) -> list[str]:
    variants = d["variants"]
    best = variants["journal, group commit (the default)"]["steps_per_s"]
    goal = "reached" if best >= 2000 else "**not reached**"
    lines = [
        "## 7. Durable steps a second (issue 15)",
        "",
        f"`bench/durable.py`: {d['runs']} concurrent runs of an agent of"
        f" {d['steps_per_run']} steps",
        f"({d['steps_per_run'] // 2} model steps each, {d['runs'] * d['steps_per_run']:,} durable"
        " steps) on one kernel, the scripted backend standing in for an instant model server,",
        "all writing to one DuckDB file; every step is acknowledged only once it is durable.",
        f"Median of {d['repeat']} rounds, the four ways alternating. Load average (1 min) before",
        f"and after: {d['load_average_before']:.1f} and {d['load_average_after']:.1f}, on 2 cores"
        " shared with other work.",
        "",
        "| storage writer | durable steps/s | steps per durable write |",
        "| --- | --- | --- |",
    ]
    for name, v in variants.items():
        lines.append(f"| {name} | {v['steps_per_s']:,.0f} | {v['steps_per_durable_write']:.1f} |")
    ratio = d["ratios"]["journal / DuckDB, group commit"]
    lines += [
        "",
        "Group commit makes the steps that finish while one durable write is under way durable",
        "together in the next. Before the journal a durable write was a DuckDB transaction:",
        "about a millisecond a statement however few its rows (three tables a step) plus the",
        "commit. With the journal it is one JSON line appended and synced to disk, and DuckDB",
        "takes the rows in batches of up to 2,000 or every 0.25 s "
        f"({ratio:.2f}x the durable steps a second of DuckDB group commit, per round).",
        f"The goal of 2,000 durable steps a second is {goal} here ({best:,.0f}). What is left",
        "is CPU under one GIL: the process gets about one of the two shared cores, and the",
        "engine's own work (32 run threads, the kernel's worker and the writer handing the",
        "interpreter to each other several times a step) and the rows' JSON share it.",
        "",
    ]
    return lines


def render_server(v: dict) -> list[str]:
    server, embedded, ratios = v["server"], v["embedded"], v["ratios"]
    lines = [
        "## 8. 8 concurrent agents: through a model server and through the embedded kernel",
        "",
        f"`bench/server.py`: {v['runs']} {v['agent']} runs at once, each on its own problem,"
        f" `--max-tokens {v['max_tokens']}`,",
        f"on the same GGUF file ({v['model']}): through llama-cpp-python"
        f" {v['llama_cpp_python_version']}'s",
        f"OpenAI-compatible server on 127.0.0.1 (`{' '.join(v['server_flags'])}`) with",
        f"`--backend openai --max-inflight {v['max_inflight']}`, and through the embedded kernel",
        "(ctransformers, default settings), one after the other in one process. One round each;",
        f"load average (1 min) before and after: {v['load_average_before']:.1f} and"
        f" {v['load_average_after']:.1f}, on 2 cores shared with other work.",
        "",
        "| | makespan | LLM requests | prompt tokens | output tokens | output tokens/s"
        " | prompt + output tokens/s | mean waiting | runs ended |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in (("server (`--backend openai`)", server), ("embedded kernel", embedded)):
        ends: dict[str, int] = {}
        for status in r["ends"]:
            ends[status] = ends.get(status, 0) + 1
        both = (r["prompt_tokens"] + r["output_tokens"]) / r["makespan_s"]
        lines.append(
            f"| {name} | {r['makespan_s']:.0f} s | {r['requests']} | {r['prompt_tokens']:,} | "
            f"{r['output_tokens']} | {r['output_tokens_per_s']:.1f} | {both:.0f} | "
            f"{r['mean_waiting_s']:.1f} s | "
            + ", ".join(f"{n} {status}" for status, n in sorted(ends.items()))
            + " |"
        )

    def total_rate(r: dict) -> float:
        return (r["prompt_tokens"] + r["output_tokens"]) / r["makespan_s"]

    shown = {
        **ratios,
        "prompt + output tokens/s, server / embedded": total_rate(server) / total_rate(embedded),
    }
    lines += ["", "| ratio | value |", "| --- | --- |"]
    for name, value in shown.items():
        lines.append(f"| {name} | **{value:.2f}x** |")
    lines += [
        "",
        "How the server serves them: llama-cpp-python's server (0.3.36) has no parallel slots",
        "(no `--n_parallel`; `--help` lists none): one model, behind a lock, generates one",
        "reply at a time. By default (`--interrupt_requests true`) a new request cuts a",
        "streamed reply short; it is started with `false`, so the other requests queue at the",
        "lock. The kernel sends all 8 at once (`--max-inflight 8`), so its waiting is only the",
        "time before a request is sent (near 0) and the queueing happens inside the server,",
        "where it is not measured. Not like for like: the server applies the model's own chat",
        "template and runs a newer llama.cpp than ctransformers', so the prompts, the replies",
        "and the paths differ (see the request counts and how the runs ended); output tokens",
        "a second compare the two engines' decoding, prompt + output tokens a second their",
        "whole work (the embedded kernel reuses each run's KV cache, so it evaluates fewer",
        "prompt tokens than it is sent).",
        "",
    ]
    return lines


def _range(d: dict[str, float], fmt: str = ".0f", unit: str = "") -> str:
    return f"{d['median']:{fmt}}{unit} ({d['min']:{fmt}} to {d['max']:{fmt}})"


def render_overhead(o: dict) -> list[str]:
    us, ratios = o["microseconds_per_step"], o["ratios"]
    lines = [
        "## 1. Engine overhead per step: flowengine vs LangGraph",
        "",
        "`bench/overhead.py`. The AIOS TravelAgent (24 steps, imported by `flowengine",
        f"import-aios`) walked along one fixed path of {o['steps']} steps through its loops",
        f"({o['decisions']} decisions), by flowengine and by a LangGraph {o['langgraph_version']}",
        "`StateGraph` with the same nodes, edges and branch choices; both runs are checked to",
        "take exactly that path. The LLM is an instant stand-in on both sides, so what is",
        "timed is the engine: prompt building, scheduling, memory, logging. Each LangGraph node",
        "builds the same prompt (description, task, progress, ask) with an f-string. Median of",
        f"{o['repeat']} alternating repetitions, microseconds per step, range in brackets.",
        "",
        "| engine | µs per step |",
        "| --- | --- |",
    ]
    for name, d in us.items():
        lines.append(f"| {name} | {_range(d)} |")
    lines += ["", "| ratio (per repetition, median) | value |", "| --- | --- |"]
    for name, d in ratios.items():
        lines.append(f"| {name} | **{_range(d, '.2f', 'x')}** |")
    off = ratios["LangGraph (no checkpointer) / flowengine (logging off)"]["median"]
    persisted = ratios["LangGraph (SqliteSaver) / flowengine (logging on)"]["median"]
    if off < 1 and persisted < 1:
        verdict = "**flowengine loses here**"
    elif off < 1:
        verdict = "**flowengine loses without persistence and wins with it**"
    elif persisted < 1:
        verdict = "**flowengine wins without persistence and loses with it**"
    else:
        verdict = "flowengine wins here"

    def faster(ratio: float) -> str:
        return (
            f"LangGraph is {1 / ratio:.1f}x as fast"
            if ratio < 1
            else f"flowengine is {ratio:.1f}x as fast"
        )

    before = next((d for name, d in us.items() if "before the journal" in name), None)
    sync = ratios.get("LangGraph (SqliteSaver, durability sync) / flowengine (logging on)")
    against_sync = ""
    if sync is not None:
        against_sync = f" ({faster(sync['median'])} against SqliteSaver, durability sync)"
    lines += [
        "",
        f"A ratio below 1 means LangGraph is faster. {verdict}: {faster(off)} with logging off,",
        f"and {faster(persisted)} with both persisting{against_sync}.",
        "With logging off, a flowengine step renders sandboxed Jinja2 templates (compiled",
        "once, rendered with size and loop limits), tokenizes the prompt to fit the context",
        "window and asks the kernel, which (the model being free) serves the request on the",
        "run's own thread, as LangGraph calls the node in its own. Issue 24 measured 0.47x to",
        "0.89x here: each request then went to the kernel's worker thread and back (two",
        "thread hand-offs a step), prefix matching compared a token at a time, and the memory",
        "quota check encoded all progress every step. With logging on, every step is",
        "durable before the next starts, so a crash loses nothing and the run can resume:",
        "its rows are appended to the journal and synced to disk (one `O_DSYNC` write), and",
        "moved into DuckDB in batches. LangGraph's default durability, `async`, writes a",
        "step's checkpoint while the next step runs; `sync` writes it first, as flowengine",
        "does. Both persisting engines wait for the disk to sync (flowengine once a step), and",
        "how long a sync takes depends on the disk and on the other work on it, so the ratio",
        "with persistence moves with the disk more than with the engines.",
    ]
    if before is not None:
        lines += [
            f"Before the journal each step was a DuckDB transaction ({before['median']:.0f} µs",
            "a step): DuckDB is an analytical store, and each small statement (three a step:",
            "step, LLM request, slice) and each commit costs about a millisecond.",
        ]
    if "load_average_before" in o:
        lines += [
            f"Load average (1 min) before and after: {o['load_average_before']:.1f} and",
            f"{o['load_average_after']:.1f}, on 2 cores.",
        ]
    return [*lines, ""]


def render_throughput(t: dict) -> list[str]:
    rates = t["tokens_per_s"]
    names = {
        "direct": "ctransformers `LLM.generate` directly",
        "kernel": "flowengine kernel (rr, queue, slices, records)",
        "llama_cpp": f"llama-cpp-python {t.get('llama_cpp_version', '')} (original GGUF file)",
    }
    lines = [
        "## 2. Decode throughput",
        "",
        f"`bench/kernel.py`. One request: the same {t['prompt_tokens']} prompt tokens, greedy",
        "(top-k 1, repetition penalty 1.1), up to 128 generated tokens, 2 threads; the three",
        "measured alternately five times. Prompt plus generated tokens per second.",
        "",
        "| path | tokens generated | tokens/s |",
        "| --- | --- | --- |",
    ]
    for key, label in names.items():
        if key in rates:
            lines.append(f"| {label} | {t['generated'][key]} | {_range(rates[key])} |")
    lines += [
        "",
        f"- kernel / ctransformers direct: **{_range(t['kernel_vs_direct'], '.3f', 'x')}**",
    ]
    if "llama_cpp_vs_kernel" in t:
        lines.append(
            f"- llama-cpp-python / kernel: **{_range(t['llama_cpp_vs_kernel'], '.3f', 'x')}**"
        )
    else:
        lines.append(f"- llama-cpp-python: not measured: {t['llama_cpp_missing']}.")
    lines += [
        "",
        "ctransformers loads a converted copy of the file (scores and `output.weight` added,",
        "tensors unchanged); llama-cpp-python loads the file as shipped. llama-cpp-python",
        "bundles a 2025 llama.cpp and ctransformers a 2023 one; where llama-cpp-python is",
        "faster, that is the newer kernels, which ctransformers cannot get (its last release",
        "was 2023).",
        "",
    ]
    return lines


def render_scheduling(s: dict) -> list[str]:
    lines = [
        "## 3. Scheduling: fifo vs rr",
        "",
        f"`bench/kernel.py`. N agent runs (a one-step agent asking {s['tokens_per_agent']}",
        "tokens) started together on one kernel, a context per agent. Per LLM request, read",
        "back from DuckDB: *first slice* is the time from submission to its first slice of",
        "the model, *waiting* all its time in the queue, *turnaround* submission to last",
        "token. Median of",
        f"{s['repeat']} repetitions; the makespan range is in brackets. Outputs are checked to be",
        "identical under every schedule.",
        "",
        "| agents | schedule | mean first slice | mean waiting | p95 waiting | mean turnaround"
        " | makespan | tokens/s | preemptions |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in s["rows"].values():
        low, high = row["makespan_range_s"]
        lines.append(
            f"| {row['agents']} | {row['schedule']} | {row['mean_first_start_s']:.2f} s |"
            f" {row['mean_waiting_s']:.2f} s |"
            f" {row['p95_waiting_s']:.2f} s | {row['mean_turnaround_s']:.2f} s |"
            f" {row['makespan_s']:.2f} s ({low:.2f} to {high:.2f}) |"
            f" {row['tokens_per_s']:.0f} | {row['preemptions']:.0f} |"
        )
    sw = s["switch"]
    most = max(row["agents"] for row in s["rows"].values())

    def ratio(key: str) -> float:
        return s["rows"][f"{most}/rr q=8"][key] / s["rows"][f"{most}/fifo"][key]

    lines += [
        "",
        f"With {most} agents, rr q=8 / fifo: mean first slice"
        f" **{ratio('mean_first_start_s'):.2f}x**,"
        f" mean turnaround **{ratio('mean_turnaround_s'):.2f}x**, makespan"
        f" {ratio('makespan_s'):.2f}x. Round-robin starts every agent sooner but finishes each",
        "later: when all requests are the same length its mean waiting and turnaround are",
        "higher than fifo's (fifo loses on first slice, rr on turnaround). The makespan and",
        "tokens/s barely change, since the work is the same.",
        "",
        "**Context switch cost** (4 agents, rr q=8): with a context per agent the KV cache is",
        f"kept and a switch costs nothing measurable (makespan {sw['kv_kept_makespan_s']:.2f} s,"
        f" {sw['preemptions']:.0f} preemptions). With one context for all four, every switch",
        "re-evaluates the incoming request's token snapshot: makespan"
        f" {sw['snapshot_makespan_s']:.2f} s, {sw['restores']:.0f} restores, about"
        f" **{sw['seconds_per_restore'] * 1000:.0f} ms per restore**. Same outputs:"
        f" {sw['same_outputs']}. Keep `--pool` at least the number of concurrent runs.",
        "",
    ]
    return lines


def pct(method: dict) -> str:
    return f"{method['accuracy'] * 100:.0f}%"


def decision_sets(d: dict) -> tuple[dict, dict]:
    return d["tuning"], d["holdout"]


DECISION_METHODS = (
    ("label scores, raw (default without examples)", "label_scores"),
    ("label scores, calibrated", "calibrated"),
    ("2 examples, raw", "examples_raw"),
    ("2 examples, calibrated (default with examples)", "examples_calibrated"),
    ("AIOS way", "aios"),
)


def render_decisions(d: dict) -> list[str]:
    tuning, holdout = decision_sets(d)
    lines = [
        "## 4. Decision quality on the embedded model",
        "",
        f"`bench/decisions.py` on two sets of labelled decisions: `bench/data/decisions.jsonl`"
        f" ({tuning['questions']}: the kinds our agents ask), on which every idea was measured"
        f" while tuning, and `bench/data/decisions_holdout.jsonl` ({holdout['questions']}:"
        " sentiment, priority, routing, units, comparisons, negated questions, long contexts),",
        "written and committed before any tuning and measured only at the end. Each decision",
        "is answered five ways on SmolLM2-135M:",
        "",
        "- **label scores, raw**: the label whose tokens (with a leading space) are most",
        "  probable as the reply; one kernel `choose` request.",
        "- **calibrated**: the same scores minus each label's score after a content-free",
        '  prompt, the same prompt with the task and question replaced by "N/A" (contextual',
        "  calibration, Zhao et al. 2021); computed once per prompt and labels, then kept by",
        "  the kernel. Raw and calibrated come from the same request.",
        "- **2 examples**: both again with two worked examples in the prompt, as a decision",
        "  step's `examples`: the nearest other decisions of the same kind in the same set,",
        "  with different answers where possible, never the decision itself.",
        "- **AIOS way**: the branches as a numbered list, a free-text reply parsed for a number",
        "  or a label name, retried at temperature 0.5, 0.8, then 1.1 when it does not parse.",
        "",
        "### Decisions",
        "",
        f"| method | tuning set ({tuning['questions']}) | invalid | held-out set"
        f" ({holdout['questions']}) | invalid |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, key in DECISION_METHODS:
        lines.append(
            f"| {name} | {pct(tuning[key])} | {tuning[key]['invalid']} | {pct(holdout[key])} |"
            f" {holdout[key]['invalid']} |"
        )
    for title, data in (("tuning set", tuning), ("held-out set", holdout)):
        kinds = list(data["by_kind"])
        lines += [
            "",
            f"By kind, {title} (" + ", ".join(f"{data['by_kind'][k]} {k}" for k in kinds) + "):",
            "",
            "| method | " + " | ".join(kinds) + " | s per decision |",
            "| --- | " + " | ".join("---" for _ in kinds) + " | --- |",
        ]
        for name, key in DECISION_METHODS:
            r = data[key]
            per_kind = " | ".join(f"{r['accuracy_by_kind'][k] * 100:.0f}%" for k in kinds)
            lines.append(f"| {name} | {per_kind} | {r['seconds_per_decision']:.3f} |")
    lines += [
        "",
        f"The AIOS way retried {tuning['aios']['retried']} + {holdout['aios']['retried']}"
        f" questions and still had {tuning['aios']['invalid']} + {holdout['aios']['invalid']}"
        " unusable answers; label scoring cannot give one.",
        "",
        "**How the defaults were chosen** (on the tuning set only, before the held-out set was",
        "run; per-token log-probabilities of every variant were collected once and compared):",
        "",
        "- Labels scored with a leading space (` hotel`, as a word inside a sentence is",
        "  tokenized): raw accuracy 45% to 50%, one of several 7 to 10 of 20. Kept.",
        '- Calibration against "N/A": 50% to 56% with the leading space. Averaging "N/A" with',
        '  "[MASK]", keeping the question in the content-free prompt, dividing by the number of',
        "  tokens, adding the end-of-reply token, scoring several spellings (`Yes`, `yes`) or",
        "  listing the options before the answer each moved 0 to 3 of 64 decisions, within",
        "  noise; left out.",
        "- On yes/no and city/state the model's scores carry almost no signal: no threshold on",
        "  the difference of the two labels' raw scores gets more than 14 of 24 (yes/no) or 14",
        "  of 20 (city/state) right, so no calibration can fix them on this model.",
        "",
        "On the held-out set calibration without examples did worse than the raw scores"
        f" ({pct(holdout['label_scores'])} raw, {pct(holdout['calibrated'])} calibrated). It"
        " lost most on units"
        f" ({holdout['label_scores']['accuracy_by_kind'].get('units', 0) * 100:.0f}% raw,"
        f" {holdout['calibrated']['accuracy_by_kind'].get('units', 0) * 100:.0f}% calibrated),",
        "where every right answer happens to be the first label listed. With worked examples,",
        "which pull a small model towards the labels they show, calibration is the better of",
        "the two. So a decision step calibrates by",
        "default only when it has `examples` (`calibrate: true|false` overrides). That default,",
        "and the two methods with examples, came after the first held-out run, so the held-out",
        "figures are no longer an unbiased measure of them. Seconds are medians on a shared,",
        "busy machine. For decisions the data settles, `when:` is still the better tool.",
        "",
    ]
    return lines


def render_storage(k: dict) -> list[str]:
    share, rate = k["logging_share"], k["logging_rate"]
    return [
        "## 5. Storage: DuckDB logging",
        "",
        "`bench/kernel.py`. The kernel's logging path: rows queued to one writer thread that",
        "inserts each batch with `INSERT ... SELECT unnest(...)` (a lone row with `VALUES`)",
        "in one transaction.",
        "",
        f"- {rate['rows']:,} `llm_slices` rows through the writer: **{rate['rows_per_s']:,.0f}"
        " rows/s**.",
        f"- A MathAgent run on the model ({share['steps']} steps, {share['run_s']:.1f} s): the"
        f" writer was busy {share['writer_busy_s'] * 1000:.0f} ms for {share['rows']} rows,"
        f" **{share['share'] * 100:.2f}% of the run**.",
        "",
    ]


def render_demo(d: dict) -> list[str]:
    """The demo task: prefix reuse on and off, progress in prompts, model threads."""
    lines = ["## The demo task: prefix reuse, prompts and threads", ""]
    runs = d.get("runs")
    if runs:
        lines += [
            "TravelAgent on the demo task (`make demo`), through the CLI, on the embedded",
            "SmolLM2-135M; the four runs one after the other in one session. *Reuse* keeps",
            "each run's KV cache between its steps (`--no-prefix-reuse` turns it off);",
            "*progress* is what every prompt carries (`none`, the agent's default: only what",
            "a step's templates name; `all`: the task and every step so far, as prompts were",
            "before). The echo rate is the share of the model's text replies whose first 60",
            "characters repeat an earlier reply's. *Evaluated* counts every token the model",
            "read, generated tokens fed back included, so without reuse it exceeds the prompt",
            "tokens. The machine was shared with other jobs during these runs (load 1 to 4):",
            "compare the ratios, not the seconds.",
            "",
            "| run | wall time | requests | prompt tokens | evaluated | evaluated / prompt |"
            " reused | echo rate | plan valid | same output as reuse off |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, r in runs.items():
            same = r.get("same_as_reuse_off")
            lines.append(
                f"| {name} | {r['seconds']:.0f} s | {r['requests']} | {r['prompt_tokens']:,} |"
                f" {r['evaluated_tokens']:,} | {r['evaluated_tokens'] / r['prompt_tokens']:.2f} |"
                f" {r['reused_tokens'] / r['prompt_tokens']:.0%} | {r['echo_rate']:.0%} |"
                f" {r['output_valid']} | {'' if same is None else same} |"
            )
        lines.append("")
        for setting in ("none", "all"):
            on, off = runs[f"progress {setting}, reuse on"], runs[f"progress {setting}, reuse off"]
            lines.append(
                f"- progress {setting}: reuse off / on, wall time"
                f" {off['seconds'] / on['seconds']:.2f}x, evaluated tokens"
                f" {off['evaluated_tokens'] / on['evaluated_tokens']:.2f}x."
            )
        if any(r.get("same_as_reuse_off") is False for r in runs.values()):
            lines += [
                "",
                "Where the output differs with reuse on and off, that is llama.cpp's arithmetic:",
                "a prompt read in one piece and one read in pieces over several steps give",
                "slightly different numbers, and greedy decoding can then pick another token.",
                "Reuse itself is deterministic: a run gives the same output under `fifo` and",
                "`rr`, alone or among others, with or without evictions (tests on the real",
                "model), because a cache given up is rebuilt by replaying its pieces.",
            ]
        lines.append("")
    mask = d.get("mask")
    if mask:
        lines += [
            "### Constrained decoding",
            "",
            f"A {mask['tokens']}-token JSON plan under a schema with an enum and length limits:",
            f"llguidance's mask and its update cost {mask['mask_s'] * 1e6:.0f} µs a token; a",
            f"decode step of the model costs {mask['decode_step_s'] * 1e3:.1f} ms. Masking adds",
            f"**{mask['share']:.1%}** to decoding (the issue's bound: 10%).",
            "",
        ]
    threads = d.get("threads")
    if threads:
        lines += [
            "### Model threads",
            "",
            "Tokens a second on a 300-token prompt and 32 generated tokens (median of 3), in a",
            "fresh process per setting; *one busy process* is a Python loop spinning on a core",
            "meanwhile. `auto` is the default.",
            "",
            "| machine | threads | prompt tokens/s | generated tokens/s | prompt vs best |",
            "| --- | --- | --- | --- | --- |",
        ]
        for machine, settings in threads.items():
            best = max(v["prompt"] for v in settings.values())
            for setting, v in settings.items():
                lines.append(
                    f"| {machine} | {setting} | {v['prompt']:.0f} | {v['generate']:.0f} |"
                    f" {v['prompt'] / best:.2f} |"
                )
        lines.append("")
    return lines


def render_math_agent(m: dict) -> list[str]:
    tuning, holdout = m["tuning"], m["holdout"]
    kinds = list(tuning["by_kind"])
    lines = [
        "## 11. MathAgent on arithmetic word problems (issue 27)",
        "",
        "`bench/math_agent.py`: `agents/math_agent.yaml` on the word problems of",
        f"`bench/data/math_problems.json`, {tuning['problems']} + {holdout['problems']} that one"
        " expression solves",
        "(costs, sharing, rates, percentages, areas, powers), each with its expected number,",
        "through the runtime in one session on SmolLM2-135M",
        "(ctransformers, greedy). Right means: the run completed, its output is valid JSON",
        "and its `answer` is the expected number. The tuning set is the one the rules and the",
        "prompt were worked out on; the held-out set was written at the same time; the",
        "reworded set after the rules, in wordings that avoid their cue words.",
        "",
        "| set | problems | right | accuracy | rewritten after a calculator error | gave up |"
        " s per problem |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    named = [("tuning", tuning), ("held-out", holdout)]
    if "reworded" in m:
        named.append(("reworded", m["reworded"]))
    for name, r in named:
        lines.append(
            f"| {name} | {r['problems']} | {r['right']} | {pct(r)} | {r['rewritten']} |"
            f" {r['gave_up']} | {r['seconds_per_problem']:.1f} |"
        )
    lines += [
        "",
        "| set | " + " | ".join(kinds) + " |",
        "| --- | " + " | ".join("---" for _ in kinds) + " |",
    ]
    for name, r in named:
        cells = " | ".join(
            "{}/{}".format(*r["by_kind"][k]) if k in r["by_kind"] else "-" for k in kinds
        )
        lines.append(f"| {name} | {cells} |")
    wrong = [w for _, r in named for w in r["wrong"]]
    if wrong:
        lines += ["", "Wrong:", ""]
        lines += [
            f"- {w['task']} Wrote {', '.join(w['expressions'])}: {w['answer']}"
            f" (expected {w['expected']})."
            for w in wrong
        ]
    lines += [
        "",
        "**What the model does, and what was tried** (each on the tuning set, the",
        "`write_expression` step alone, by a one-off script through the kernel, not kept):",
        "",
        "- An expression held only to a pattern of numbers and operators: 2 of 20 right.",
        '  The model invents numbers ("1024 * 596 / 7 + 300 / 7" for 3 notebooks at 8).',
        "- Numbers held to the problem's own, plus 2, 3 and 100: 2 of 20; it prefers 100 and 2.",
        "- The problem's numbers in their order, every operator allowed: 4 of 20, about",
        "  chance for the operator. With six worked examples in the instruction: 0 of 20",
        '  (given an optional "** 2" or "** 3" ending, it always wrote it: greedy decoding',
        "  of this model does not stop where it may).",
        "- The operation as a decision, label scores over add / subtract / multiply /",
        "  divide: raw scores chose add or subtract every time (2 of the 12 problems with one",
        "  of the four right), calibrated scores 5 of 12.",
        "- So the operation is settled by `when:` rules on cue words (`percent`, `discount`,",
        "  `shared`, `equally`, `speed`, `left`, `each ... and`, `together`, `times`, ...),",
        "  and the pattern the expression is held to is built from the rule's label and the",
        "  problem's numbers (a templated `pattern`); the model chooses only where a rule",
        "  leaves a choice (no rule matches: every operator). The first run of this agent",
        '  gave 17/20 and 16/20: "square metres" set off the rule for squares (rectangle',
        '  and triangle areas), and the model wrote "3 + 12 * 2" for 3 books at 12 dollars',
        "  each and a pen at 2. Both were fixed for those tuning problems (the rule looks for",
        '  "a square", and `each_and` is "* then +"); the held-out set, run once before that',
        "  fix, had three failures of the same two kinds, which it fixed too. The same person",
        "  wrote both sets and the cue words, so the held-out figure is less independent than",
        "  a set written by someone else would be. The reworded set shows what happens",
        "  outside the cue words: the model, choosing among every operator, gets the",
        '  explicit ones ("divided by", "plus", "minus", "Multiply") and little else, and',
        "  the numbers must come in the expression's order (\"5 friends pay a 60 dollar",
        '  bill" cannot become 60 / 5; "a pack of 6 ... costs 9 dollars" cannot leave out',
        "  the 6).",
        "",
    ]
    return lines


PARTS = (
    "overhead",
    "kernel",
    "decisions",
    "demo",
    "validation",
    "durable",
    "server",
    "batching",
    "long_run",
    "math_agent",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller flows")
    parser.add_argument(
        "--only",
        choices=PARTS,
        action="append",
        help="run this part (repeatable); keep the other parts' figures from results.json",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="run nothing; rewrite BENCHMARKS.md from bench/results.json",
    )
    args = parser.parse_args()
    stored = ROOT / "bench" / "results.json"
    previous = json.loads(stored.read_text()) if stored.exists() else {}
    if args.render_only:
        if not previous:
            sys.exit(f"{stored} does not exist yet; run the benchmarks first")
        (ROOT / "BENCHMARKS.md").write_text(render(previous))
        return
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, {__import__('os').cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
    }
    chosen = args.only or list(PARTS)
    for part in PARTS:
        if part not in chosen:
            if part in previous:
                results[part] = previous[part]
            continue
        print(f"bench: {part} ...", file=sys.stderr, flush=True)
        if part == "validation":
            results[part] = bench_validation(args.quick)
            continue
        done = subprocess.run(
            [sys.executable, str(ROOT / "bench" / f"{part}.py")],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            sys.exit(f"bench/{part}.py failed:\n{done.stderr[-3000:]}")
        results[part] = json.loads(done.stdout)
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (ROOT / "BENCHMARKS.md").write_text(render(results))
    print((ROOT / "BENCHMARKS.md").read_text())


if __name__ == "__main__":
    main()
