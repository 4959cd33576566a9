"""``logs`` and ``stats``: reading stored runs back from DuckDB."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from flowengine.cli.common import (
    EXIT_OK,
    FORMATTER,
    add_dbs_option,
    db_paths,
    json_default,
    table,
)
from flowengine.errors import UsageError


def add_parsers(commands: Any) -> None:
    formatter = FORMATTER
    logs = commands.add_parser(
        "logs",
        help="show stored runs, or one run's steps",
        description="Without RUN_ID: the latest runs, then the waiting ones with their "
        "questions. With RUN_ID: that run's steps, LLM "
        "requests (with decision label scores), tool calls and errors.",
        epilog="Examples:\n  flowengine logs\n  flowengine logs 3f2a9c1d5e7b --format json",
        formatter_class=formatter,
    )
    logs.add_argument("run_id", nargs="?", metavar="RUN_ID")
    logs.add_argument("--format", choices=("table", "json"), default="table")
    add_dbs_option(logs)
    logs.set_defaults(handler=cmd_logs)

    stats = commands.add_parser(
        "stats",
        help="waiting and turnaround per agent and scheduler",
        description="Scheduler statistics over all stored LLM requests: mean waiting and "
        "turnaround time, slices and preemptions, per agent and scheduler.",
        formatter_class=formatter,
    )
    stats.add_argument("--format", choices=("table", "json"), default="table")
    add_dbs_option(stats)
    stats.set_defaults(handler=cmd_stats)


def cmd_logs(args: argparse.Namespace) -> int:
    from flowengine.storage.reader import Records

    paths = db_paths(args)
    path = ", ".join(map(str, paths))
    with Records(paths) as records:
        if args.run_id is None:
            rows = records.runs()
            if args.format == "json":
                print(json.dumps(rows, indent=2, default=json_default))
            elif not rows:
                print(f"no runs stored in {path} yet", file=sys.stderr)
            else:
                print(table(rows, ["run_id", "agent", "status", "steps", "scheduler", "created"]))
                waiting = [row for row in rows if row["status"] == "waiting"]
                if waiting:
                    print("\nwaiting for an answer (flowengine resume RUN_ID --answer TEXT)")
                    print(table(waiting, ["run_id", "agent", "question"]))
            return EXIT_OK
        run = records.run(args.run_id)
        if run is None:
            raise UsageError(f"no run {args.run_id!r} in {path}; `flowengine logs` lists the runs")
        detail: dict[str, Any] = {
            "run": run,
            "steps": records.steps(args.run_id),
            "llm_requests": records.requests(args.run_id),
            "tool_calls": records.tool_calls(args.run_id),
            "errors": records.errors(args.run_id),
        }
    if args.format == "json":
        print(json.dumps(detail, indent=2, default=json_default, ensure_ascii=False))
        return EXIT_OK
    print(
        f"run {run['run_id']}: {run['agent']} {run['status']}, {run['steps']} steps "
        f"({run['backend']}, {run['scheduler']})"
    )
    if run["status"] == "waiting":
        print(f"waiting for an answer to: {run.get('question')}")
    print(
        "\nsteps\n" + table(detail["steps"], ["seq", "step_id", "kind", "label", "tool", "result"])
    )
    print(
        "\nLLM requests\n"
        + table(
            detail["llm_requests"],
            [
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
        print("\ntool calls\n" + table(detail["tool_calls"], ["step_id", "tool", "ok", "error"]))
    if detail["errors"]:
        print("\nerrors\n" + table(detail["errors"], ["step_id", "code", "message"]))
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    from flowengine.storage.reader import Records

    with Records(db_paths(args)) as records:
        rows = records.stats()
    if args.format == "json":
        print(json.dumps(rows, indent=2, default=json_default))
    elif not rows:
        print("no LLM requests stored yet", file=sys.stderr)
    else:
        print(table(rows, list(rows[0])))
    return EXIT_OK
