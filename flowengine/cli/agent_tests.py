"""``test``: agents' test files (``*.test.yaml``) run with pytest-like output; ``test
record RUN_ID`` writes a case from a stored run; ``test step AGENT STEP`` runs one step.

Exit status: 0 every case passed, 1 a case failed (or a test file has errors), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from flowengine.cli.common import EXIT_ERRORS, EXIT_OK, FORMATTER, positive, write_file
from flowengine.errors import UsageError

SUBCOMMANDS = ("record", "step")


def add_parsers(commands: Any, with_backends: bool = True) -> None:
    from flowengine.cli.running import add_model_options

    test = commands.add_parser(
        "test",
        help="run agents' test files (*.test.yaml), record a case, or test one step",
        description="Run the cases of test files (*.test.yaml, found under folders): each "
        "case runs its agent with the model replies and tool results it mocks (other steps "
        "use the real backend, opened only when a case needs it) and checks its "
        "expectations; a failure shows expected against actual at the expectation's "
        "file:line. Each attempt is stored in the table test_cases, with the runs it made.\n\n"
        "  flowengine test record RUN_ID -o FILE   write a case from a stored run\n"
        "  flowengine test step AGENT STEP --state JSON   run one step and show it\n\n"
        "Exit status: 0 every case passed, 1 a case failed or a test file has errors, "
        "2 bad usage.",
        epilog="Examples:\n"
        "  flowengine test agents/\n"
        "  flowengine test agents/math_agent.test.yaml -k multiplies --repeat 5\n"
        "  flowengine test agents/ --junit-xml out/agent-tests.xml\n"
        "  flowengine test record 3f2a9c1d5e7b -o agents/regression.test.yaml\n"
        "  flowengine test step agents/math_agent.yaml 'Step 2' --state '{\"x\": 1}' "
        "--reply '6 * 7'",
        formatter_class=FORMATTER,
    )
    test.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="test files or folders (default: .); or 'record RUN_ID', or 'step AGENT STEP'",
    )
    test.add_argument(
        "-k",
        dest="keyword",
        metavar="TEXT",
        help="only cases whose FILE::NAME contains TEXT (any case); 'not TEXT' for the others",
    )
    test.add_argument(
        "--repeat",
        type=positive,
        default=1,
        metavar="N",
        help="run each case N times; reports pass@1 (the share that passed) and pass^N "
        "(all N passed) per case",
    )
    test.add_argument("--junit-xml", metavar="FILE", help="also write a JUnit XML report")
    test.add_argument("-v", "--verbose", action="store_true", help="a line per case")
    test.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="run the cases on two sides and compare them; each a backend name, a .gguf "
        "model file, another version of the agent file, or a git revision of it",
    )
    record = test.add_argument_group("test record RUN_ID")
    record.add_argument(
        "-o", "--output", metavar="FILE", help="the test file to write (default: print it)"
    )
    record.add_argument("--name", metavar="TEXT", help="the recorded case's name")
    one = test.add_argument_group("test step AGENT STEP")
    one.add_argument(
        "--state", metavar="JSON", default="{}", help="the variables the step sees, a JSON object"
    )
    one.add_argument("--input", "-i", metavar="TEXT", default="", help="the task")
    one.add_argument("--reply", metavar="TEXT", help="mock the model's reply")
    one.add_argument("--tool-result", metavar="JSON", help="mock the tool's result")
    one.add_argument("--tool-error", metavar="TEXT", help="mock the tool failing")
    one.add_argument("--answer", metavar="TEXT", help="an input step's answer")
    one.add_argument("--json", action="store_true", help="print the step as JSON")
    add_model_options(test, with_backends)
    test.set_defaults(handler=cmd_test)


def cmd_test(args: argparse.Namespace) -> int:
    if args.paths and args.paths[0] == "record":
        return _record(args)
    if args.paths and args.paths[0] == "step":
        return _step(args)
    return _run_tests(args)


def _config(args: argparse.Namespace) -> tuple[Any, bool]:
    """The session config from the run options, and whether there is no model at all
    (``--backend scripted`` without ``--script``: every reply must be mocked)."""
    from flowengine.cli.running import _session_config

    if args.backend == "scripted" and getattr(args, "script", None) is None and not args.replay:
        from flowengine.cli.common import db_path
        from flowengine.kernel.scheduler import SchedulerConfig
        from flowengine.runtime.session import SessionConfig

        return (
            SessionConfig(
                db=db_path(args),
                backend="scripted",
                scheduler=SchedulerConfig(args.scheduler, args.quantum),
                context_length=args.context_length,
            ),
            True,
        )
    return _session_config(args), False


def _run_tests(args: argparse.Namespace) -> int:
    from flowengine.testing.spec import find_test_files, load_test_file
    from flowengine.testing.suite import junit_xml, select

    started = time.perf_counter()
    files, missing = find_test_files(args.paths or ["."])
    if missing:
        raise UsageError(f"no such file or folder: {missing[0]}")
    if not files:
        raise UsageError(f"no test files (*.test.yaml) in {' '.join(args.paths or ['.'])}")
    tests = []
    broken = 0
    problems: dict[str, list[str]] = {}
    for path in files:
        loaded = load_test_file(path)
        for diagnostic in loaded.diagnostics:
            print(diagnostic.format(), file=sys.stderr)
            problems.setdefault(str(path), []).append(diagnostic.format())
        broken += bool(loaded.diagnostics)
        if loaded.test is not None:
            tests.append(loaded.test)
    selected = select(tests, args.keyword)
    if tests and not selected:
        raise UsageError(f"-k {args.keyword}: no case matches (see the names with -v)")
    if args.compare:
        return _compare(args, selected, broken)
    config, only_mocks = _config(args)
    summaries = _run_selected(args, config, only_mocks, selected, len(tests))
    seconds = time.perf_counter() - started
    failed = [s for s in summaries if not s.pass_all]
    _print_failures(failed)
    if args.repeat > 1 and summaries:
        _print_repeats(summaries, args.repeat)
    if args.junit_xml:
        write_file(Path(args.junit_xml), junit_xml(summaries, seconds, problems))
    parts = []
    if failed:
        parts.append(f"{len(failed)} failed")
    parts.append(f"{len(summaries) - len(failed)} passed")
    if len(summaries) < sum(len(t.cases) for t in tests):
        parts.append(f"{sum(len(t.cases) for t in tests) - len(summaries)} deselected")
    if broken:
        parts.append(f"{broken} file{'s' * (broken != 1)} with errors")
    print(f"== {', '.join(parts)} in {seconds:.2f} s ==")
    return EXIT_ERRORS if failed or broken else EXIT_OK


def _run_selected(
    args: argparse.Namespace,
    config: Any,
    only_mocks: bool,
    selected: list[Any],
    files: int,
    label: str = "",
) -> list[Any]:
    """Run every selected case ``--repeat`` times on one session, printing as pytest does."""
    from flowengine.testing.suite import CaseSummary, TestSession

    summaries = [CaseSummary(s) for s in selected]
    if not selected:
        return summaries
    needs_model = any(s.case.unmocked for s in selected)
    with TestSession(config, needs_model, only_mocks) as session:
        print(
            f"{label}{len(selected)} case{'s' * (len(selected) != 1)} from {files} "
            f"file{'s' * (files != 1)} on {session.model_name}"
            + (f", {args.repeat} times each" if args.repeat > 1 else "")
            + f", storing in {config.db}",
            flush=True,
        )
        current = None
        for summary in summaries:
            file = str(summary.selected.test.path)
            if not args.verbose and file != current:
                if current is not None:
                    print(flush=True)
                print(f"{file} ", end="", flush=True)
                current = file
            for attempt in range(1, args.repeat + 1):
                result = session.run(summary.selected, attempt, args.max_tokens)
                summary.results.append(result)
                if args.verbose:
                    mark = "PASSED" if result.passed else "FAILED"
                    tries = f" [{attempt}]" if args.repeat > 1 else ""
                    print(f"{summary.selected.id}{tries} {mark} ({result.duration:.2f} s)")
                else:
                    print("." if result.passed else "F", end="", flush=True)
        if not args.verbose:
            print(flush=True)
    return summaries


def _compare(args: argparse.Namespace, selected: list[Any], broken: int) -> int:
    """The same cases on two sides: per case pass/fail, tokens, seconds and the output's
    diff, then each side's pass rate. Exit 0 when every case passed on both sides."""
    from flowengine.kernel.backends.registry import available_backends
    from flowengine.testing.compare import output_diff, parse_side, with_agent
    from flowengine.testing.suite import Selected

    names = list(available_backends())
    sides = [parse_side(text, names) for text in args.compare]
    runs = []
    given = args.backend, args.model
    for index, side in enumerate(sides):
        args.backend = side.backend or given[0]
        args.model = side.model or given[1]
        config, only_mocks = _config(args)
        chosen = [Selected(with_agent(s.test, side), s.case) for s in selected]
        files = len({s.test.path for s in chosen})
        label = f"[{'AB'[index]}: {side.label}] "
        runs.append(_run_selected(args, config, only_mocks, chosen, files, label))
    a_runs, b_runs = runs
    print(f"\n{'case':<44} {'A':>5} {'B':>5} {'tokens A/B':>11} {'seconds A/B':>12}")
    for a, b in zip(a_runs, b_runs, strict=True):
        tokens = f"{_mean(a, 'tokens'):.0f}/{_mean(b, 'tokens'):.0f}"
        seconds = f"{_mean(a, 'seconds'):.2f}/{_mean(b, 'seconds'):.2f}"
        name = a.selected.id if len(a.selected.id) <= 44 else "…" + a.selected.id[-43:]
        print(f"{name:<44} {_mark(a):>5} {_mark(b):>5} {tokens:>11} {seconds:>12}")
        for line in output_diff(a.results[-1].observed.output, b.results[-1].observed.output):
            print(f"    {line}")
    print(f"\n{'side':<44} {'passed':>8} {'pass rate':>10}")
    for letter, side, summaries in zip("AB", sides, runs, strict=True):
        passed = sum(s.pass_all for s in summaries)
        rate = passed / len(summaries) if summaries else 0.0
        print(f"{letter}: {side.label[-41:]:<41} {passed:>4}/{len(summaries):<3} {rate:>10.2f}")
    failed = any(not s.pass_all for summaries in runs for s in summaries)
    return EXIT_ERRORS if failed or broken else EXIT_OK


def _mark(summary: Any) -> str:
    if len(summary.results) == 1:
        return "pass" if summary.pass_all else "FAIL"
    return f"{summary.passes}/{len(summary.results)}"


def _mean(summary: Any, what: str) -> float:
    values = [r.observed.output_tokens if what == "tokens" else r.duration for r in summary.results]
    return sum(values) / len(values) if values else 0.0


def _print_failures(failed: list[Any]) -> None:
    from flowengine.testing.suite import failure_text

    if not failed:
        return
    print("\n== FAILURES ==")
    for summary in failed:
        for result in summary.results:
            if result.passed:
                continue
            tries = f" (attempt {result.attempt})" if len(summary.results) > 1 else ""
            print(f"__ {summary.selected.id}{tries} __ runs: {', '.join(result.run_ids)}")
            for failure in result.failures:
                print(failure_text(result.file, failure))
            break  # one attempt's failures say what is wrong


def _print_repeats(summaries: list[Any], repeat: int) -> None:
    print(f"\n{'case':<50} {'passed':>7} {'pass@1':>7} {'pass^' + str(repeat):>7}")
    for summary in summaries:
        print(
            f"{summary.selected.id[-50:]:<50} {summary.passes:>3}/{repeat:<3} "
            f"{summary.pass_at_1:>7.2f} {int(summary.pass_all):>7}"
        )
    mean = sum(s.pass_at_1 for s in summaries) / len(summaries)
    every = sum(s.pass_all for s in summaries) / len(summaries)
    print(f"{'all cases':<50} {'':>7} {mean:>7.2f} {every:>7.2f}")


def _record(args: argparse.Namespace) -> int:
    from flowengine.cli.common import db_path
    from flowengine.storage.writer import Storage
    from flowengine.testing.record import recorded_case

    if len(args.paths) != 2:
        raise UsageError("write: flowengine test record RUN_ID [-o FILE]")
    db = db_path(args)
    if not db.exists():
        raise UsageError(f"--db {db}: no such database")
    out = Path(args.output) if args.output else Path("recorded.test.yaml")
    storage = Storage(db)
    try:
        text = recorded_case(storage, args.paths[1], out, args.name)
    finally:
        storage.close()
    if args.output:
        write_file(out, text.encode("utf-8"))
        print(f"wrote {out}: replay it with `flowengine test {out}`", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _step(args: argparse.Namespace) -> int:
    import tempfile

    from flowengine.runtime.prepare import runnable_agent
    from flowengine.testing.mocking import Mocks, ToolReply
    from flowengine.testing.one_step import run_one_step
    from flowengine.testing.spec import asks_model
    from flowengine.testing.suite import TestSession

    if len(args.paths) != 3:
        raise UsageError("write: flowengine test step AGENT.yaml STEP [--state JSON]")
    _, agent_path, step_id = args.paths
    if not Path(agent_path).is_file():
        raise UsageError(f"no such file: {agent_path}")
    agent, source = runnable_agent(agent_path)
    if step_id not in agent.steps:
        from flowengine.agentfile.diagnostics import did_you_mean

        raise UsageError(
            f"{agent_path}: {agent.name} has no step {step_id!r}"
            f"{did_you_mean(step_id, agent.steps)}"
        )
    state = _json_arg("--state", args.state)
    if not isinstance(state, dict):
        raise UsageError('--state: give a JSON object of variables, such as \'{"city": "Paris"}\'')
    mocks = Mocks()
    if args.reply is not None:
        mocks.replies[step_id] = [args.reply]
    if args.tool_result is not None and args.tool_error is not None:
        raise UsageError("give --tool-result or --tool-error, not both")
    if args.tool_result is not None:
        mocks.tools[step_id] = [ToolReply(result=_json_arg("--tool-result", args.tool_result))]
    if args.tool_error is not None:
        mocks.tools[step_id] = [ToolReply(error=args.tool_error)]
    config, only_mocks = _config(args)
    # The prompt shown is the model's own (its chat template), even with --reply.
    needs_model = asks_model(agent.steps[step_id])
    with tempfile.TemporaryDirectory(prefix="flowengine-step-") as folder:
        if not args.db:
            config.db = Path(folder) / "step.duckdb"  # nothing of a trial step is kept
        with TestSession(config, needs_model, only_mocks) as session:
            mocks.only_mocks = session.only_mocks
            report = run_one_step(
                session.kernel,
                agent,
                source,
                step_id,
                state,
                args.input,
                mocks,
                (args.answer,) if args.answer is not None else None,
            )
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False, default=str))
        return (
            EXIT_OK if report.ended is None or report.ended.startswith("completed") else EXIT_ERRORS
        )
    _show_report(report, agent.name)
    return EXIT_OK if report.ended is None or report.ended.startswith("completed") else EXIT_ERRORS


def _json_arg(flag: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{flag}: not JSON ({exc.msg} at character {exc.pos})") from None


def _show_report(report: Any, agent: str) -> None:
    def block(title: str, text: str) -> None:
        print(f"{title}:")
        for line in text.splitlines() or [""]:
            print(f"  {line}")

    def shown(title: str, text: str) -> None:
        if "\n" in text:
            block(title, text)
        else:
            print(f"{title}: {text}")

    print(f"step '{report.step_id}' ({report.kind}) of {agent}")
    for call in report.tool_calls:
        outcome = (
            f"error: {call['error']}"
            if call["error"]
            else json.dumps(call["result"], ensure_ascii=False)
        )
        mocked = " (mocked)" if call["mocked"] else ""
        print(
            f"tool: {call['tool']} {json.dumps(call['args'], ensure_ascii=False)} -> "
            f"{outcome}{mocked}"
        )
    if report.prompt is not None:
        block("prompt", report.prompt)
        print(f"constraint: {report.constraint}")
        shown(f"reply{' (mocked)' if report.reply_mocked else ''}", report.reply or "")
    result = report.result
    shown("result", result if isinstance(result, str) else json.dumps(result, ensure_ascii=False))
    if report.label is not None:
        print(f"branch: {report.label}")
    for name, value in report.saved.items():
        print(f"saved: {name} = {json.dumps(value, ensure_ascii=False)}")
    if report.ended is not None and not report.ended.startswith("completed"):
        print(f"stopped: {report.ended}")
    elif report.next_step is None:
        print("next: (the run would end here)")
    else:
        print(f"next: {report.next_step}")
