// flowz dashboard: confirmations for actions, and live parts of a page by server-sent events.
"use strict";
(function () {
  document.addEventListener("submit", function (event) {
    const form = event.target;
    const question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  const url = document.body.getAttribute("data-live-url");
  if (!url || !window.EventSource) return;
  const indicator = document.getElementById("live-state");
  const source = new EventSource(url);
  source.onopen = function () { indicator && indicator.classList.add("on"); };
  source.onerror = function () { indicator && indicator.classList.remove("on"); };
  source.addEventListener("fragment", function (event) {
    const message = JSON.parse(event.data);
    const target = document.querySelector('[data-live="' + message.key + '"]');
    if (!target) return;
    // Keep what the reader opened (details) and where the focus is across the update.
    const opened = new Set();
    target.querySelectorAll("details[open]").forEach(function (d, i) {
      opened.add(detailsKey(d, i));
    });
    const closed = new Set();
    target.querySelectorAll("details:not([open])").forEach(function (d, i) {
      closed.add(detailsKey(d, i));
    });
    if (target.contains(document.activeElement) && document.activeElement.tagName !== "BODY") return;
    target.innerHTML = message.html;
    target.querySelectorAll("details").forEach(function (d, i) {
      const key = detailsKey(d, i);
      if (opened.has(key)) d.open = true;
      else if (closed.has(key)) d.open = false;
    });
  });
  source.addEventListener("gone", function () { source.close(); });
  // Browsers allow six connections per server: leave none open behind.
  window.addEventListener("pagehide", function () { source.close(); });

  function detailsKey(details, index) {
    const summary = details.querySelector("summary");
    const owner = details.closest("[data-node]");
    return (owner ? owner.getAttribute("data-node") : "") + "|" +
      (summary ? summary.textContent.replace(/\s+/g, " ").replace(/[0-9.]+ ?(ms|s|min|h)\b/g, "") : index);
  }
})();
