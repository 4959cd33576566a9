"""The demo task on the embedded model: prefix reuse on and off, prompts with and without
the run's progress, and model thread counts on a quiet and on a loaded machine.

Prints one JSON object (read by bench/run.py). Each TravelAgent run goes through the real
CLI into its own DuckDB file; the figures are read back from it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "agents" / "travel_agent.yaml"
TASK = "Plan a 3-day trip from Seattle to California"
FLOWENGINE = str(Path(sys.executable).parent / "flowengine")
ECHO_CHARS = 60


def _agent_with_progress(folder: Path, setting: str) -> Path:
    """TravelAgent with every prompt carrying the run's progress (``progress: all``)."""
    text = AGENT.read_text(encoding="utf-8")
    marker = "\nsteps:"
    path = folder / f"travel_agent_{setting}.yaml"
    path.write_text(text.replace(marker, f"\nprogress: {setting}\n{marker}", 1), encoding="utf-8")
    return path


def echo_rate(results: list[str]) -> float:
    """Share of text step results whose first 60 characters repeat an earlier result's."""
    seen: set[str] = set()
    echoes = 0
    for text in results:
        start = " ".join(text.split())[:ECHO_CHARS]
        echoes += start in seen
        seen.add(start)
    return echoes / len(results) if results else 0.0


def demo_run(agent: Path, folder: Path, name: str, *flags: str) -> dict[str, object]:
    db = folder / f"{name}.duckdb"
    started = time.perf_counter()
    done = subprocess.run(
        [FLOWENGINE, "run", str(agent), "--input", TASK, "--db", str(db), "--json", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"demo run {name} failed: {done.stderr[-2000:]}")
    [outcome] = json.loads(done.stdout)
    with duckdb.connect(str(db), read_only=True) as con:
        prompt, evaluated, reused, output_tokens, requests = con.execute(  # type: ignore[misc]
            "SELECT sum(prompt_tokens), sum(evaluated_tokens), sum(reused_tokens), "
            "sum(output_tokens), count(*) FROM llm_requests"
        ).fetchone()
        replies = [
            r
            for (r,) in con.execute(
                "SELECT response FROM llm_requests WHERE kind = 'generate' ORDER BY created"
            ).fetchall()
        ]
        [invalid] = con.execute(  # type: ignore[misc]
            "SELECT count(*) FROM errors WHERE code = 'output-invalid'"
        ).fetchone()
    return {
        "seconds": seconds,
        "status": outcome["status"],
        "steps": outcome["steps"],
        "path": outcome["path"],
        "output": outcome["output"],
        "output_valid": outcome["output_valid"],
        "output_invalid_errors": invalid,
        "requests": requests,
        "prompt_tokens": prompt,
        "evaluated_tokens": evaluated,
        "reused_tokens": reused,
        "output_tokens": output_tokens,
        # the model's replies are the results of the steps it wrote
        "echo_rate": echo_rate([r for r in replies if not r.lstrip().startswith(("{", "["))]),
    }


_THREADS = """
import json, sys, time
from flowengine.kernel.backends.ctransformers import CTransformersBackend
threads = None if sys.argv[1] == "auto" else int(sys.argv[1])
backend = CTransformersBackend(threads=threads)
cache = backend.new_cache()
prompt = backend.encode("The travel plan lists flights, hotels and restaurants. " * 24)[:300]
out = {"prompt": [], "generate": []}
for _ in range(3):
    cache.truncate(0)
    start = time.perf_counter(); cache.evaluate(prompt)
    out["prompt"].append(len(prompt) / (time.perf_counter() - start))
    start = time.perf_counter()
    for _ in range(32):
        cache.evaluate([cache.next_token()])
    out["generate"].append(32 / (time.perf_counter() - start))
print(json.dumps(out))
"""


def threads_run(setting: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _THREADS, setting], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"threads {setting} failed: {done.stderr[-2000:]}")
    rates = json.loads(done.stdout)
    return {kind: sorted(values)[1] for kind, values in rates.items()}  # median of 3


def bench_threads() -> dict[str, dict[str, dict[str, float]]]:
    settings = ["1", str(os.cpu_count() or 2), "auto"]
    found: dict[str, dict[str, dict[str, float]]] = {"quiet": {}, "one busy process": {}}
    for setting in settings:
        found["quiet"][setting] = threads_run(setting)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)  # let the scheduler see it
        for setting in settings:
            found["one busy process"][setting] = threads_run(setting)
    finally:
        spinner.kill()
        spinner.wait()
    return found


_MASK = """
import json, statistics, time
from flowengine.kernel.backends.ctransformers import CTransformersBackend
from flowengine.kernel.constrain import JsonConstraint
backend = CTransformersBackend(threads=None)
names = [f"Boston Grill {i}" for i in range(1, 7)]
schema = {"type": "object", "required": ["days"], "properties": {"days": {
    "type": "array", "minItems": 3, "maxItems": 3, "items": {"type": "object",
    "required": ["day", "breakfast", "transportation"], "properties": {
        "day": {"type": "integer", "minimum": 1}, "breakfast": {"enum": names},
        "transportation": {"type": "string", "maxLength": 80}}}}}}
reply = json.dumps({"days": [{"day": d, "breakfast": names[d], "transportation": "Flight F0123"}
                             for d in (1, 2, 3)]}, separators=(",", ":"))
tokens = backend.encode(reply)
tokenizer = backend.grammar_tokenizer()
mask = []
for _ in range(5):
    constraint = JsonConstraint(tokenizer, schema)
    start = time.perf_counter()
    for token in tokens:
        constraint.allowed()
        constraint.consume(token)
    mask.append((time.perf_counter() - start) / len(tokens))
cache = backend.new_cache()
cache.evaluate(backend.encode("Plan a trip to Boston. Reply with JSON."))
step = []
for token in tokens:
    start = time.perf_counter()
    cache.next_token()
    cache.evaluate([token])
    step.append(time.perf_counter() - start)
print(json.dumps({"tokens": len(tokens), "mask_s": statistics.median(mask),
                  "decode_step_s": statistics.median(step)}))
"""


def bench_mask() -> dict[str, float]:
    """What masking costs a token, against what decoding one costs, on the same model."""
    done = subprocess.run([sys.executable, "-c", _MASK], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"mask cost failed: {done.stderr[-2000:]}")
    found: dict[str, float] = json.loads(done.stdout)
    found["share"] = found["mask_s"] / found["decode_step_s"]
    return found


def main() -> None:
    parts = sys.argv[1:] or ["runs", "threads", "mask"]
    found: dict[str, object] = {}
    if "mask" in parts:
        found["mask"] = bench_mask()
    if "threads" in parts:
        found["threads"] = bench_threads()
    if "runs" in parts:
        found["runs"] = bench_runs()
    print(json.dumps(found, indent=2))


def bench_runs() -> dict[str, dict[str, object]]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        all_progress = _agent_with_progress(folder, "all")
        runs = {
            "progress none, reuse on": demo_run(AGENT, folder, "none-on"),
            "progress none, reuse off": demo_run(AGENT, folder, "none-off", "--no-prefix-reuse"),
            "progress all, reuse on": demo_run(all_progress, folder, "all-on"),
            "progress all, reuse off": demo_run(
                all_progress, folder, "all-off", "--no-prefix-reuse"
            ),
        }
    for setting in ("none", "all"):
        on, off = runs[f"progress {setting}, reuse on"], runs[f"progress {setting}, reuse off"]
        on["same_as_reuse_off"] = all(on[key] == off[key] for key in ("status", "path", "output"))
    return runs


if __name__ == "__main__":
    main()
