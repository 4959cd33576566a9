"""``ui``: a local web page over the stored runs (the web stack is imported only here)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys
from pathlib import Path
from typing import Any

from flowengine.cli.common import EXIT_OK, FORMATTER
from flowengine.errors import UsageError

DEFAULT_PORT = 8050
LOOPBACK = "127.0.0.1"


def add_parsers(commands: Any) -> None:
    ui = commands.add_parser(
        "ui",
        help="see runs in a local web page",
        description="Serve a read-only web page over stored runs: the runs with filters; "
        "one run's graph with its path, its steps on a timeline, and each step's prompt, "
        "reply, tool call, variables, timings, label scores and errors; the scheduler's "
        "timeline across concurrent runs; statistics; and the agents with their "
        "diagnostics. A run in progress updates live. Works offline; listens on "
        f"{LOOPBACK} unless --host says otherwise. Stop it with Ctrl-C.",
        epilog="Examples:\n"
        "  flowengine ui\n"
        "  flowengine ui --db out/demo.duckdb --port 8060\n"
        "  flowengine ui --db a.duckdb b.duckdb --port 0     # 0: any free port",
        formatter_class=FORMATTER,
    )
    ui.add_argument(
        "--db",
        nargs="+",
        action="extend",
        metavar="FILE",
        help="DuckDB files to show, one or more (default: flowengine.duckdb in your user "
        "data folder)",
    )
    ui.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        metavar="N",
        help="the port to listen on (default: %(default)s; 0 picks a free one)",
    )
    ui.add_argument(
        "--host",
        default=LOOPBACK,
        metavar="ADDRESS",
        help=f"the address to listen on (default: {LOOPBACK}, this machine only); another "
        "address lets others read every stored prompt and reply, and is warned about",
    )
    ui.set_defaults(handler=cmd_ui)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port; give 0 to 65535")
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        if exc.errno == 98:  # EADDRINUSE
            raise UsageError(
                f"port {port} on {host} is in use; pass --port with another number "
                "(0 picks a free one)"
            ) from None
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror}); check --host") from None
    listener.listen(64)
    return listener


def cmd_ui(args: argparse.Namespace) -> int:
    import uvicorn

    from flowengine.storage.location import default_db
    from flowengine.ui.data import Database
    from flowengine.ui.pages import Site
    from flowengine.ui.server import create_app

    paths = [Path(p) for p in args.db] if args.db else [default_db()]
    labels = [str(p) for p in paths]
    databases = [Database(path, label) for path, label in zip(paths, labels, strict=True)]
    logging.basicConfig(
        level=logging.INFO, format="flowengine ui: %(message)s", stream=sys.stderr, force=True
    )
    log = logging.getLogger("flowengine.ui")
    for path in paths:
        if not path.exists():
            log.warning("%s does not exist yet; its runs appear once a run creates it", path)
    loopback = _is_loopback(args.host)
    if not loopback:
        log.warning(
            "warning: listening on %s, not only this machine: anyone who can reach it can "
            "read every stored prompt and reply, and there is no login",
            args.host,
        )
    listener = _listen(args.host, args.port)
    host, port = listener.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"flowengine ui: serving {', '.join(labels)} at http://{shown}:{port}/", flush=True)
    print("flowengine ui: press Ctrl-C to stop", file=sys.stderr, flush=True)
    app = create_app(Site(databases), loopback_only=loopback)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[listener])
    finally:
        listener.close()
        for database in databases:
            database.close()
    return EXIT_OK
