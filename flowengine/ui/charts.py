"""Charts drawn on the server as SVG: a run's step timeline, the scheduler Gantt, bar charts.

Every piece of text goes through :func:`html.escape`, and colours are presentation
attributes (no ``style``), so the page's Content-Security-Policy can forbid inline styles.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from flowengine.steps.registry import kind_of, kinds

DECISION_COLOUR = kinds()["decision"].drawing.colour
"""The chosen label's bar in a decision's score chart: the decision's own colour."""
RUN_COLOURS = ("#1a73e8", "#e8710a", "#188038", "#a142f4", "#d93025", "#12b5cb", "#9e6a03")
WAIT_COLOUR = "#dadce0"
PREEMPT_COLOUR = "#d93025"
RESTORE_COLOUR = "#188038"
LABEL_WIDTH = 230
PLOT_WIDTH = 760
ROW = 22
LABEL_CHARS = 36  # what fits in LABEL_WIDTH at the charts' font size


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _text(x: float, y: float, text: Any, anchor: str = "start", css: str = "") -> str:
    extra = f' class="{css}"' if css else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{_e(text)}</text>'


def _label(x: float, y: float, text: Any) -> str:
    """A row's name, right-aligned before the plot; cut to fit, whole on hover."""
    whole = str(text)
    shown = whole if len(whole) <= LABEL_CHARS else whole[: LABEL_CHARS - 1] + "…"
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="end" class="lane-label">'
        f"<title>{_e(whole)}</title>{_e(shown)}</text>"
    )


def _svg(width: float, height: float, body: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="{_e(label)}">' + "".join(body) + "</svg>"
    )


def _ticks(span: float, count: int = 6) -> list[float]:
    """Round tick positions (in seconds) from 0 to ``span``."""
    if span <= 0:
        return [0.0]
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(int(span / step) + 1)]


def _axis(x0: float, y: float, span: float, scale: float) -> list[str]:
    out = [f'<line x1="{x0}" y1="{y}" x2="{x0 + span * scale:.1f}" y2="{y}" class="axis"/>']
    for tick in _ticks(span):
        x = x0 + tick * scale
        out.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 4}" class="axis"/>')
        out.append(_text(x, y + 16, f"{tick:g} s", "middle", "tick"))
    return out


def step_timeline(steps: Sequence[dict[str, Any]], link: str, selected: int | None) -> str:
    """The steps of one page on a time axis, one lane per step id, each bar a link.

    ``link`` is the query string the step's ``seq`` is appended to."""
    timed = [s for s in steps if s.get("started_s") is not None and s.get("ended_s") is not None]
    if not timed:
        return ""
    lanes: dict[str, int] = {}
    for step in timed:
        lanes.setdefault(str(step["step_id"]), len(lanes))
    start = min(s["started_s"] for s in timed)
    span = max(max(s["ended_s"] for s in timed) - start, 1e-6)
    scale = PLOT_WIDTH / span
    height = 30 + ROW * len(lanes) + 24
    body = []
    for name, lane in lanes.items():
        y = 20 + lane * ROW
        body.append(
            f'<rect x="0" y="{y}" width="{LABEL_WIDTH + PLOT_WIDTH}" height="{ROW}" '
            f'class="lane{lane % 2}"/>'
        )
        body.append(_label(LABEL_WIDTH - 8, y + 15, name))
    for step in timed:
        y = 20 + lanes[str(step["step_id"])] * ROW + 3
        x = LABEL_WIDTH + (step["started_s"] - start) * scale
        width = max((step["ended_s"] - step["started_s"]) * scale, 3)
        kind = kind_of(str(step["kind"]))
        colour = kind.drawing.colour if kind else "#5f6368"
        chosen = " selected" if step["seq"] == selected else ""
        failed = " failed" if step.get("errors") else ""
        took = step["ended_s"] - step["started_s"]
        body.append(
            f'<a href="{_e(link)}{int(step["seq"])}#step" class="step-link" '
            f'data-seq="{int(step["seq"])}">'
            f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{ROW - 6}" fill="{colour}" '
            f'class="step-bar{chosen}{failed}"><title>#{int(step["seq"])} {_e(step["step_id"])} '
            f"({_e(step['kind'])}) {took:.3f} s</title></rect></a>"
        )
    body += _axis(LABEL_WIDTH, 22 + ROW * len(lanes), span, scale)
    return _svg(LABEL_WIDTH + PLOT_WIDTH + 20, height, body, "steps on a time axis")


def gantt(requests: Sequence[dict[str, Any]], run_colours: dict[str, str]) -> str:
    """LLM requests as rows: waiting in grey, model slices in the run's colour,
    preemptions as red marks at a slice's end, restores as green dots at its start."""
    if not requests:
        return ""
    start = min(r["created_s"] for r in requests)
    end = max(
        max([r["ended_s"] or r["created_s"]] + [s["ended_s"] or 0 for s in r["slices_list"]])
        for r in requests
    )
    span = max(end - start, 1e-6)
    scale = PLOT_WIDTH / span
    body = []
    for row, request in enumerate(requests):
        y = 10 + row * ROW
        colour = run_colours.get(request["run_id"], RUN_COLOURS[0])
        body.append(
            f'<rect x="0" y="{y}" width="{LABEL_WIDTH + PLOT_WIDTH}" height="{ROW}" '
            f'class="lane{row % 2}"/>'
        )
        label = f"{request['agent']} · {request['step_id']} #{request['seq']}"
        href = f"/runs/{quote(str(request['run_id']), safe='')}?step={int(request['seq'])}#step"
        body.append(f'<a href="{_e(href)}">{_label(LABEL_WIDTH - 8, y + 15, label)}</a>')
        x = LABEL_WIDTH + (request["created_s"] - start) * scale
        cursor = request["created_s"]
        title = (
            f"{request['agent']} {request['step_id']} ({request['kind']}): waited "
            f"{request['waiting_s'] or 0:.3f} s, turnaround {request['turnaround_s'] or 0:.3f} s, "
            f"{request['slices']} slices, {request['preemptions']} preemptions, "
            f"{request['restores']} restores"
        )
        for piece in request["slices_list"]:
            if piece["started_s"] is None or piece["ended_s"] is None:
                continue
            gap = piece["started_s"] - cursor
            if gap > 0:
                gx = LABEL_WIDTH + (cursor - start) * scale
                body.append(
                    f'<rect x="{gx:.1f}" y="{y + 7}" width="{max(gap * scale, 1):.1f}" '
                    f'height="8" fill="{WAIT_COLOUR}" class="waiting"/>'
                )
            sx = LABEL_WIDTH + (piece["started_s"] - start) * scale
            width = max((piece["ended_s"] - piece["started_s"]) * scale, 2)
            body.append(
                f'<rect x="{sx:.1f}" y="{y + 3}" width="{width:.1f}" height="{ROW - 6}" '
                f'fill="{colour}" class="slice"><title>{_e(title)}; slice {int(piece["idx"])}: '
                f"{int(piece['tokens'] or 0)} tokens</title></rect>"
            )
            if piece["restored"]:
                body.append(
                    f'<circle cx="{sx:.1f}" cy="{y + ROW / 2}" r="4" '
                    f'fill="{RESTORE_COLOUR}" class="restore"/>'
                )
            if piece["preempted"]:
                px = sx + width
                body.append(
                    f'<path d="M{px:.1f} {y + 2} l-4 -0 l4 7 l4 -7 z" '
                    f'fill="{PREEMPT_COLOUR}" class="preempt"/>'
                )
            cursor = piece["ended_s"]
        if not request["slices_list"] and request["ended_s"] is not None:
            width = max((request["ended_s"] - request["created_s"]) * scale, 1)
            body.append(
                f'<rect x="{x:.1f}" y="{y + 7}" width="{width:.1f}" height="8" '
                f'fill="{WAIT_COLOUR}" class="waiting"><title>{_e(title)}</title></rect>'
            )
    body += _axis(LABEL_WIDTH, 12 + ROW * len(requests), span, scale)
    height = 40 + ROW * len(requests)
    return _svg(LABEL_WIDTH + PLOT_WIDTH + 20, height, body, "scheduler timeline")


def bar_chart(title: str, items: Sequence[tuple[str, float | None]], unit: str) -> str:
    """Horizontal bars, one per labelled value; missing values are shown as 'no data'."""
    values = [v for _, v in items if v is not None]
    top = max(values, default=0) or 1
    width = 420
    body = [_text(0, 16, title, css="chart-title")]
    for row, (label, value) in enumerate(items):
        y = 28 + row * ROW
        body.append(_label(LABEL_WIDTH - 8, y + 15, label))
        if value is None:
            body.append(_text(LABEL_WIDTH, y + 15, "no data", css="tick"))
            continue
        length = max(width * value / top, 1)
        body.append(
            f'<rect x="{LABEL_WIDTH}" y="{y + 3}" width="{length:.1f}" '
            f'height="{ROW - 6}" fill="{RUN_COLOURS[row % len(RUN_COLOURS)]}"/>'
        )
        body.append(_text(LABEL_WIDTH + length + 6, y + 15, f"{value:g} {unit}", css="tick"))
    height = 36 + ROW * len(items)
    return _svg(LABEL_WIDTH + width + 110, height, body, title)


def score_bars(scores: dict[str, Any], chosen: str | None) -> str:
    """A decision's label scores (log-probabilities) as bars; the chosen label in bold."""
    items = [(str(k), float(v)) for k, v in scores.items() if isinstance(v, int | float)]
    if not items:
        return ""
    low = min(v for _, v in items)
    high = max(v for _, v in items)
    spread = (high - low) or 1.0
    width = 300
    body = []
    for row, (label, value) in enumerate(sorted(items, key=lambda i: -i[1])):
        y = 4 + row * ROW
        css = "lane-label chosen" if label == chosen else "lane-label"
        body.append(_text(150, y + 15, label, "end", css))
        length = 20 + (width - 20) * (value - low) / spread
        body.append(
            f'<rect x="158" y="{y + 3}" width="{length:.1f}" height="{ROW - 6}" '
            f'fill="{DECISION_COLOUR if label == chosen else WAIT_COLOUR}"/>'
        )
        body.append(_text(158 + length + 6, y + 15, f"{value:.3f}", css="tick"))
    return _svg(158 + width + 80, 10 + ROW * len(items), body, "label scores")
