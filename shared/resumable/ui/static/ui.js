// resumable ui: live updates, confirmations and lazy tracebacks. No dependencies.
"use strict";

// Every form with data-confirm asks first (forms inside live regions are replaced, so
// the listener sits on the document).
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.dataset ? form.dataset.confirm : null;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

// A failed step's traceback is fetched when its details are first opened.
document.addEventListener("toggle", (event) => {
  const details = event.target;
  if (!details.open || !details.dataset || !details.dataset.traceback || details.dataset.loaded) {
    return;
  }
  details.dataset.loaded = "1";
  const pre = details.querySelector("pre.traceback");
  if (!pre || pre.textContent.trim()) {
    return;
  }
  fetch(details.dataset.traceback, { credentials: "same-origin" })
    .then((response) => (response.ok ? response.text() : ""))
    .then((text) => {
      pre.textContent = text || "(no traceback in the logs found here: see Cloud Logging)";
    })
    .catch(() => {});
}, true);

// A run page follows its run with server-sent events until the run finishes.
function followRun(region) {
  const source = new EventSource(region.dataset.events);
  source.addEventListener("run", (event) => {
    const open = new Set(
      Array.from(region.querySelectorAll("details[open]")).map((d) => d.closest("[data-step]")?.dataset.step)
    );
    region.innerHTML = event.data;
    region.querySelectorAll("details").forEach((d) => {
      const step = d.closest("[data-step]")?.dataset.step;
      if (step && open.has(step)) {
        d.open = true;
      }
    });
    document.dispatchEvent(new CustomEvent("resumable:run-updated"));
  });
  source.addEventListener("end", () => source.close());
}

// The runs table refreshes itself while auto-refresh is ticked.
function refreshRuns(table) {
  const box = document.getElementById("auto-refresh");
  setInterval(() => {
    if (box && !box.checked) {
      return;
    }
    fetch(table.dataset.refresh, { credentials: "same-origin" })
      .then((response) => (response.ok ? response.text() : null))
      .then((html) => {
        if (html !== null) {
          table.innerHTML = html;
        }
      })
      .catch(() => {});
  }, 4000);
}

document.addEventListener("DOMContentLoaded", () => {
  const region = document.getElementById("run-live");
  if (region && region.dataset.events) {
    followRun(region);
  }
  const table = document.getElementById("runs-table");
  if (table && table.dataset.refresh) {
    refreshRuns(table);
  }
});
