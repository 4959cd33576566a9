"""The ``flowengine`` command line: the parser, and errors turned into one-line messages.

Commands live in topic modules (``authoring``: validate, viz, import-aios, tools;
``running``: run, resume; ``inspecting``: logs, stats; ``viewing``: ui; ``agent_tests``:
test), each adding its own subparsers.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from flowengine import __version__
from flowengine.cli import agent_tests, authoring, inspecting, running, viewing
from flowengine.cli.common import EXIT_ERRORS, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from flowengine.errors import FlowengineError

MODEL_COMMANDS = frozenset({"run", "resume", "test"})
"""The commands that open a model; only their parsers load the backends' options."""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line. The backends' own options are found only when ``argv``
    names a command that runs a model (or is None: every option, as for docs)."""
    parser = argparse.ArgumentParser(
        prog="flowengine",
        description="Declarative LLM agents: YAML state machines of process, decision "
        "and terminal steps, checked before they run.",
        epilog="Examples:\n"
        "  flowengine validate agents/\n"
        "  flowengine viz agents/travel_agent.yaml --format png -o travel.png\n"
        "  flowengine import-aios ../shared/aios/TravelAgent.json -o imported/\n"
        '  flowengine run agents/travel_agent.yaml --input "Plan a 3-day trip from Seattle '
        'to California"\n'
        "  flowengine test agents/                # the agents' *.test.yaml cases\n"
        "  flowengine logs; flowengine stats\n"
        "  flowengine ui --db out/demo.duckdb     # the runs in a local web page\n\n"
        "Run 'flowengine COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"flowengine {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    with_backends = argv is None or bool(MODEL_COMMANDS & set(argv))
    authoring.add_parsers(commands)
    running.add_parsers(commands, with_backends)
    inspecting.add_parsers(commands)
    viewing.add_parsers(commands)
    agent_tests.add_parsers(commands, with_backends)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.handler(args))
    except FlowengineError as exc:  # the user can act on it: one line, no traceback
        print(f"flowengine {args.command}: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`); nothing left to say
        return EXIT_OK
    except Exception as exc:  # a bug: say so in one line, keep the traceback for debugging
        if os.environ.get("FLOWENGINE_DEBUG"):
            raise
        print(
            f"flowengine {args.command}: internal error: {type(exc).__name__}: {exc}\n"
            "This is a bug in flowengine; run again with FLOWENGINE_DEBUG=1 for details.",
            file=sys.stderr,
        )
        return EXIT_ERRORS
