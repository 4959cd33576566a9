"""The ``run``, ``resume``, ``logs`` and ``stats`` commands (the model and DuckDB side of
the CLI, imported only when one of them is used)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowengine.runtime.interpreter import RunOutcome, StepEvent

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2
PREVIEW = 100


class UsageError(Exception):
    """Re-raised by the CLI as its own usage error."""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is too small; give 1 or more")
    return value


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and kernel")
    group.add_argument(
        "--backend",
        choices=("ctransformers", "scripted"),
        default="ctransformers",
        help="ctransformers: a local GGUF model (default: the embedded SmolLM2-135M); "
        "scripted: replies from --script FILE, for tests",
    )
    group.add_argument("--model", metavar="PATH", help="a GGUF model file for ctransformers")
    group.add_argument(
        "--script",
        metavar="FILE",
        help='for --backend scripted: {"default": ..., "rules": [{"contains": ..., "reply": ...}]}',
    )
    group.add_argument(
        "--replay", metavar="RUN_ID", help="answer with the replies recorded for this run"
    )
    group.add_argument(
        "--scheduler",
        choices=("fifo", "rr"),
        default="rr",
        help="fifo: each LLM request runs to its end; rr: round-robin slices (default)",
    )
    group.add_argument(
        "--quantum",
        type=_positive,
        default=16,
        metavar="N",
        help="rr slice length in generated tokens (default: 16)",
    )
    group.add_argument(
        "--pool",
        type=_positive,
        default=4,
        metavar="N",
        help="model contexts kept, each holding one request's KV cache (default: 4)",
    )
    group.add_argument(
        "--context-length",
        type=_positive,
        default=2048,
        metavar="N",
        help="the model's context window in tokens (default: 2048)",
    )
    group.add_argument(
        "--max-tokens",
        type=_positive,
        default=96,
        metavar="N",
        help="tokens an LLM step may generate (default: 96; JSON output gets at least 320)",
    )
    add_db_option(parser)


def add_db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        metavar="PATH",
        help="the DuckDB file runs are kept in (default: flowengine.duckdb in your user "
        "data folder)",
    )


def add_parsers(commands: Any) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    run = commands.add_parser(
        "run",
        help="run agents on the local model",
        description="Run one or more agents on the embedded local model (or --model). "
        "Each step is shown as it finishes; the final output is printed at the end. "
        "Several agents run at once through one kernel, sharing the model under the "
        "chosen scheduler. Everything is stored in DuckDB (see 'logs' and 'stats'). "
        "Exit status: 0 every run completed, 1 a run failed or hit a limit, 2 bad usage.",
        epilog="Examples:\n"
        '  flowengine run agents/travel_agent.yaml --input "Plan a 3-day trip from '
        'Seattle to California"\n'
        '  flowengine run agents/math_agent.yaml agents/rec_agent.yaml --input "..." '
        "--scheduler rr\n"
        '  flowengine run --batch jobs.jsonl --json     # one {"agent", "input"} per line',
        formatter_class=formatter,
    )
    run.add_argument("agents", nargs="*", metavar="AGENT.yaml", help="agent files to run")
    run.add_argument("--input", "-i", metavar="TEXT", help="the task, given to every agent")
    run.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a value for one of the agent's declared inputs (repeatable)",
    )
    run.add_argument(
        "--batch",
        metavar="FILE.jsonl",
        help='runs to start together, one {"agent": PATH, "input": TEXT} object a line',
    )
    run.add_argument("--json", action="store_true", help="print the outcomes as JSON")
    run.add_argument("--quiet", "-q", action="store_true", help="do not show steps as they run")
    add_model_options(run)
    run.set_defaults(handler=cmd_run)

    resume = commands.add_parser(
        "resume",
        help="continue a run whose process died",
        description="Continue a stored run from its last completed step, with the memory "
        "it had then. Runs that ended (completed, failed, or stopped by a limit) cannot be "
        "resumed.",
        epilog="Example:\n  flowengine resume 3f2a9c1d5e7b",
        formatter_class=formatter,
    )
    resume.add_argument("run_id", metavar="RUN_ID")
    resume.add_argument("--json", action="store_true", help="print the outcome as JSON")
    resume.add_argument("--quiet", "-q", action="store_true", help="do not show steps")
    add_model_options(resume)
    resume.set_defaults(handler=cmd_resume)

    logs = commands.add_parser(
        "logs",
        help="show stored runs, or one run's steps",
        description="Without RUN_ID: the latest runs. With RUN_ID: that run's steps, LLM "
        "requests (with decision label scores), tool calls and errors.",
        epilog="Examples:\n  flowengine logs\n  flowengine logs 3f2a9c1d5e7b --format json",
        formatter_class=formatter,
    )
    logs.add_argument("run_id", nargs="?", metavar="RUN_ID")
    logs.add_argument("--format", choices=("table", "json"), default="table")
    add_db_option(logs)
    logs.set_defaults(handler=cmd_logs)

    stats = commands.add_parser(
        "stats",
        help="waiting and turnaround per agent and scheduler",
        description="Scheduler statistics over all stored LLM requests: mean waiting and "
        "turnaround time, slices and preemptions, per agent and scheduler.",
        formatter_class=formatter,
    )
    stats.add_argument("--format", choices=("table", "json"), default="table")
    add_db_option(stats)
    stats.set_defaults(handler=cmd_stats)


def db_path(args: argparse.Namespace) -> Path:
    if args.db:
        path = Path(args.db)
        if path.is_dir():
            raise UsageError(f"--db {args.db} is a folder; give a file")
        return path
    from flowengine.runtime.session import default_db

    return default_db()


def _session_config(args: argparse.Namespace) -> Any:
    from flowengine.kernel.scheduler import SchedulerConfig
    from flowengine.runtime.session import SessionConfig

    if args.backend == "scripted" and not (args.script or args.replay):
        raise UsageError("--backend scripted needs --script FILE or --replay RUN_ID")
    if args.script and args.backend != "scripted":
        raise UsageError("--script goes with --backend scripted")
    if args.model and args.backend != "ctransformers":
        raise UsageError("--model goes with --backend ctransformers")
    for flag in ("model", "script"):
        value = getattr(args, flag)
        if value and not Path(value).is_file():
            raise UsageError(f"--{flag} {value}: no such file")
    return SessionConfig(
        db=db_path(args),
        backend=args.backend,
        model=Path(args.model) if args.model else None,
        script=Path(args.script) if args.script else None,
        replay=args.replay,
        scheduler=SchedulerConfig(args.scheduler, args.quantum),
        pool_size=args.pool,
        context_length=args.context_length,
    )


def _jobs(args: argparse.Namespace) -> list[tuple[str, str]]:
    jobs = [(agent, args.input) for agent in args.agents]
    if args.agents and args.input is None:
        raise UsageError("give the task with --input TEXT")
    if args.batch:
        path = Path(args.batch)
        if not path.is_file():
            raise UsageError(f"--batch {args.batch}: no such file")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(
                    f"{args.batch}:{number}:{exc.colno}: not JSON ({exc.msg}); write "
                    '{"agent": "agents/x.yaml", "input": "..."} on each line'
                ) from None
            if not isinstance(item, dict) or not isinstance(item.get("agent"), str):
                raise UsageError(f'{args.batch}:{number}:1: each line needs "agent": PATH')
            task = item.get("input", args.input)
            if not isinstance(task, str):
                raise UsageError(f'{args.batch}:{number}:1: "input" must be text')
            jobs.append((item["agent"], task))
    if not jobs:
        raise UsageError("name at least one AGENT.yaml, or give --batch FILE.jsonl")
    for agent, _ in jobs:
        if not Path(agent).is_file():
            raise UsageError(f"no such file: {agent}")
    return jobs


def _variables(pairs: list[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--var {pair}: write NAME=VALUE")
        values[name] = value
    return values


def _show_step(event: StepEvent) -> None:
    if event.kind == "decision":
        what = f"→ {event.label}"
    elif event.kind == "terminal":
        what = "done"
    else:
        result = event.result
        text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)
        text = " ".join(text.split())
        if len(text) > PREVIEW:
            text = text[: PREVIEW - 1] + "…"
        what = (f"[{event.tool}] " if event.tool else "") + text
    print(f"{event.agent} {event.run_id} #{event.seq} {event.step_id}: {what}", flush=True)


def _report(outcomes: list[RunOutcome], as_json: bool) -> int:
    if as_json:
        print(json.dumps([o.as_dict() for o in outcomes], indent=2, ensure_ascii=False))
    else:
        for outcome in outcomes:
            print(
                f"\n== {outcome.agent} (run {outcome.run_id}): {outcome.status} after "
                f"{outcome.steps} step{'s' * (outcome.steps != 1)}"
            )
            if outcome.error:
                print(f"flowengine run: {outcome.error}", file=sys.stderr)
            if outcome.output is not None:
                output = outcome.output
                text = output if isinstance(output, str) else json.dumps(output, indent=2)
                print(text, flush=True)
            if outcome.output_errors:
                print(
                    f"flowengine run: warning: run {outcome.run_id}'s output does not match "
                    "the terminal step's format:",
                    file=sys.stderr,
                )
                for message in outcome.output_errors:
                    print(f"  {message}", file=sys.stderr)
    return EXIT_OK if all(o.status == "completed" for o in outcomes) else EXIT_ERRORS


def cmd_run(args: argparse.Namespace) -> int:
    from flowengine.runtime.interpreter import Checkpoint, RunSetup
    from flowengine.runtime.launch import check_inputs, load_agent
    from flowengine.runtime.session import Session

    jobs = _jobs(args)
    variables = _variables(args.var)
    config = _session_config(args)
    setups: list[tuple[RunSetup, Checkpoint | None]] = []
    for path, task in jobs:
        agent, source = load_agent(path)
        inputs = check_inputs(agent, variables)
        setups.append((RunSetup(agent, source, task, inputs, max_tokens=args.max_tokens), None))
    with Session(config) as session:
        if not args.quiet and not args.json:
            model = session.backend.model_name
            print(
                f"running {len(setups)} run{'s' * (len(setups) != 1)} on {model} "
                f"({config.scheduler.policy}), storing in {config.db}",
                flush=True,
            )
        outcomes = session.run_all(setups, None if args.quiet or args.json else _show_step)
    return _report(outcomes, args.json)


def cmd_resume(args: argparse.Namespace) -> int:
    from flowengine.runtime.launch import resume_setup
    from flowengine.runtime.session import Session

    config = _session_config(args)
    if not config.db.exists():
        raise UsageError(f"--db {config.db}: no such database")
    with Session(config) as session:
        setup, checkpoint, status = resume_setup(session.storage, args.run_id)
        setup.max_tokens = args.max_tokens if args.max_tokens != 96 else setup.max_tokens
        if not args.quiet and not args.json:
            print(
                f"resuming {setup.agent.name} run {setup.run_id} (was {status}) after step "
                f"#{checkpoint.seq}",
                flush=True,
            )
        outcomes = session.run_all(
            [(setup, checkpoint)], None if args.quiet or args.json else _show_step
        )
    return _report(outcomes, args.json)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, datetime):
            return value.strftime("%Y-%m-%d %H:%M:%S")
        text = "" if value is None else str(value)
        text = " ".join(text.split())
        return text if len(text) <= 60 else text[:59] + "…"

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _json_default(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def cmd_logs(args: argparse.Namespace) -> int:
    from flowengine.kernel.records import Records

    path = db_path(args)
    with Records(path) as records:
        if args.run_id is None:
            rows = records.runs()
            if args.format == "json":
                print(json.dumps(rows, indent=2, default=_json_default))
            elif not rows:
                print(f"no runs stored in {path} yet", file=sys.stderr)
            else:
                print(_table(rows, ["run_id", "agent", "status", "steps", "scheduler", "created"]))
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
        print(json.dumps(detail, indent=2, default=_json_default, ensure_ascii=False))
        return EXIT_OK
    print(
        f"run {run['run_id']}: {run['agent']} {run['status']}, {run['steps']} steps "
        f"({run['backend']}, {run['scheduler']})"
    )
    print(
        "\nsteps\n" + _table(detail["steps"], ["seq", "step_id", "kind", "label", "tool", "result"])
    )
    print(
        "\nLLM requests\n"
        + _table(
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
        print("\ntool calls\n" + _table(detail["tool_calls"], ["step_id", "tool", "ok", "error"]))
    if detail["errors"]:
        print("\nerrors\n" + _table(detail["errors"], ["step_id", "code", "message"]))
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    from flowengine.kernel.records import Records

    with Records(db_path(args)) as records:
        rows = records.stats()
    if args.format == "json":
        print(json.dumps(rows, indent=2, default=_json_default))
    elif not rows:
        print("no LLM requests stored yet", file=sys.stderr)
    else:
        print(_table(rows, list(rows[0])))
    return EXIT_OK
