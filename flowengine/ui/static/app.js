// Live pages: while a run is going on, ask the server every 2 s whether anything changed,
// and reload when it did. The page keeps its address, so the chosen step stays chosen.
"use strict";
(function () {
  const url = document.body.dataset.poll;
  if (!url) return;
  const first = document.body.dataset.signature;  // what the page shows
  async function check() {
    try {
      const response = await fetch(url, { cache: "no-store" });
      if (response.ok) {
        const signature = (await response.json()).signature;
        if (signature !== first) { window.location.reload(); return; }
      }
    } catch (error) {
      // The server stopped or restarted; keep trying quietly.
    }
    window.setTimeout(check, 2000);
  }
  check();
})();
