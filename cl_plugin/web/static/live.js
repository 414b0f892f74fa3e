// The dashboard's one script: live figures on the overview, keyboard shortcuts on the annotation page.
(function () {
  "use strict";

  var live = document.getElementById("sections");
  if (live) {
    var version = live.getAttribute("data-version");
    var count = document.getElementById("interaction-count");
    var status = document.getElementById("live-status");
    var poll = function () {
      var url = live.getAttribute("data-live") + "&have=" + encodeURIComponent(version);
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.json();
        })
        .then(function (body) {
          count.textContent = body.count.toLocaleString("en-US");
          if (body.html !== undefined) {
            live.innerHTML = body.html; // server-rendered, every value escaped
            version = body.version;
            live.setAttribute("data-version", version);
          }
          status.textContent = body.built_at === null
            ? "reading the figures of this view"
            : "figures read " + new Date(body.built_at * 1000).toISOString().slice(0, 19).replace("T", " ") +
              " UTC; updated as interactions arrive";
        })
        .catch(function (error) { status.textContent = "live updates paused: " + error.message; })
        .finally(function () { window.setTimeout(poll, 1000); });
    };
    window.setTimeout(poll, 1000);
  }

  var keyed = document.querySelectorAll("[data-key]");
  if (keyed.length) {
    document.addEventListener("keydown", function (event) {
      if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) { return; }
      if (event.target.closest("input, textarea, select")) { return; }
      var key = event.key.toLowerCase();
      for (var i = 0; i < keyed.length; i++) {
        if (keyed[i].getAttribute("data-key") === key) {
          event.preventDefault();
          keyed[i].click();
          return;
        }
      }
    });
  }
})();
