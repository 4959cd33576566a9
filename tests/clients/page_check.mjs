// Opens a page from `flowengine viz -o X.html` in Debian's Chromium with the network cut
// off, uses its zoom, pan and search as a person would, and prints what changed as JSON.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const require = createRequire(path.join(root, "node_modules", "@mermaid-js", "mermaid-cli", "package.json"));
const puppeteer = require("puppeteer");
const [file, query] = process.argv.slice(2);

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
  headless: true,
});
const page = await browser.newPage();
await page.setViewport({ width: 1200, height: 900 });
const fetched = [];
const errors = [];
await page.setRequestInterception(true);
page.on("request", (request) => {
  if (request.url().startsWith("file:")) return request.continue();
  fetched.push(request.url());
  return request.abort();
});
page.on("pageerror", (error) => errors.push(String(error)));
await page.goto(pathToFileURL(file).href, { waitUntil: "load" });

const state = () => page.evaluate(() => ({
  transform: document.getElementById("drawing").style.transform,
  scale: Number(document.getElementById("viewport").dataset.scale),
  visibleRows: [...document.querySelectorAll("#steps tbody tr")].filter((r) => !r.classList.contains("hidden")).map((r) => r.dataset.step),
  matched: [...document.querySelectorAll("g.node.match title")].map((t) => t.textContent),
  dimmed: document.querySelectorAll("g.node.dim").length,
  found: document.getElementById("found").textContent,
}));
const result = { initial: await state() };
const box = await (await page.$("#viewport")).boundingBox();
await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
await page.mouse.wheel({ deltaY: -300 });
await new Promise((r) => setTimeout(r, 100));
result.zoomed = await state();
await page.mouse.down();
await page.mouse.move(box.x + box.width / 2 + 120, box.y + box.height / 2 + 80, { steps: 5 });
await page.mouse.up();
result.panned = await state();
await page.click("#zoom-reset");
result.fitted = await state();
await page.type("#search", query);
result.searched = await state();
await page.focus("#search");
await page.keyboard.press("Enter");
result.centred = await state();
result.fetched = fetched;
result.errors = errors;
process.stdout.write(JSON.stringify(result) + "\n");
await browser.close();
