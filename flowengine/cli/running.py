"""``run`` and ``resume``: agents on a model through the kernel, stored in DuckDB.

The model runtime and DuckDB are imported only when a command runs, not to build --help.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowengine.cli.common import (
    EXIT_ERRORS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_WAITING,
    FORMATTER,
    JSON_ALIAS,
    JsonFormat,
    add_db_option,
    db_path,
    positive,
)
from flowengine.errors import RunError, UsageError
from flowengine.kernel import defaults
from flowengine.kernel.backends.registry import DEFAULT as DEFAULT_BACKEND
from flowengine.kernel.backends.registry import available_backends
from flowengine.steps.registry import kind_of

if TYPE_CHECKING:
    from flowengine.agentfile.diagnostics import Diagnostic
    from flowengine.runtime.interpreter import Checkpoint, RunOutcome, RunSetup, StepEvent
    from flowengine.runtime.session import Session

PREVIEW = 100
_OUTPUT = threading.Lock()


def add_model_options(parser: argparse.ArgumentParser, with_backends: bool = True) -> None:
    """The kernel's options, then each backend's own in a group of its own.

    ``with_backends`` False leaves the backends' options out: finding them imports every
    backend module (numpy among them), which the commands that never run a model
    (``validate``, ``viz``...) must not pay for at start.
    """
    group = parser.add_argument_group("model and kernel")
    backends = available_backends() if with_backends else {}
    group.add_argument(
        "--backend",
        default=DEFAULT_BACKEND,
        metavar="NAME",
        help="the model runtime: "
        + "; ".join(f"{name}: {plugin.help}" for name, plugin in backends.items())
        + f" (default: {DEFAULT_BACKEND}; plugins add more)",
    )
    group.add_argument(
        "--model",
        metavar="PATH|NAME",
        help="a GGUF model file, or for a server the model name it is asked for (default: "
        "the embedded SmolLM2-135M, or for openai $FLOWENGINE_MODEL or the config file)",
    )
    for name, plugin in backends.items():
        if not plugin.options:
            continue
        own = parser.add_argument_group(f"--backend {name}")
        for option in plugin.options:
            if option.flag in _flags(parser):
                continue  # shared with an earlier backend, with the same meaning
            own.add_argument(
                option.flag,
                type=_OPTION_TYPES[option.kind],
                default=None,
                metavar=option.metavar,
                help=option.help,
            )
    group.add_argument(
        "--replay", metavar="RUN_ID", help="answer with the replies recorded for this run"
    )
    group.add_argument(
        "--scheduler",
        choices=("fifo", "rr"),
        default=defaults.SCHEDULER,
        help="fifo: each LLM request runs to its end; rr: round-robin slices (default)",
    )
    group.add_argument(
        "--quantum",
        type=positive,
        default=defaults.QUANTUM,
        metavar="N",
        help="rr slice length in generated tokens (default: %(default)s)",
    )
    group.add_argument(
        "--pool",
        type=positive,
        default=None,
        metavar="N",
        help=f"KV caches kept, each holding one request's or run's cache (default: "
        f"{defaults.POOL_SIZE}); llama-cpp: sequences kept in its one context (default: "
        "twice --max-batch, at least --max-batch)",
    )
    group.add_argument(
        "--context-length",
        type=positive,
        default=defaults.CONTEXT_LENGTH,
        metavar="N",
        help="the model's context window in tokens (default: %(default)s)",
    )
    group.add_argument(
        "--max-tokens",
        type=positive,
        default=None,
        metavar="N",
        help=f"tokens an LLM step may generate (default: {defaults.MAX_TOKENS}, or what the "
        f"resumed run used; JSON output gets at least {defaults.JSON_MAX_TOKENS})",
    )
    group.add_argument(
        "--threads",
        type=_threads,
        default=None,
        metavar="N|auto",
        help="threads the model computes with (default: auto: every core, less those other "
        "processes keep busy; a fixed count collapses when the machine is loaded)",
    )
    group.add_argument(
        "--no-prefix-reuse",
        dest="reuse_prefix",
        action="store_false",
        help="start every LLM request from an empty KV cache instead of the run's own "
        "(slower; for measuring what reuse saves)",
    )
    add_db_option(parser)


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: give more than 0 seconds")
    return value


def _text(text: str) -> str:
    return text


_OPTION_TYPES = {"text": _text, "count": positive, "seconds": _seconds, "file": _text}
"""How each kind of backend option is read from the command line."""


def _threads(text: str) -> int | None:
    from flowengine.kernel.threads import parse_threads

    try:
        return parse_threads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a whole number of 1 or more, or auto"
        ) from None


def add_parsers(commands: Any, with_backends: bool = True) -> None:
    """``run`` and ``resume``; ``with_backends``: see :func:`add_model_options`."""
    formatter = FORMATTER
    run = commands.add_parser(
        "run",
        help="run agents on the local model",
        description="Run one or more agents on the embedded local model (or --model). "
        "Each step is shown as it finishes; the final output is printed at the end. "
        "Several agents run at once through one kernel, sharing the model under the "
        "chosen scheduler. Everything is stored in DuckDB (see 'logs' and 'stats'). "
        "A run that reaches an input step stops with status 'waiting' and its question "
        "(on a terminal, run asks it instead); `flowengine resume RUN_ID --answer TEXT` "
        "goes on. validate's warnings are printed first. Exit status: 0 every run "
        "completed, 1 a run failed, hit a limit or ended with an output its schema refuses, "
        "2 bad usage, 3 no run failed and one or more wait for an answer, 130 Ctrl-C (the "
        "first stops each run after its step, resumable; a second quits at once).",
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
    run.add_argument(
        "--format", choices=("text", "json"), action=JsonFormat, dest="json", help=JSON_ALIAS
    )
    run.add_argument("--quiet", "-q", action="store_true", help="do not show steps as they run")
    run.add_argument(
        "--no-ask",
        dest="ask",
        action="store_false",
        help="on a terminal too, leave a run that reaches an input step waiting instead of "
        "asking its question here",
    )
    add_model_options(run, with_backends)
    run.set_defaults(handler=cmd_run)

    resume = commands.add_parser(
        "resume",
        help="continue a run whose process died, or answer a waiting run",
        description="Continue a stored run from its last completed step, with the memory "
        "it had then. Runs that ended (completed, failed, or stopped by a limit) cannot be "
        "resumed. A run waiting at an input step needs its answer (--answer TEXT, or "
        "--answer-file FILE holding JSON), checked against the step's schema; once the "
        "step's timeout has passed, a resume without an answer takes the step's default. "
        "A refused answer writes nothing and the run keeps waiting. Exit status as for run.",
        epilog="Examples:\n  flowengine resume 3f2a9c1d5e7b\n"
        "  flowengine resume 3f2a9c1d5e7b --answer yes\n"
        "  flowengine resume 3f2a9c1d5e7b --answer-file answer.json",
        formatter_class=formatter,
    )
    resume.add_argument("run_id", metavar="RUN_ID")
    answer = resume.add_mutually_exclusive_group()
    answer.add_argument(
        "--answer", metavar="TEXT", help="the answer to the question the run waits on"
    )
    answer.add_argument(
        "--answer-file",
        metavar="FILE",
        help="the answer as JSON in a file (for a step with a schema: a structured answer)",
    )
    resume.add_argument("--json", action="store_true", help="print the outcome as JSON")
    resume.add_argument(
        "--format", choices=("text", "json"), action=JsonFormat, dest="json", help=JSON_ALIAS
    )
    resume.add_argument("--quiet", "-q", action="store_true", help="do not show steps")
    add_model_options(resume, with_backends)
    resume.set_defaults(handler=cmd_resume)


def _session_config(args: argparse.Namespace) -> Any:
    from flowengine.kernel.scheduler import SchedulerConfig
    from flowengine.runtime.session import SessionConfig

    backends = available_backends()
    plugin = backends.get(args.backend)
    if plugin is None:
        raise UsageError(
            f"--backend {args.backend}: no such backend; the backends here are: "
            f"{', '.join(backends)} (flowengine run --help describes them)"
        )
    options = {}
    for other in backends.values():
        for option in other.options:
            value = getattr(args, option.dest, None)
            if value is None:
                continue
            if option not in plugin.options:
                owners = [n for n, b in backends.items() if option in b.options]
                raise UsageError(f"{option.flag} goes with --backend {' or '.join(owners)}")
            if option.kind == "file" and not Path(value).is_file():
                raise UsageError(f"{option.flag} {value}: no such file")
            options[option.dest] = value
    if args.replay is None:
        for option in plugin.options:
            if option.required and option.dest not in options:
                raise UsageError(
                    f"--backend {plugin.name} needs {option.flag} {option.metavar} "
                    "or --replay RUN_ID"
                )
    if args.model and plugin.model is None:
        takes = [n for n, b in backends.items() if b.model is not None]
        raise UsageError(f"--model goes with --backend {', '.join(takes)}")
    if args.model and plugin.model == "file" and not Path(args.model).is_file():
        raise UsageError(f"--model {args.model}: no such file")
    return SessionConfig(
        db=db_path(args),
        backend=args.backend,
        model=args.model,
        options=options,
        replay=args.replay,
        scheduler=SchedulerConfig(args.scheduler, args.quantum),
        pool_size=args.pool,
        context_length=args.context_length,
        threads=args.threads,
        reuse_prefix=args.reuse_prefix,
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
    kind = kind_of(event.kind)
    shown = kind.show(event.label, event.result) if kind else None
    if shown is not None:
        what = shown
    else:
        result = event.result
        text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)
        text = " ".join(text.split())
        if len(text) > PREVIEW:
            text = text[: PREVIEW - 1] + "…"
        what = (f"[{event.tool}] " if event.tool else "") + text
    line = f"{event.agent} {event.run_id} #{event.seq} {event.step_id}: {what}\n"
    # Runs report from their own threads: one write per line, under a lock, so that two
    # runs' lines never interleave (print writes the text and the newline apart).
    with _OUTPUT:
        sys.stdout.write(line)
        sys.stdout.flush()


def _run_all(
    session: Session, runs: list[tuple[RunSetup, Checkpoint | None]], show: Any
) -> list[RunOutcome]:
    """``session.run_all``, saying what a Ctrl-C does; a second one quits at once."""
    from flowengine.runtime.session import Abandoned

    def stopping() -> None:
        with _OUTPUT:
            sys.stderr.write(
                "\nflowengine: Ctrl-C: each run stops after the step it is in and can be "
                "resumed; Ctrl-C again quits at once\n"
            )
            sys.stderr.flush()

    try:
        return session.run_all(runs, show, stopping)
    except Abandoned as quit_now:
        quit_now.record()
        lines = [
            f"\nflowengine: second Ctrl-C: quit with {len(quit_now.run_ids)} "
            f"run{'s' * (len(quit_now.run_ids) != 1)} in the middle of a step; each goes on "
            "from its last stored step with:"
        ]
        lines += [f"  flowengine resume {run_id}" for run_id in quit_now.run_ids]
        with _OUTPUT:
            sys.stdout.flush()
            sys.stderr.write("\n".join(lines) + "\n")
            sys.stderr.flush()
            # At once: the steps under way may be inside the model, which cannot be
            # stopped. Every finished step is already durable (the journal), so this is
            # the crash `resume` is made for.
            os._exit(EXIT_INTERRUPTED)


def _report(outcomes: list[RunOutcome], as_json: bool, interrupted: bool = False) -> int:
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
                    f"flowengine run: run {outcome.run_id}'s output does not match "
                    "the terminal step's format:",
                    file=sys.stderr,
                )
                for message in outcome.output_errors:
                    print(f"  {message}", file=sys.stderr)
            if outcome.status == "waiting":
                print(
                    f"flowengine run: run {outcome.run_id} waits at step "
                    f"'{outcome.waiting_step}' for an answer: {outcome.question}\n"
                    f"  answer with: flowengine resume {outcome.run_id} --answer TEXT",
                    file=sys.stderr,
                )
    stopped = [o for o in outcomes if o.status == "interrupted"]
    if interrupted:
        # Every run is accounted for: the ones Ctrl-C stopped, each with its command.
        waiting = sum(o.status == "waiting" for o in outcomes)
        ended = len(outcomes) - len(stopped) - waiting
        asking = f", {waiting} wait{'s' * (waiting == 1)} for an answer" if waiting else ""
        lines = [
            f"flowengine: Ctrl-C stopped {len(stopped)} of {len(outcomes)} "
            f"run{'s' * (len(outcomes) != 1)} ({ended} had ended{asking})"
            + (f"; resume {'each' if len(stopped) > 1 else 'it'} with:" if stopped else "")
        ]
        lines += [f"  flowengine resume {o.run_id}" for o in stopped]
        print("\n".join(lines), file=sys.stderr)
        return EXIT_INTERRUPTED
    statuses = {o.status for o in outcomes}
    if statuses <= {"completed"}:
        return EXIT_OK
    return EXIT_WAITING if statuses <= {"completed", "waiting"} else EXIT_ERRORS


def _ask_on_terminal(session: Session, outcomes: list[RunOutcome], show: Any) -> list[RunOutcome]:
    """Ask each waiting run's question here, and go on with the answer, until the runs
    end or the person gives no answer (end of input leaves the run waiting)."""
    from flowengine.runtime.prepare import resume_setup, with_answer

    done: list[RunOutcome] = []
    for index, outcome in enumerate(outcomes):
        while outcome.status == "waiting":
            print(f"\n{outcome.agent} {outcome.run_id} asks: {outcome.question}", flush=True)
            # Not input(): on a terminal it may write its prompt to stderr.
            print("answer> ", end="", flush=True)
            try:
                line = sys.stdin.readline()
            except KeyboardInterrupt:  # Ctrl-C at the question: this run and the rest wait
                print(flush=True)
                session.interrupted = True
                return [*done, *outcomes[index:]]
            if not line:  # end of input: the run keeps waiting
                print(flush=True)
                break
            text = line.removesuffix("\n")
            setup, checkpoint, status = resume_setup(session.storage, outcome.run_id)
            try:
                checkpoint = with_answer(session.storage, setup, checkpoint, status, (text, False))
            except RunError as exc:
                print(f"flowengine run: {exc.message}", file=sys.stderr, flush=True)
                continue
            [outcome] = _run_all(session, [(setup, checkpoint)], show)
            if session.interrupted:  # the others are left as they are, each reported
                return [*done, outcome, *outcomes[index + 1 :]]
        done.append(outcome)
    return done


def cmd_run(args: argparse.Namespace) -> int:
    from flowengine.runtime.interpreter import RunSetup
    from flowengine.runtime.prepare import check_inputs, runnable_agent
    from flowengine.runtime.session import Session

    jobs = _jobs(args)
    variables = _variables(args.var)
    config = _session_config(args)
    setups: list[tuple[RunSetup, Checkpoint | None]] = []
    warned: set[str] = set()
    for path, task in jobs:
        warnings: list[Diagnostic] = []
        agent, source = runnable_agent(path, warnings)
        if path not in warned:
            # What validate would say, before the run starts: a warning may explain it.
            for warning in warnings:
                print(warning.format(), file=sys.stderr)
            warned.add(path)
        inputs = check_inputs(agent, variables)
        setup = RunSetup(agent, source, task, inputs)
        if args.max_tokens is not None:
            setup.max_tokens = args.max_tokens
        setups.append((setup, None))
    with Session(config) as session:
        if not args.quiet and not args.json:
            model = session.backend.model_name
            print(
                f"running {len(setups)} run{'s' * (len(setups) != 1)} on {model} "
                f"({config.scheduler.policy}), storing in {config.db}",
                flush=True,
            )
        show = None if args.quiet or args.json else _show_step
        outcomes = _run_all(session, setups, show)
        if args.ask and not args.json and sys.stdin.isatty() and not session.interrupted:
            outcomes = _ask_on_terminal(session, outcomes, show)
    return _report(outcomes, args.json, session.interrupted)


def cmd_resume(args: argparse.Namespace) -> int:
    from flowengine.runtime.prepare import resume_setup, with_answer
    from flowengine.runtime.session import Session
    from flowengine.storage.writer import Storage

    config = _session_config(args)
    if not config.db.exists():
        raise UsageError(f"--db {config.db}: no such database")
    answer = _answer(args)
    storage = Storage(config.db)
    try:
        # The run and its answer are checked before the backend opens: a refused answer
        # costs no model load (about 1 s on the embedded model).
        setup, checkpoint, status = resume_setup(storage, args.run_id)
        checkpoint = with_answer(storage, setup, checkpoint, status, answer)
    except BaseException:
        storage.close()
        raise
    with Session(config, storage) as session:
        if args.max_tokens is not None:
            setup.max_tokens = args.max_tokens
        if not args.quiet and not args.json:
            print(
                f"resuming {setup.agent.name} run {setup.run_id} (was {status}) after step "
                f"#{checkpoint.seq}",
                flush=True,
            )
        outcomes = _run_all(
            session, [(setup, checkpoint)], None if args.quiet or args.json else _show_step
        )
    return _report(outcomes, args.json, session.interrupted)


def _answer(args: argparse.Namespace) -> tuple[str, bool] | None:
    """``--answer TEXT`` or the text of ``--answer-file FILE``, and which it was."""
    if args.answer is not None:
        return args.answer, False
    if args.answer_file is None:
        return None
    from flowengine.agentfile.answers import MAX_ANSWER_BYTES

    path = Path(args.answer_file)
    if not path.is_file():
        raise UsageError(f"--answer-file {args.answer_file}: no such file")
    if path.stat().st_size > MAX_ANSWER_BYTES:
        raise UsageError(
            f"--answer-file {args.answer_file}: the answer is too large "
            f"({path.stat().st_size} bytes; at most {MAX_ANSWER_BYTES}); the run keeps waiting"
        )
    try:
        return path.read_text(encoding="utf-8"), True
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--answer-file {args.answer_file}: cannot read it ({exc})") from None
