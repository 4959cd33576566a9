"""The HTML page: the Graphviz drawing with pan, zoom and search, and a table of every
step's logic (conditions, defaults, error routes, tools and arguments, saved variables,
limits). One self-contained file: its script and style are inline, nothing is fetched."""

from __future__ import annotations

import html
import json
from typing import Any

import networkx as nx

from flowengine.steps.registry import kind_of
from flowengine.viz.labels import branch_caption, one_line


def html_page(graph: nx.DiGraph, svg: str) -> str:
    """The page for ``graph`` drawn as ``svg`` (Graphviz output)."""
    name = _e(one_line(graph.graph.get("name") or "agent"))
    run = graph.graph.get("run")
    rows = "\n".join(_row(graph, node, attrs) for node, attrs in graph.nodes(data=True))
    svg_body = svg[svg.find("<svg") :] if "<svg" in svg else svg
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{name}: flow</title>
<style>{_STYLE}</style></head><body>
<h1>{name}</h1>
{f"<p class='run'>{_e(one_line(run))}</p>" if run else ""}
<p>{_e(graph.graph.get("description") or "")}</p>
{_facts(graph)}
<div class="toolbar" role="toolbar">
  <input id="search" type="search" placeholder="Search steps (id, text, tool, variable)"
         aria-label="Search steps" autocomplete="off">
  <span id="found" aria-live="polite"></span>
  <button id="zoom-in" title="Zoom in (+)">+</button>
  <button id="zoom-out" title="Zoom out (-)">&minus;</button>
  <button id="zoom-reset" title="Fit (0)">fit</button>
  <span class="hint">drag to pan, wheel to zoom</span>
</div>
<div class="viewport" id="viewport"><div class="drawing" id="drawing">{svg_body}</div></div>
<table id="steps"><thead><tr><th>step</th><th>type</th><th>says</th><th>goes to</th>
<th>on error</th><th>tool and arguments</th><th>writes</th><th>limits</th><th>line</th></tr></thead>
<tbody>
{rows}
</tbody></table>
<script>{_SCRIPT}</script>
</body></html>
"""


def _facts(graph: nx.DiGraph) -> str:
    facts = [
        ("starts at", graph.graph.get("start") or "the first step"),
        ("at most", f"{graph.graph.get('max_steps')} steps a run"),
    ]
    if graph.graph.get("tools"):
        facts.append(("tools", ", ".join(graph.graph["tools"])))
    items = "".join(f"<li><b>{_e(k)}</b> {_e(str(v))}</li>" for k, v in facts)
    return f"<ul class='facts'>{items}</ul>"


def _row(graph: nx.DiGraph, node: str, attrs: dict[str, Any]) -> str:
    kind = attrs.get("kind", "")
    step_kind = kind_of(kind)
    exits = []
    on_error = []
    for _, target, edge in graph.out_edges(node, data=True):
        for label in edge.get("labels") or [edge.get("label", "")]:
            if label == "on_error":
                continue
            if step_kind and step_kind.branches_by_label:
                exits.append(f"<code>{_e(branch_caption(attrs, label))}</code> → {_e(target)}")
            else:
                exits.append(_e(target))
    policy = attrs.get("error_policy")
    if step_kind and step_kind.has_error_policy and policy:
        words = {"fail": "the run fails", "continue": "go on with the error as the result"}
        on_error.append(_e(words.get(policy, f"go to {policy}")))
    if attrs.get("retry"):
        on_error.insert(0, f"retry {attrs['retry']}×, then")  # noqa: RUF001
    tool = ""
    if attrs.get("tool"):
        args = attrs.get("args") or {}
        shown = ", ".join(
            f"{_e(k)}={_e(json.dumps(v, ensure_ascii=False, default=str))}" for k, v in args.items()
        )
        tool = f"<code>{_e(attrs['tool'])}({shown})</code>"
    limits = []
    if attrs.get("max_visits"):
        limits.append(f"at most {attrs['max_visits']} visits")
    if attrs.get("format") == "json":
        limits.append("JSON output")
    if step_kind:
        limits += step_kind.page_notes(attrs)
    if attrs.get("visits"):
        limits.append(f"ran {attrs['visits']}×")  # noqa: RUF001
    # Which variables the step writes: its save_as, then its set names.
    written = ([attrs["save_as"]] if attrs.get("save_as") else []) + list(attrs.get("sets") or [])
    saves = ", ".join(f"<code>{_e(name)}</code>" for name in dict.fromkeys(written))
    return (
        f'<tr data-step="{_e(node)}"><td><b>{_e(node)}</b></td><td>{_e(kind)}</td>'
        f"<td>{_e(attrs.get('text') or '')}</td><td>{'<br>'.join(exits)}</td>"
        f"<td>{' '.join(on_error)}</td><td>{tool}</td><td>{saves}</td>"
        f"<td>{', '.join(limits)}</td><td>{attrs.get('line', '')}</td></tr>"
    )


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


_STYLE = """
body { font-family: "DejaVu Sans", system-ui, sans-serif; margin: 2rem; color: #202124; }
.run { color: #1a73e8; font-weight: bold; }
.facts { list-style: none; padding: 0; display: flex; gap: 1.5rem; flex-wrap: wrap; }
.toolbar { display: flex; gap: 0.5rem; align-items: center; margin: 1rem 0 0.5rem; }
.toolbar input { flex: 0 1 28rem; padding: 0.3rem 0.5rem; font-size: 1rem; }
.toolbar button { min-width: 2.2rem; padding: 0.2rem 0.5rem; font-size: 1rem; }
.hint { color: #5f6368; font-size: 0.85rem; }
.viewport { border: 1px solid #dadce0; height: 70vh; overflow: hidden; position: relative;
  cursor: grab; background: #fff; touch-action: none; }
.viewport.dragging { cursor: grabbing; }
.drawing { transform-origin: 0 0; position: absolute; left: 0; top: 0; }
.drawing svg { display: block; }
g.node.match polygon, g.node.match path, g.node.match ellipse { stroke: #e37400; stroke-width: 4; }
g.node.dim { opacity: 0.25; }
table { border-collapse: collapse; margin-top: 2rem; font-size: 0.9rem; }
td, th { border: 1px solid #dadce0; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f1f3f4; }
tr.hidden { display: none; }
code { font-size: 0.85rem; }
"""

# Pan and zoom as a CSS transform on the drawing; search filters the table and outlines the
# matching nodes (Graphviz names each node in its <title>).
_SCRIPT = """
(() => {
  const viewport = document.getElementById("viewport");
  const drawing = document.getElementById("drawing");
  const svg = drawing.querySelector("svg");
  const view = { x: 0, y: 0, scale: 1 };
  const apply = () => {
    drawing.style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.scale})`;
    viewport.dataset.scale = view.scale.toFixed(3);
  };
  const fit = () => {
    if (!svg) return;
    const box = svg.getBoundingClientRect();
    const width = box.width / view.scale, height = box.height / view.scale;
    view.scale = Math.min(viewport.clientWidth / width, viewport.clientHeight / height, 1.5);
    view.x = (viewport.clientWidth - width * view.scale) / 2;
    view.y = 10;
    apply();
  };
  const zoomAt = (factor, cx, cy) => {
    const next = Math.min(8, Math.max(0.05, view.scale * factor));
    view.x = cx - (cx - view.x) * (next / view.scale);
    view.y = cy - (cy - view.y) * (next / view.scale);
    view.scale = next;
    apply();
  };
  const centre = () => [viewport.clientWidth / 2, viewport.clientHeight / 2];
  viewport.addEventListener("wheel", (event) => {
    event.preventDefault();
    const box = viewport.getBoundingClientRect();
    zoomAt(event.deltaY < 0 ? 1.15 : 1 / 1.15, event.clientX - box.left, event.clientY - box.top);
  }, { passive: false });
  let drag = null;
  viewport.addEventListener("pointerdown", (event) => {
    drag = { x: event.clientX - view.x, y: event.clientY - view.y };
    viewport.classList.add("dragging");
    viewport.setPointerCapture(event.pointerId);
  });
  viewport.addEventListener("pointermove", (event) => {
    if (!drag) return;
    view.x = event.clientX - drag.x;
    view.y = event.clientY - drag.y;
    apply();
  });
  const stop = () => { drag = null; viewport.classList.remove("dragging"); };
  viewport.addEventListener("pointerup", stop);
  viewport.addEventListener("pointercancel", stop);
  document.getElementById("zoom-in").onclick = () => zoomAt(1.25, ...centre());
  document.getElementById("zoom-out").onclick = () => zoomAt(0.8, ...centre());
  document.getElementById("zoom-reset").onclick = fit;
  document.addEventListener("keydown", (event) => {
    if (event.target.tagName === "INPUT") return;
    if (event.key === "+" || event.key === "=") zoomAt(1.25, ...centre());
    if (event.key === "-") zoomAt(0.8, ...centre());
    if (event.key === "0") fit();
  });

  const search = document.getElementById("search");
  const found = document.getElementById("found");
  const rows = [...document.querySelectorAll("#steps tbody tr")];
  const nodes = new Map();
  for (const g of drawing.querySelectorAll("g.node")) {
    const title = g.querySelector("title");
    if (title) nodes.set(title.textContent, g);
  }
  const show = (node) => {
    const box = node.getBoundingClientRect(), outer = viewport.getBoundingClientRect();
    view.x += outer.left + outer.width / 2 - (box.left + box.width / 2);
    view.y += outer.top + outer.height / 2 - (box.top + box.height / 2);
    apply();
  };
  const filter = () => {
    const words = search.value.trim().toLowerCase();
    let count = 0;
    for (const row of rows) {
      const hit = !words || row.textContent.toLowerCase().includes(words);
      row.classList.toggle("hidden", !hit);
      const node = nodes.get(row.dataset.step);
      if (node) {
        node.classList.toggle("match", Boolean(words) && hit);
        node.classList.toggle("dim", Boolean(words) && !hit);
      }
      count += hit ? 1 : 0;
    }
    found.textContent = words ? `${count} of ${rows.length} steps` : "";
  };
  search.addEventListener("input", filter);
  search.addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    const first = rows.find((row) => !row.classList.contains("hidden"));
    const node = first && nodes.get(first.dataset.step);
    if (node) show(node);
  });
  for (const row of rows) {
    row.addEventListener("click", () => {
      const node = nodes.get(row.dataset.step);
      if (node) show(node);
    });
  }
  fit();
})();
"""
