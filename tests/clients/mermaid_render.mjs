// Renders Mermaid text with the real Mermaid in Debian's Chromium, many diagrams per start.
// Reads one JSON object a line on stdin ({"text": ...}); writes one a line on stdout:
// {"ok": true, "svg": ..., "title": ..., "nodes": [...], "edges": [...]} or {"ok": false, "error": ...}.
import { createRequire } from "node:module";
import readline from "node:readline";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const require = createRequire(path.join(root, "node_modules", "@mermaid-js", "mermaid-cli", "package.json"));
const puppeteer = require("puppeteer");
const mermaidJs = path.join(root, "node_modules", "mermaid", "dist", "mermaid.min.js");

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
  headless: true,
});
const page = await browser.newPage();
await page.setContent("<!doctype html><html><body><div id='out'></div></body></html>");
await page.addScriptTag({ path: mermaidJs });
// Text is measured in one named font, installed with Chromium (scripts/
// install-debian-packages.sh): Mermaid's default list ("trebuchet ms", verdana, arial) maps
// to whichever fonts a machine happens to have. Labels must fit in DejaVu Sans, the
// widest common default; the suite also passed with Liberation Sans (Arial's metrics).
const FONT = "DejaVu Sans";
await page.evaluate((font) => window.mermaid.initialize({
  startOnLoad: false, fontFamily: font, themeVariables: { fontFamily: font },
}), FONT);

let count = 0;
const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const { text } = JSON.parse(line);
  count += 1;
  const result = await page.evaluate(async (text, n) => {
    const out = document.getElementById("out");
    try {
      const { svg } = await window.mermaid.render(`diagram${n}`, text);
      out.innerHTML = svg;
      const nodes = [...out.querySelectorAll("g.node")].map((g) => ({
        id: g.id,
        classes: [...g.classList],
        text: g.textContent,
        // Lines as drawn (distinct tops of the text's boxes) and as written (<br> + 1):
        // equal when Mermaid does not wrap our already wrapped labels a second time.
        drawnLines: (() => {
          const label = g.querySelector(".nodeLabel");
          if (!label) return null;
          const tops = new Set();
          const walker = document.createTreeWalker(label, NodeFilter.SHOW_TEXT);
          for (let text = walker.nextNode(); text; text = walker.nextNode()) {
            const range = document.createRange();
            range.selectNodeContents(text);
            for (const box of range.getClientRects()) if (box.width > 0) tops.add(Math.round(box.top));
          }
          return tops.size;
        })(),
        writtenLines: g.querySelectorAll(".nodeLabel br").length + 1,
        fill: getComputedStyle(g.querySelector("rect, polygon, path") || g).fill,
        stroke: getComputedStyle(g.querySelector("rect, polygon, path") || g).stroke,
      }));
      const edges = [...out.querySelectorAll("path.flowchart-link")].map((p) => ({
        id: p.id,
        classes: [...p.classList],
        stroke: getComputedStyle(p).stroke,
      }));
      const labels = [...out.querySelectorAll("g.edgeLabel")].map((g) => g.textContent);
      const title = out.querySelector(".flowchartTitleText")?.textContent ?? null;
      out.innerHTML = "";
      return { ok: true, svg, title, nodes, edges, labels };
    } catch (error) {
      out.innerHTML = "";
      return { ok: false, error: String(error && error.message ? error.message : error) };
    }
  }, text, count);
  process.stdout.write(JSON.stringify(result) + "\n");
}
await browser.close();
