"""The web server: Starlette routes (GET only), security headers, and errors as clear pages.

Starlette is small, maintained, typed, and ASGI, so the same app runs under uvicorn and
under its test client; it renders with Jinja2, which flowengine already depends on.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from datetime import datetime
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowengine import __version__
from flowengine.ui import pages
from flowengine.ui.data import DatabaseProblem
from flowengine.ui.pages import Page, PageError, Site

log = logging.getLogger("flowengine.ui")
PACKAGE = resources.files("flowengine.ui")

# Nothing but this server's own files; no inline script or style, no frames, no plugins.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


class Guard:
    """Adds the security headers, and refuses other Host names while on loopback.

    The Host check stops DNS rebinding: a web page whose name resolves to 127.0.0.1
    must not be able to read the runs through the visitor's browser."""

    def __init__(self, app: ASGIApp, loopback_only: bool) -> None:
        self.app = app
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.loopback_only and _host_name(scope) not in LOOPBACK_NAMES:
            log.warning("refused a request for host %r (only 127.0.0.1 is served)", _host(scope))
            response = HTMLResponse("<h1>Unknown host</h1>", status_code=421)
            await response(scope, receive, self._with_headers(send))
            return
        await self.app(scope, receive, self._with_headers(send))

    @staticmethod
    def _with_headers(send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *SECURITY_HEADERS]
            await send(message)

        return sending


def _host(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"host":
            return str(value.decode("latin-1"))
    return ""


def _host_name(scope: Scope) -> str:
    host = _host(scope).lower()
    if host.startswith("["):  # [::1]:8050
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _one_line(text: str) -> str:
    """Text from the request, made unable to forge extra lines in the log."""
    return " ".join(text.split())


def _environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(str(PACKAGE / "templates")),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = _when
    environment.filters["seconds"] = _seconds
    environment.filters["pretty"] = _pretty
    environment.filters["part"] = lambda value: quote(str(value), safe="")
    environment.globals["query"] = _query
    environment.globals["version"] = __version__
    return environment


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else ""


def _seconds(value: Any) -> str:
    if value is None:
        return ""
    value = float(value)
    return f"{value:.3f} s" if value < 100 else f"{value:,.0f} s"


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _query(current: dict[str, str], **changes: Any) -> str:
    """The query string of this page with some parameters changed (None removes one)."""
    merged = {**current, **{k: v for k, v in changes.items()}}
    return "?" + urlencode({k: v for k, v in merged.items() if v not in (None, "")})


def create_app(site: Site, loopback_only: bool = True) -> ASGIApp:
    """The ASGI application serving ``site``'s databases."""
    environment = _environment()
    debug = bool(os.environ.get("FLOWENGINE_DEBUG"))

    def render(page: Page, request: Request) -> HTMLResponse:
        template = environment.get_template(page.template)
        body = template.render(
            **page.values, params=dict(request.query_params), path=request.url.path
        )
        return HTMLResponse(body, status_code=page.status)

    def problem(request: Request, error: PageError) -> HTMLResponse:
        log.warning(
            "%s %s: %d %s: %s",
            request.method,
            _one_line(request.url.path),
            error.status,
            error.title,
            _one_line(error.message),
        )
        body = environment.get_template("problem.html").render(
            title=error.title, error=error, params={}, path=request.url.path
        )
        return HTMLResponse(
            body, status_code=error.status, headers={"retry-after": "2"} if error.retry else None
        )

    def guarded(make: Callable[[Request], Response]) -> Callable[[Request], Response]:
        """Every way a page can fail ends as a page that says so, and one log line."""

        def endpoint(request: Request) -> Response:
            try:
                return make(request)
            except PageError as error:
                return problem(request, error)
            except DatabaseProblem as exc:
                return problem(request, pages._problem_page(exc))
            except Exception as exc:
                if debug:
                    log.exception("%s %s failed", request.method, request.url.path)
                name = type(exc).__name__
                if type(exc).__module__.startswith(("duckdb", "_duckdb")):
                    first = (str(exc).strip().splitlines() or [name])[0]
                    return problem(
                        request,
                        PageError(
                            500,
                            "The database cannot be read",
                            f"Reading the database failed ({first}); is it a flowengine database?",
                        ),
                    )
                log.error(
                    "%s %s: internal error: %s: %s (FLOWENGINE_DEBUG=1 logs the traceback)",
                    request.method,
                    request.url.path,
                    name,
                    exc,
                )
                return problem(
                    request,
                    PageError(
                        500,
                        "Something went wrong",
                        f"This page failed with an internal error ({name}); the server's log "
                        "has a line about it. This is a bug in flowengine.",
                    ),
                )

        return endpoint

    def runs(request: Request) -> Response:
        return render(pages.runs_page(site, request.query_params), request)

    def run(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        return render(pages.run_page(site, run_id, request.query_params), request)

    def run_graph(request: Request) -> Response:
        svg = pages.run_graph(site, request.path_params["run_id"])
        return Response(svg, media_type="image/svg+xml")

    def timeline(request: Request) -> Response:
        return render(pages.timeline_page(site, request.query_params), request)

    def stats(request: Request) -> Response:
        return render(pages.stats_page(site), request)

    def agents(request: Request) -> Response:
        return render(pages.agents_page(site), request)

    def tests(request: Request) -> Response:
        return render(pages.tests_page(site), request)

    def agent_graph(request: Request) -> Response:
        svg = pages.agent_graph(site, request.path_params["db"], request.path_params["key"])
        return Response(svg, media_type="image/svg+xml")

    def changes(request: Request) -> Response:
        return JSONResponse({"signature": site.signature()})

    def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        title = "Not found" if status == 404 else "Not allowed"
        message = (
            f"There is no page at {request.url.path}; start from the runs list."
            if status == 404
            else f"{request.method} is not allowed: this server only shows pages (GET)."
        )
        return problem(request, PageError(status, title, message))

    routes = [
        Route("/", guarded(runs)),
        Route("/runs/{run_id}", guarded(run)),
        Route("/runs/{run_id}/graph.svg", guarded(run_graph)),
        Route("/timeline", guarded(timeline)),
        Route("/stats", guarded(stats)),
        Route("/agents", guarded(agents)),
        Route("/tests", guarded(tests)),
        Route("/agents/{db:int}/{key}.svg", guarded(agent_graph)),
        Route("/api/changes", guarded(changes)),
        Mount("/static", StaticFiles(directory=str(PACKAGE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    return Guard(app, loopback_only)
