"""``logs`` and ``stats``: reading stored runs back from DuckDB."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flowengine.cli.common import (
    EXIT_ERRORS,
    EXIT_OK,
    FORMATTER,
    add_dbs_option,
    add_format_option,
    db_paths,
    human,
    json_default,
    table,
)
from flowengine.errors import UsageError
from flowengine.storage.reader import parse_json

JSON_COLUMNS = frozenset(
    {"result", "state", "label_scores", "args", "inputs", "output_errors", "changes"}
)
"""Columns DuckDB hands back as JSON text; ``--json`` nests them as JSON values."""
FOLLOW_POLL_S = 0.5
"""How often ``logs --follow`` looks for new steps (it reads file sizes and times only,
so a writer is never kept out)."""
FOLLOW_RETRIES = 10
"""Copies of a live file in a row that may fail (its writer changed it) before giving up."""


def add_parsers(commands: Any) -> None:
    formatter = FORMATTER
    logs = commands.add_parser(
        "logs",
        help="show stored runs, one run's steps, or one step in full",
        description="Without RUN_ID: the latest runs, then the waiting ones with their "
        "questions. With RUN_ID ('latest' for the newest run): that run's steps, LLM "
        "requests (with decision label scores), tool calls and errors. With --step N: "
        "everything step N did, in full: its prompt, the reply, the constraint the reply "
        "was held to, label scores, tool arguments and results, and errors.",
        epilog="Examples:\n"
        "  flowengine logs\n"
        "  flowengine logs latest\n"
        "  flowengine logs 3f2a9c1d5e7b --step 4\n"
        "  flowengine logs 3f2a9c1d5e7b --json\n"
        "  flowengine logs latest --follow      # print steps as a live run stores them",
        formatter_class=formatter,
    )
    logs.add_argument("run_id", nargs="?", metavar="RUN_ID")
    logs.add_argument(
        "--step", type=int, metavar="N", help="show step N (its seq, as in the steps table)"
    )
    logs.add_argument(
        "--follow",
        action="store_true",
        help="print the run's steps as they are stored until it ends (Ctrl-C stops)",
    )
    add_format_option(
        logs,
        ("table", "json"),
        "table",
        "table (default), or json: the same records as nested JSON",
    )
    add_dbs_option(logs)
    logs.set_defaults(handler=cmd_logs)

    stats = commands.add_parser(
        "stats",
        help="runs, success rate, step latency, tokens and scheduling, per agent",
        description="What the stored runs did, per agent and over all agents: runs by "
        "status and the success rate (completed among the runs that ended); p50/p95 step "
        "latency by step kind; tokens per run (prompt, reused from the KV cache, "
        "generated); tool calls and errors; and the scheduler's figures over every LLM "
        "request (waiting and turnaround, slices, preemptions, KV reuse).",
        epilog="Examples:\n  flowengine stats\n  flowengine stats --db 'out/*.duckdb' --json",
        formatter_class=formatter,
    )
    add_format_option(
        stats,
        ("table", "json"),
        "table",
        "table (default), or json: an object with runs, step_latency, tokens, tool_errors "
        "and scheduler lists",
    )
    add_dbs_option(stats)
    stats.set_defaults(handler=cmd_stats)


def nested(rows: Any) -> Any:
    """Records with their JSON columns parsed, for ``--json``."""
    if isinstance(rows, list):
        return [nested(row) for row in rows]
    if isinstance(rows, dict):
        return {
            key: parse_json(value) if key in JSON_COLUMNS else nested(value)
            for key, value in rows.items()
        }
    return rows


def _print_json(value: Any) -> None:
    print(json.dumps(nested(value), indent=2, default=json_default, ensure_ascii=False))


def cmd_logs(args: argparse.Namespace) -> int:
    from flowengine.storage.reader import Records

    if args.follow and args.run_id is None:
        raise UsageError("--follow needs a RUN_ID (or 'latest')")
    if args.step is not None and args.run_id is None:
        raise UsageError("--step needs a RUN_ID (or 'latest')")
    paths = db_paths(args)
    if args.follow:
        return _follow(paths, args.run_id, args.format == "json")
    path = ", ".join(map(str, paths))
    with Records(paths) as records:
        if args.run_id is None:
            rows = records.runs()
            if args.format == "json":
                _print_json(rows)
            elif not rows:
                print(f"no runs stored in {path} yet", file=sys.stderr)
            else:
                print(table(rows, ["run_id", "agent", "status", "steps", "scheduler", "created"]))
                waiting = [row for row in rows if row["status"] == "waiting"]
                if waiting:
                    print("\nwaiting for an answer (flowengine resume RUN_ID --answer TEXT)")
                    print(table(waiting, ["run_id", "agent", "question"]))
            return EXIT_OK
        run_id = _run_id(records, args.run_id, path)
        run = records.run(run_id)
        if run is None:
            raise UsageError(f"no run {args.run_id!r} in {path}; `flowengine logs` lists the runs")
        if args.step is not None:
            step = records.step(run_id, args.step)
            if step is None:
                raise UsageError(
                    f"run {run_id} has no step {args.step} (it has {run['steps']}); "
                    f"`flowengine logs {run_id}` lists them"
                )
            step["constraint"] = _constraint(records.agent_text(run_id), step)
            if args.format == "json":
                _print_json(step)
            else:
                _print_step(run, step)
            return EXIT_OK
        detail: dict[str, Any] = {
            "run": run,
            "steps": records.steps(run_id),
            "llm_requests": records.requests(run_id),
            "tool_calls": records.tool_calls(run_id),
            "errors": records.errors(run_id),
        }
    if args.format == "json":
        _print_json(detail)
        return EXIT_OK
    _print_run(run, detail)
    return EXIT_OK


def _run_id(records: Any, given: str, path: str) -> str:
    if given != "latest":
        return given
    latest = records.latest_run_id()
    if latest is None:
        raise UsageError(f"no runs stored in {path} yet")
    return str(latest)


def _print_run(run: dict[str, Any], detail: dict[str, Any]) -> None:
    print(
        f"run {run['run_id']}: {run['agent']} {run['status']}, {run['steps']} steps "
        f"({run['backend']}, {run['scheduler']})"
    )
    if run["status"] == "waiting":
        print(f"waiting for an answer to: {run.get('question')}")
    print(
        "\nsteps\n" + table(detail["steps"], ["seq", "step_id", "kind", "label", "tool", "result"])
    )
    requests = [
        {**request, "label_scores": _scores_text(request.get("label_scores"))}
        for request in detail["llm_requests"]
    ]
    print(
        "\nLLM requests\n"
        + table(
            requests,
            [
                "step_seq",
                "step_id",
                "kind",
                "prompt_tokens",
                "output_tokens",
                "waiting_s",
                "turnaround_s",
                "slices",
                "preemptions",
                "label_scores",
            ],
        )
    )
    if detail["tool_calls"]:
        print(
            "\ntool calls\n"
            + table(detail["tool_calls"], ["step_seq", "step_id", "tool", "ok", "error"])
        )
    if detail["errors"]:
        print("\nerrors\n" + table(detail["errors"], ["step_seq", "step_id", "code", "message"]))
    print(f"\none step in full: flowengine logs {run['run_id']} --step N")


def _scores_text(scores: Any) -> str:
    """A decision's label scores, one label after another, calibrated ones named."""
    scores = parse_json(scores)
    if not isinstance(scores, dict):
        return human(scores)
    parts = []
    for label, score in scores.items():
        if isinstance(score, dict):
            figures = ", ".join(f"{name} {human(value)}" for name, value in score.items())
            parts.append(f"{label}: {figures};")
        else:
            parts.append(f"{label}: {human(score)};")
    return " ".join(parts).rstrip(";")


def _constraint(source: str | None, step: dict[str, Any]) -> Any:
    """What the step's replies were held to, as its agent file (the text the run read)
    says: a decision's branch labels, a reply's ``format``/``schema``/``pattern``; None
    for free text."""
    for request in step["llm_requests"]:
        scores = parse_json(request.get("label_scores"))
        if request["kind"] == "choose" and isinstance(scores, dict):
            return {"labels": list(scores)}
    if source is None:
        return None
    import yaml

    try:
        document = yaml.safe_load(source)
        written = document["steps"][step["step_id"]]
    except (yaml.YAMLError, KeyError, TypeError, IndexError):
        return None
    if not isinstance(written, dict):
        return None
    held = {key: written[key] for key in ("format", "schema", "pattern") if key in written}
    return held or None


def _print_step(run: dict[str, Any], step: dict[str, Any]) -> None:
    print(
        f"step {step['seq']} of run {run['run_id']} ({run['agent']}): {step['step_id']} "
        f"({step['kind']}), {human(step['duration_s'])} s"
    )
    for name in ("label", "tool", "next_step"):
        if step.get(name) is not None:
            print(f"{name.replace('_', ' ')}: {step[name]}")
    constraint = step.get("constraint")
    print(
        "constraint: "
        + (json.dumps(constraint, ensure_ascii=False) if constraint else "none (free text)")
    )
    for index, request in enumerate(step["llm_requests"], 1):
        heading = f"LLM request {index} of {len(step['llm_requests'])} ({request['kind']}"
        print(
            f"\n{heading}, {request['prompt_tokens']} prompt tokens, "
            f"{request['output_tokens']} generated, {human(request['turnaround_s'])} s)"
        )
        print("prompt:\n" + _indented(request["prompt"]))
        print("reply:\n" + _indented(request["response"]))
        if request.get("label_scores") is not None:
            print("label scores:")
            for label, score in (parse_json(request["label_scores"]) or {}).items():
                figures = (
                    ", ".join(f"{name} {human(v)}" for name, v in score.items())
                    if isinstance(score, dict)
                    else human(score)
                )
                print(f"  {label}: {figures}")
        if request.get("error"):
            print(f"error: {request['error']}")
    for call in step["tool_calls"]:
        outcome = "ok" if call["ok"] else f"failed: {call['error']}"
        print(f"\ntool call: {call['tool']} ({outcome}, {human(call['duration_s'])} s)")
        print("arguments:\n" + _indented(_pretty(call["args"])))
        if call["ok"]:
            print("result:\n" + _indented(_pretty(call["result"])))
    print("\nstep result:\n" + _indented(_pretty(step["result"])))
    for error in step["errors"]:
        print(f"error [{error['code']}]: {error['message']}")


def _pretty(value: Any) -> str:
    parsed = parse_json(value)
    if isinstance(parsed, str):
        return parsed
    return json.dumps(parsed, indent=2, ensure_ascii=False, default=json_default)


def _indented(text: Any) -> str:
    lines = ("" if text is None else str(text)).splitlines() or [""]
    return "\n".join("  " + line for line in lines)


@contextmanager
def _live_records(paths: list[Path], folder: Path) -> Iterator[tuple[Any, bool]]:
    """The records as they are now, and whether a live writer holds the file (then they
    are read through a copy of it)."""
    from flowengine.storage.reader import Records, copy_live
    from flowengine.storage.writer import FileLocked

    try:
        records, live = Records(paths), False
    except FileLocked:
        copies = []
        for index, path in enumerate(paths):
            copy = folder / f"copy{time.monotonic_ns()}-{index}.duckdb"
            copy_live(path, copy)
            copies.append(copy)
        records, live = Records(copies), True
    with records:
        yield records, live


def _follow(paths: list[Path], given: str, as_json: bool) -> int:
    """Print a run's steps as they are stored, one line each (or one JSON object a line),
    until the run is no longer running."""
    from flowengine.errors import StorageError
    from flowengine.storage.reader import signature

    shown = 0
    seen = ""
    header = False
    failures = 0
    with tempfile.TemporaryDirectory(prefix="flowengine-follow-") as folder:
        while True:
            now = "|".join(signature(path) for path in paths)
            if now != seen:
                try:
                    with _live_records(paths, Path(folder)) as (records, held):
                        try:
                            run_id = _run_id(records, given, ", ".join(map(str, paths)))
                        except UsageError:
                            if not held:
                                raise
                            run_id = None  # a live writer has not stored its run yet
                        run = records.run(run_id) if run_id else None
                        steps = records.steps(run_id) if run is not None else []
                except StorageError:
                    failures += 1  # the writer changed the file mid-copy: read it again
                    if failures >= FOLLOW_RETRIES:
                        raise
                    time.sleep(FOLLOW_POLL_S)
                    continue
                finally:
                    for old in Path(folder).glob("copy*"):
                        old.unlink(missing_ok=True)
                failures = 0
                seen = now
                if run is None:
                    if held:
                        time.sleep(FOLLOW_POLL_S)
                        continue
                    raise UsageError(f"no run {given!r}; `flowengine logs` lists the runs")
                given = run["run_id"]  # 'latest' is the newest run when following began
                if not header and not as_json:
                    print(f"following run {run['run_id']} ({run['agent']}); Ctrl-C stops")
                    header = True
                for step in steps[shown:]:
                    if as_json:
                        print(json.dumps(nested(step), default=json_default), flush=True)
                    else:
                        print(_step_line(step), flush=True)
                shown = max(shown, len(steps))
                if run["status"] != "running":
                    if not as_json:
                        print(f"run {run['run_id']}: {run['status']} after {run['steps']} steps")
                    return EXIT_OK
                if not held:  # running, yet no process holds the file: its writer died
                    print(
                        f"run {run['run_id']} is marked running but no flowengine process "
                        f"holds its file; continue it with `flowengine resume {run['run_id']}`",
                        file=sys.stderr,
                    )
                    return EXIT_ERRORS
            time.sleep(FOLLOW_POLL_S)


def _step_line(step: dict[str, Any]) -> str:
    what = step.get("label") or step.get("tool") or ""
    moved = f" → {step['next_step']}" if step.get("next_step") else ""
    result = " ".join(human(parse_json(step.get("result"))).split())
    if len(result) > 80:
        result = result[:79] + "…"
    return f"#{step['seq']} {step['step_id']} ({step['kind']}) {what}{moved}: {result}"


def cmd_stats(args: argparse.Namespace) -> int:
    from flowengine.storage.reader import Records

    with Records(db_paths(args)) as records:
        summary: dict[str, Any] = records.run_summary()
        summary["scheduler"] = records.stats()
    if args.format == "json":
        _print_json(summary)
        return EXIT_OK
    if not summary["runs"]:
        print("no runs stored yet", file=sys.stderr)
        return EXIT_OK
    statuses = list(dict.fromkeys(s for row in summary["runs"] for s in row["by_status"]))
    runs = [{**row, **row["by_status"]} for row in summary["runs"]]
    sections = [
        ("runs", runs, ["agent", "runs", *statuses, "success_rate"]),
        ("step latency (seconds)", summary["step_latency"], None),
        ("tokens per run", summary["tokens"], None),
        ("tool calls", summary["tool_errors"], None),
        ("scheduler (LLM requests)", summary["scheduler"], None),
    ]
    printed = False
    for title, rows, columns in sections:
        if rows:
            print(("\n" if printed else "") + title + "\n" + table(rows, columns or list(rows[0])))
            printed = True
    return EXIT_OK
