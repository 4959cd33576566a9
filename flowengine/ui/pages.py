"""The pages as data: each function reads the databases and returns a template and its values.

Nothing here knows about HTTP; :mod:`flowengine.ui.server` turns a :class:`Page` into a
response and a :class:`PageError` into a clear error page.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from flowengine.ui import charts
from flowengine.ui.data import (
    REQUESTS_PER_PAGE,
    RUNS_PER_PAGE,
    STEPS_PER_PAGE,
    Database,
    DatabaseProblem,
    RunFilter,
    RunRecords,
    parse_json,
    variables_set,
)

STATUS_BY_PROBLEM = {"missing": 404, "busy": 503, "corrupt": 500}


@dataclass
class Page:
    template: str
    values: dict[str, Any]
    status: int = 200


@dataclass
class PageError(Exception):
    """A page that cannot be shown: ``message`` says why and what to do."""

    status: int
    title: str
    message: str
    retry: bool = False


@dataclass
class Notice:
    """A line above a page's content: a database left out, or read from a copy."""

    text: str
    level: str = "info"


@dataclass
class Reading:
    """The databases read for one page, and what the reader should know about them."""

    notices: list[Notice] = field(default_factory=list)
    live: bool = False


class Site:
    """The databases the server was started with."""

    def __init__(self, databases: list[Database]) -> None:
        self.databases = databases

    def signature(self) -> str:
        """What changes when any database file is written; open pages poll it. It only
        looks at the files' sizes and times, so polling never opens, or locks, a file."""
        return "|".join(database.signature() for database in self.databases)

    @contextmanager
    def reading(self, database: Database, reading: Reading) -> Iterator[RunRecords]:
        with database.open() as (records, copied_at):
            if copied_at is not None:
                reading.notices.append(
                    Notice(
                        f"{database.label} is being written by a running flowengine process, "
                        "which locks the file; this page shows a copy taken at "
                        f"{datetime.fromtimestamp(copied_at):%H:%M:%S} and refreshes itself "
                        "as the run goes on."
                    )
                )
            yield records

    def each(self, reading: Reading) -> Iterator[tuple[Database, RunRecords]]:
        """Every readable database; a problem with one becomes a notice, not a failed page."""
        for database in self.databases:
            try:
                with self.reading(database, reading) as records:
                    yield database, records
            except DatabaseProblem as problem:
                reading.notices.append(Notice(str(problem), "error"))

    @contextmanager
    def run_records(self, run_id: str, reading: Reading) -> Iterator[tuple[Database, RunRecords]]:
        """The database holding ``run_id``; a clear 404 when none does."""
        problems: list[DatabaseProblem] = []
        for database in self.databases:
            try:
                with self.reading(database, reading) as records:
                    if records.progress(run_id) is not None:
                        yield database, records
                        return
            except DatabaseProblem as problem:
                problems.append(problem)
        if problems and len(problems) == len(self.databases):
            raise _problem_page(problems[0])
        names = ", ".join(d.label for d in self.databases)
        left_out = "".join(f" ({p})" for p in problems)
        raise PageError(
            404,
            "No such run",
            f"There is no run {run_id!r} in {names}{left_out}. The runs list shows the "
            "runs stored.",
        )


def _problem_page(problem: DatabaseProblem) -> PageError:
    titles = {
        "missing": "No database file",
        "busy": "The database is busy",
        "corrupt": "The database cannot be read",
    }
    return PageError(
        STATUS_BY_PROBLEM[problem.kind],
        titles[problem.kind],
        str(problem),
        retry=problem.kind == "busy",
    )


# -- parameters ---------------------------------------------------------------------------


def whole(params: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    """A query parameter that must be a whole number of at least 1."""
    text = params.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1 or len(text) > 12:
        raise PageError(400, "Bad address", f"{name}={text!r} is not a whole number of 1 or more.")
    return int(text)


def moment(params: Mapping[str, str], name: str, end_of_day: bool = False) -> datetime | None:
    """A time parameter as naive UTC (as stored); a bare date ``until`` means its whole day."""
    text = params.get(name, "").strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise PageError(
            400,
            "Bad address",
            f"{name}={text!r} is not a time; write YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC).",
        ) from None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    if end_of_day and len(text) == len("YYYY-MM-DD"):
        value += timedelta(days=1, microseconds=-1)
    return value


def pages(total: int, size: int) -> int:
    return max(1, math.ceil(total / size))


# -- the pages ----------------------------------------------------------------------------


def runs_page(site: Site, params: Mapping[str, str]) -> Page:
    where = RunFilter(
        agent=params.get("agent", ""),
        status=params.get("status", ""),
        since=moment(params, "since"),
        until=moment(params, "until", end_of_day=True),
    )
    page = whole(params, "page", 1) or 1
    signature = site.signature()  # before reading: a change in between reloads once more
    reading = Reading(live=True)  # new runs appear while the list is open
    rows: list[dict[str, Any]] = []
    total = 0
    agents: set[str] = set()
    statuses: set[str] = set()
    for database, records in site.each(reading):
        found, count = records.filtered_runs(where, page * RUNS_PER_PAGE)
        for row in found:
            row["db"] = database.label
        rows += found
        total += count
        more_agents, more_statuses = records.choices()
        agents.update(more_agents)
        statuses.update(more_statuses)
    rows.sort(key=lambda r: r["created"] or datetime.min, reverse=True)
    rows = rows[(page - 1) * RUNS_PER_PAGE : page * RUNS_PER_PAGE]
    for row in rows:
        if row["created"] and row["updated"]:
            row["duration_s"] = (row["updated"] - row["created"]).total_seconds()
    filters = {k: params.get(k, "") for k in ("agent", "status", "since", "until")}
    return Page(
        "runs.html",
        {
            "title": "Runs",
            "runs": rows,
            "total": total,
            "page": page,
            "pages": pages(total, RUNS_PER_PAGE),
            "filters": filters,
            "agents": sorted(agents),
            "statuses": sorted(statuses),
            "reading": reading,
            "signature": signature,
            "several": len(site.databases) > 1,
        },
    )


def run_page(site: Site, run_id: str, params: Mapping[str, str]) -> Page:
    selected = whole(params, "step")
    signature = site.signature()
    reading = Reading()
    with site.run_records(run_id, reading) as (database, records):
        run = records.run(run_id)
        assert run is not None  # run_records found it
        total = int(run["steps"] or 0)
        last_page = pages(total, STEPS_PER_PAGE)
        default_page = (selected - 1) // STEPS_PER_PAGE + 1 if selected else 1
        page = min(whole(params, "page", default_page) or 1, last_page)
        steps = records.steps_page(run_id, (page - 1) * STEPS_PER_PAGE, STEPS_PER_PAGE)
        for row in steps:
            row["sets"] = variables_set(row.pop("state"))
        step = records.step(run_id, selected) if selected else None
        if selected and step is None:
            raise PageError(
                404, "No such step", f"Run {run_id} has no step {selected}; it has {total}."
            )
        errors = records.run_errors(run_id)
        source = records.agent_source(run_id)
    if run["status"] == "running":
        reading.live = True
    for name in ("inputs", "output_errors"):
        run[name] = parse_json(run[name])
    link = f"?page={page}&step="
    chosen_label = None
    if step is not None:
        state = step["state"] if isinstance(step["state"], dict) else {}
        step["variables"] = state.get("variables", {})
        step["visits"] = state.get("visits", {})
        step["progress_count"] = len(state.get("progress", []) or [])
        step["took_s"] = (
            step["ended_s"] - step["started_s"]
            if step["ended_s"] is not None and step["started_s"] is not None
            else None
        )
        chosen_label = step.get("label")
        for request in step["requests"]:
            scores = _decisive_scores(request["label_scores"])
            request["score_chart"] = (
                charts.score_bars(scores, request["response"]) if scores else ""
            )
    return Page(
        "run.html",
        {
            "title": f"Run {run_id}",
            "run": run,
            # Quoted for a shell: a run id is whatever the database holds.
            "answer_command": f"flowengine resume {shlex.quote(run_id)} --answer TEXT",
            "db": database.label,
            "steps": steps,
            "step": step,
            "chosen_label": chosen_label,
            "page": page,
            "pages": last_page,
            "total": total,
            "timeline": charts.step_timeline(steps, link, selected),
            "errors": errors,
            "has_source": bool(source and source[1]),
            "reading": reading,
            "signature": signature,
            "several": len(site.databases) > 1,
        },
    )


def run_graph(site: Site, run_id: str) -> bytes:
    from flowengine.ui.graphs import agent_svg, message_svg

    reading = Reading()
    with site.run_records(run_id, reading) as (_, records):
        source = records.agent_source(run_id)
        path = tuple(records.path(run_id))
        progress = records.progress(run_id) or {}
    if not source or not source[1]:
        return message_svg("This run has no agent source stored, so it cannot be drawn.")
    title = f"run {run_id}: {progress.get('status')} after {len(path)} steps"
    return agent_svg(source[1], source[0] or "<stored>", path, title)


def timeline_page(site: Site, params: Mapping[str, str]) -> Page:
    anchor = params.get("run", "").strip() or None
    page = whole(params, "page", 1) or 1
    signature = site.signature()
    reading = Reading()
    runs: list[dict[str, Any]] = []
    requests: list[dict[str, Any]] = []
    total = 0
    chosen = _timeline_database(site, anchor, reading)
    if anchor is not None and chosen is None:
        raise PageError(
            404, "No such run", f"There is no run {anchor!r} to centre the timeline on."
        )
    if chosen is not None:
        with site.reading(chosen, Reading()) as records:  # its notices are in `reading`
            runs = records.window_runs(anchor)
            requests, total = records.window_requests(
                [r["run_id"] for r in runs], (page - 1) * REQUESTS_PER_PAGE, REQUESTS_PER_PAGE
            )
    colours = {
        run["run_id"]: charts.RUN_COLOURS[i % len(charts.RUN_COLOURS)] for i, run in enumerate(runs)
    }
    for run in runs:
        run["colour"] = colours[run["run_id"]]
    reading.live |= any(run["status"] == "running" for run in runs)
    return Page(
        "timeline.html",
        {
            "title": "Scheduler timeline",
            "runs": runs,
            "anchor": anchor or "",
            "chart": charts.gantt(requests, colours),
            "requests": len(requests),
            "total": total,
            "page": page,
            "pages": pages(total, REQUESTS_PER_PAGE),
            "reading": reading,
            "signature": signature,
        },
    )


def _timeline_database(site: Site, anchor: str | None, reading: Reading) -> Database | None:
    """The database holding ``anchor``, or when None the one with the newest run."""
    newest: tuple[datetime, Database] | None = None
    for database, records in site.each(reading):
        if anchor is not None:
            if records.progress(anchor) is not None:
                return database
            continue
        created = records.value("SELECT max(created) FROM runs")
        if created is not None and (newest is None or created > newest[0]):
            newest = (created, database)
    return newest[1] if newest else None


def stats_page(site: Site) -> Page:
    reading = Reading()
    rows: list[dict[str, Any]] = []
    several = len(site.databases) > 1
    for database, records in site.each(reading):
        for row in records.stats():
            row["label"] = f"{row['agent']} · {row['scheduler']}" + (
                f" ({database.label})" if several else ""
            )
            rows.append(row)
    return Page(
        "stats.html",
        {
            "title": "Statistics",
            "rows": rows,
            "waiting": charts.bar_chart(
                "Mean waiting per LLM request",
                [(r["label"], r["mean_waiting_s"]) for r in rows],
                "s",
            ),
            "turnaround": charts.bar_chart(
                "Mean turnaround per LLM request",
                [(r["label"], r["mean_turnaround_s"]) for r in rows],
                "s",
            ),
            "throughput": charts.bar_chart(
                "Generated tokens per second of model time",
                [(r["label"], r["tokens_per_s"]) for r in rows],
                "tok/s",
            ),
            "reading": reading,
        },
    )


def tests_page(site: Site) -> Page:
    """The `flowengine test` commands stored, newest first: each with its counts, and its
    failing cases with what each expectation wanted and got, linked to their runs."""
    reading = Reading()
    sessions: dict[tuple[str, str], dict[str, Any]] = {}
    for database, records in site.each(reading):
        for row in records.test_cases():
            key = (database.label, row["test_run_id"])
            session = sessions.setdefault(
                key,
                {
                    "test_run_id": row["test_run_id"],
                    "db": database.label if len(site.databases) > 1 else "",
                    "started": row["started"],
                    "backend": row["backend"],
                    "model": row["model"],
                    "passed": 0,
                    "failed": [],
                },
            )
            session["started"] = min(session["started"], row["started"])
            if row["passed"]:
                session["passed"] += 1
            else:
                session["failed"].append(row)
    ordered = sorted(sessions.values(), key=lambda s: s["started"], reverse=True)
    return Page("tests.html", {"title": "Tests", "sessions": ordered, "reading": reading})


def agents_page(site: Site) -> Page:
    from flowengine.graph import validate_text

    reading = Reading()
    agents = []
    for index, (database, records) in enumerate(site.each(reading)):
        for version in records.agent_versions():
            source = version["agent_source"] or ""
            validated = validate_text(source, version["agent_file"] or "<stored>")
            version["diagnostics"] = [d.format() for d in validated.diagnostics]
            version["errors"] = len(validated.errors)
            version["key"] = _source_key(source)
            version["db_index"] = index
            version["db"] = database.label
            agents.append(version)
    return Page("agents.html", {"title": "Agents", "agents": agents, "reading": reading})


def agent_graph(site: Site, db_index: int, key: str) -> bytes:
    from flowengine.ui.graphs import agent_svg

    if db_index >= len(site.databases):
        raise PageError(404, "No such agent", "That database is not one this server reads.")
    reading = Reading()
    with site.reading(site.databases[db_index], reading) as records:
        for version in records.agent_versions():
            if _source_key(version["agent_source"] or "") == key:
                return agent_svg(version["agent_source"], version["agent_file"] or "<stored>")
    raise PageError(404, "No such agent", "No stored agent file has that drawing.")


def _source_key(source: str) -> str:
    import hashlib

    return hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _decisive_scores(stored: Any) -> dict[str, float]:
    """The score each label's choice was made on: stored as a number (files written before
    calibration), or as ``{raw, content_free?, calibrated?}``, where calibrated decides."""
    if not isinstance(stored, dict):
        return {}
    found: dict[str, float] = {}
    for label, value in stored.items():
        if isinstance(value, dict):
            value = value.get("calibrated", value.get("raw"))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            found[str(label)] = float(value)
    return found
