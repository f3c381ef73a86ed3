// Live progress of a campaign: polls its status.json and updates the counts in place; reloads
// the page when the campaign changes state (so the right buttons show). Without JavaScript the
// page works the same, by reloading it.
(function () {
  "use strict";
  var section = document.getElementById("progress");
  if (!section || !section.dataset.statusUrl) { return; }
  var url = section.dataset.statusUrl;
  var shownState = section.dataset.state;
  var finished = ["done", "cancelled"];
  var same = ["scheduled", "sending"];

  function show(status) {
    section.querySelectorAll("[data-count]").forEach(function (cell) {
      var key = cell.getAttribute("data-count");
      if (key in status) { cell.textContent = String(status[key]); }
    });
    var bar = section.querySelector("progress");
    if (bar) {
      bar.max = status.total || 1;
      bar.value = status.sent + status.failed + status.bounced + status.skipped;
    }
  }

  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (answer) {
        if (!answer.ok) { throw new Error("status " + answer.status); }
        return answer.json();
      })
      .then(function (status) {
        show(status);
        var state = section.querySelector("[data-field=state]");
        if (state) { state.textContent = status.state; }
        // Scheduled and sending offer the same buttons; any other change of state loads the
        // page afresh (without the last action's notice), so that the right ones show.
        if (status.state !== shownState && !(same.indexOf(status.state) >= 0 && same.indexOf(shownState) >= 0)) {
          window.location.replace(window.location.pathname);
          return;
        }
        if (finished.indexOf(status.state) < 0) { window.setTimeout(poll, 1000); }
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  }

  if (finished.indexOf(shownState) < 0) { window.setTimeout(poll, 1000); }
}());
