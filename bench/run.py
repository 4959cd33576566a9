"""Run the benchmarks and write BENCHMARKS.md and bench/results.json.

Machines here are shared and noisy, so every figure is the median of several runs with
its spread (min to max), and comparisons are ratios measured side by side in one run.

    python bench/run.py            # all benchmarks
    python bench/run.py --quick    # fewer repetitions and no 100k-step flow
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


def render(results: dict[str, object]) -> str:
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
        "## Validation",
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
    if "kernel" in results:
        lines += render_kernel(results["kernel"])
    return "\n".join(lines)


POOLS = ("concurrency", "concurrency_small_pool")


def render_kernel(k: dict) -> list[str]:
    t, share, rate = k["throughput"], k["logging_share"], k["logging_rate"]
    lines = [
        "## Kernel (embedded SmolLM2-135M Q4_1 through ctransformers)",
        "",
        "`bench/kernel.py`. Greedy decoding, 2 threads.",
        "",
        "### Throughput: kernel vs ctransformers called directly",
        "",
        f"One request, {t['tokens']} generated tokens, same prompt and sampling settings, the",
        "two measured alternately five times (prompt plus generated tokens per second).",
        "",
        "| path | tokens/s (median) |",
        "| --- | --- |",
        f"| `LLM.generate` directly | {t['direct_tokens_per_s']:.0f} |",
        f"| through the kernel (rr, queue, slices, records) | {t['kernel_tokens_per_s']:.0f} |",
        f"| **ratio** | **{t['ratio']:.3f}** |",
        "",
        "### 8 concurrent requests: fifo vs rr",
        "",
        "Eight requests ready at once, 48 tokens each, quantum 16 tokens.",
        "",
        "| pool | scheduler | total | mean waiting | mean turnaround | mean time to first token"
        " | preemptions | snapshot restores |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key in POOLS:
        c = k[key]
        for policy in ("fifo", "rr"):
            r = c[policy]
            lines.append(
                f"| {c['pool']} | {policy} | {r['total_s']:.2f} s | {r['mean_waiting_s']:.2f} s |"
                f" {r['mean_turnaround_s']:.2f} s | {r['mean_first_start_s']:.2f} s |"
                f" {r['preemptions']} | {r['restores']} |"
            )
    lines += [
        "",
        "rr total time vs fifo: "
        + ", ".join(
            f"{k[key]['rr_total_vs_fifo']:.3f}x with a pool of {k[key]['pool']}"
            for key in POOLS
        )
        + ". Outputs identical under both schedulers: "
        + ", ".join(str(k[key]["same_outputs"]) for key in POOLS)
        + ".",
        "",
        "### DuckDB logging",
        "",
        f"- {rate['rows']:,} rows through the storage writer: {rate['rows_per_s']:,.0f} rows/s.",
        f"- A MathAgent run on the model ({share['steps']} steps, {share['run_s']:.1f} s): the"
        f" writer was busy {share['writer_busy_s'] * 1000:.0f} ms for {share['rows']} rows,"
        f" {share['share'] * 100:.2f}% of the run.",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller flows")
    parser.add_argument(
        "--only", choices=("validation", "kernel"), help="run one part; keep the other's figures"
    )
    args = parser.parse_args()
    stored = ROOT / "bench" / "results.json"
    previous = json.loads(stored.read_text()) if stored.exists() else {}
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, {__import__('os').cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.only == "kernel" and "validation" in previous:
        results["validation"] = previous["validation"]
    else:
        results["validation"] = bench_validation(args.quick)
    if args.only == "validation" and "kernel" in previous:
        results["kernel"] = previous["kernel"]
    elif args.only != "validation":
        done = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "kernel.py")],
            cwd=ROOT, check=True, capture_output=True, text=True,
        )
        results["kernel"] = json.loads(done.stdout)
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (ROOT / "BENCHMARKS.md").write_text(render(results))
    print((ROOT / "BENCHMARKS.md").read_text())


if __name__ == "__main__":
    main()
