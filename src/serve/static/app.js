// The live view of a run: the server streams the journal's new events (server-sent events);
// on each, the timeline is fetched again and swapped in, and the event's line is added to the
// log. No inline script anywhere: the Content-Security-Policy allows only this file.
"use strict";
(function () {
  const box = document.getElementById("timeline");
  if (!box || !box.dataset.live) return;
  const log = document.getElementById("log");
  let pending = false;
  async function refresh() {
    if (pending) return;
    pending = true;
    try {
      const res = await fetch(box.dataset.timeline, { credentials: "same-origin" });
      if (res.ok) box.innerHTML = await res.text();
      const table = box.querySelector("table");
      const status = document.getElementById("run-status");
      if (table && status) {
        status.textContent = table.dataset.status;
        status.className = "status " + table.dataset.status;
      }
    } finally {
      pending = false;
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
    // The run stopped: the whole page again (its gate, its actions).
    window.location.reload();
  });
})();
