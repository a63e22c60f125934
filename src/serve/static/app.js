// The live view of a run: the server streams the journal's new events (server-sent events);
// on each, the timeline is fetched again and swapped in, and the event's line is added to the
// log. No inline script anywhere: the Content-Security-Policy allows only this file.
"use strict";
(function () {
  const box = document.getElementById("timeline");
  if (!box || !box.dataset.live) return;
  const log = document.getElementById("log");
  const shown = document.getElementById("run-status");
  // The status the page was rendered with. The badge follows the run; the page is rendered
  // again when a gate appears or goes (its form), and when the run ends (its actions).
  const rendered = shown ? shown.textContent : "";
  let pending = false;
  let again = false;
  async function refresh() {
    if (pending) {
      again = true;
      return;
    }
    pending = true;
    try {
      const res = await fetch(box.dataset.timeline, { credentials: "same-origin" });
      if (res.ok) box.innerHTML = await res.text();
      const table = box.querySelector("table");
      if (table && shown) {
        const now = table.dataset.status;
        shown.textContent = now;
        shown.className = "status " + now;
        if (now !== rendered && (now === "waiting_approval" || rendered === "waiting_approval")) {
          source.close();
          window.location.reload();
        }
      }
    } finally {
      pending = false;
    }
    if (again) {
      again = false;
      refresh();
    }
  }
  const source = new EventSource(box.dataset.live);
  source.addEventListener("open", refresh);
  source.addEventListener("journal", (e) => {
    const ev = JSON.parse(e.data);
    if (log) {
      const li = document.createElement("li");
      const t = document.createElement("time");
      t.textContent = ev.ts;
      li.appendChild(t);
      li.appendChild(document.createTextNode(" " + ev.event + (ev.step ? " " + ev.step : "")));
      log.appendChild(li);
    }
    refresh();
  });
  source.addEventListener("end", () => {
    source.close();
    window.location.reload();
  });
})();
