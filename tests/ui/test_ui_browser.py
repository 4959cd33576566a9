"""``flowengine ui`` in a real browser: Debian's headless Chromium driven by Playwright.

A test that fails leaves a screenshot of the page in out/ui-test-failures/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import pytest

from tests.ui.conftest import (
    HOSTILE,
    HUGE_RUN,
    HUGE_STEPS,
    LiveRun,
    Server,
    UIData,
    screenshot_on_failure,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
WAIT_MS = 30_000


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("Chromium is not installed at /usr/bin/chromium; run 'make setup'")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Watched:
    """A page that records dialogs (an injected alert() would open one) and every URL."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.urls: list[str] = []
        self.console_errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("request", lambda request: self.urls.append(request.url))
        page.on(
            "console",
            lambda message: (
                self.console_errors.append(message.text) if message.type == "error" else None
            ),
        )
        page.set_default_timeout(WAIT_MS)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    watched = Watched(context.new_page())
    yield watched
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        saved = screenshot_on_failure(watched.page, request.node.name)
        print(f"screenshot of the failing page: {saved}")
    context.close()


def test_runs_list_run_step_and_timeline(page: Watched, server: Server, ui_data: UIData) -> None:
    [math] = [o for o in ui_data.batch if o["agent"] == "MathAgent"]
    tab = page.page
    tab.goto(server.url + "/")
    assert tab.title() == "Runs · flowengine"
    tab.select_option("select[name=agent]", "MathAgent")
    tab.click("button[type=submit]")
    tab.wait_for_url("**/?agent=MathAgent*")
    links = tab.locator("a.run-link")
    assert links.count() == 1
    links.first.click()
    tab.wait_for_url(f"**/runs/{math['run_id']}")
    graph = tab.locator("#run-graph")
    graph.wait_for()
    assert tab.evaluate("document.getElementById('run-graph').naturalWidth") > 100  # drawn

    tab.click("table.steps a.step-link:text-is('classify')")
    detail = tab.locator("#step")
    detail.locator("pre.prompt").first.wait_for()
    assert "Which kind of mathematics does this problem need?" in detail.inner_text()
    assert detail.locator("pre.reply").first.inner_text() == "arithmetic"

    calculate = _step_seq(math, "calculate")
    tab.click(f"svg a.step-link[data-seq='{calculate}']")  # a bar on the step timeline
    tab.wait_for_url(f"**step={calculate}#step")
    assert "Tool call: calculator" in tab.locator("#step").inner_text()

    tab.click("text=on the scheduler timeline")
    tab.wait_for_url(f"**/timeline?run={math['run_id']}")
    gantt = tab.locator(".gantt svg")
    gantt.wait_for()
    assert tab.locator(".gantt svg rect.slice").count() > 0
    assert tab.locator(".gantt svg .preempt").count() > 0
    assert tab.locator(".gantt svg .restore").count() > 0

    tab.click("header nav a:text-is('Scheduler timeline')")
    tab.wait_for_url("**/timeline")
    tab.locator("main h1").wait_for()
    tab.click("header nav a:text-is('Stats')")
    tab.wait_for_url("**/stats")
    tab.locator("svg.chart").first.wait_for()  # the click returns before the page loads
    assert tab.locator("svg.chart").count() == 3
    tab.click("header nav a:text-is('Agents')")
    tab.wait_for_url("**/agents")
    first_drawing = tab.locator(".agent img").first
    first_drawing.scroll_into_view_if_needed()
    tab.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=first_drawing.element_handle()
    )
    assert not page.console_errors, page.console_errors
    assert {urlparse(url).netloc for url in page.urls} == {urlparse(server.url).netloc}


def test_hostile_strings_stay_text(page: Watched, server: Server, ui_data: UIData) -> None:
    hostile = ui_data.hostile
    tab = page.page
    run = f"{server.url}/runs/{quote(hostile['run_id'])}"
    shown = ""
    for url in [server.url + "/", server.url + "/agents", run]:
        tab.goto(url)
        shown += tab.inner_text("body")
        _assert_nothing_injected(tab)
    for seq in range(1, len(hostile["path"]) + 1):
        tab.goto(f"{run}?step={seq}#step")
        shown += tab.inner_text("body")
        _assert_nothing_injected(tab)
    tab.goto(f"{server.url}/runs/{quote(HOSTILE['image'], safe='')}")
    shown += tab.inner_text("body")
    for text in HOSTILE.values():
        assert text in shown, text
    assert page.dialogs == []


def _assert_nothing_injected(tab: Any) -> None:
    counts = tab.evaluate(
        """() => ({
            scripts: [...document.scripts].map(s => s.getAttribute('src')),
            handlers: document.querySelectorAll('[onmouseover],[onerror],[onclick],[onload]')
                .length,
            javascriptLinks: [...document.querySelectorAll('a[href]')]
                .filter(a => a.getAttribute('href').trim().toLowerCase().startsWith('javascript:'))
                .length,
            images: [...document.images].map(i => new URL(i.src).pathname),
        })"""
    )
    assert counts["scripts"] == ["/static/app.js"]
    assert counts["handlers"] == 0 and counts["javascriptLinks"] == 0
    assert all(path.endswith(".svg") or path.startswith("/static/") for path in counts["images"])


def test_a_huge_run_pages_through_its_steps(page: Watched, server: Server) -> None:
    tab = page.page
    tab.goto(f"{server.url}/runs/{HUGE_RUN}")
    assert tab.locator("table.steps tbody tr").count() == 100
    tab.click("nav.pager a[rel=last]")
    tab.wait_for_url("**page=100*")
    assert tab.locator("table.steps tbody tr").first.locator("td").first.inner_text() == "9901"
    tab.fill("form.jump input[name=step]", "5000")
    tab.click("form.jump button")
    tab.wait_for_url("**step=5000*")
    assert "Step #5000:" in tab.locator("#step").inner_text()
    assert f"page 50 of {HUGE_STEPS // 100}" in tab.inner_text("nav.pager")


def test_a_live_run_updates_the_open_page(page: Watched, live: tuple[LiveRun, Server]) -> None:
    run, viewer = live
    tab = page.page
    tab.goto(f"{viewer.url}/runs/{run.run_id}")
    assert tab.inner_text("#run-status") == "running"
    assert "is being written by a running flowengine process" in tab.inner_text("main")
    before = int(tab.inner_text("#run-steps"))
    later = run.advance_to(before + 30)
    # No reload from the test: the page polls and reloads itself when the run moves on
    # (perhaps more than once while it moves), until it shows where the run stopped.
    tab.wait_for_function(
        f"() => Number(document.getElementById('run-steps')?.textContent) >= {later}",
        timeout=WAIT_MS,
    )
    assert tab.inner_text("#run-status") == "running"


def test_error_pages_are_pages(page: Watched, server: Server) -> None:
    tab = page.page
    response = tab.goto(f"{server.url}/runs/not-a-run")
    assert response is not None and response.status == 404
    assert tab.inner_text("h1") == "No such run"
    assert "Traceback" not in tab.inner_text("body")
    tab.click("text=Back to the runs list")
    tab.wait_for_url(server.url + "/")


def _step_seq(run: dict, step_id: str) -> int:
    return int(run["path"].index(step_id)) + 1


FITS = """() => {
  const wrap = document.querySelector('.table-wrap');
  const headings = [...wrap.querySelectorAll('table.steps thead th')];
  const edge = wrap.getBoundingClientRect().right;
  return {overflow: wrap.scrollWidth - wrap.clientWidth,
          beyond: headings.filter(th => th.getBoundingClientRect().right > edge + 1)
                          .map(th => th.textContent),
          headings: headings.map(th => th.textContent)};
}"""


@pytest.mark.parametrize("width", [1400, 1100])
def test_the_step_table_shows_every_column(
    browser: Any, server: Server, ui_data: UIData, width: int
) -> None:
    context = browser.new_context(viewport={"width": width, "height": 900})
    try:
        tab = context.new_page()
        for outcome in ui_data.batch:
            # With a step chosen, its detail takes the wider half of the page.
            tab.goto(f"{server.url}/runs/{quote(outcome['run_id'])}?step=1")
            fits = tab.evaluate(FITS)
            assert fits["headings"][-1] == "next"
            assert fits["beyond"] == [] and fits["overflow"] <= 0, (outcome["agent"], fits)
            assert tab.locator("table.steps tbody tr td:last-child").first.is_visible()
    finally:
        context.close()
