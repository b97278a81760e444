// Riposte console: the only script. It never builds HTML from data: it swaps in parts of a page
// the server rendered (and escaped), and asks before destructive actions.
(function () {
  "use strict";

  // Live updates: every few seconds, fetch this page again and swap the parts marked
  // `data-live` (by id) that changed. Forms live outside those parts, so nothing being typed
  // is lost. A hidden tab does not poll.
  var INTERVAL_MS = 2000;
  function liveParts() {
    return document.querySelectorAll("[data-live][id]");
  }
  function refresh() {
    if (document.hidden || liveParts().length === 0) {
      return;
    }
    fetch(window.location.href, {
      credentials: "same-origin",
      headers: { "X-Riposte-Live": "1" },
      redirect: "error",
    })
      .then(function (response) {
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html === null) {
          return;
        }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        liveParts().forEach(function (part) {
          var next = fresh.getElementById(part.id);
          if (next && next.innerHTML !== part.innerHTML) {
            part.innerHTML = next.innerHTML;
          }
        });
      })
      .catch(function () {
        // Offline, signed out, or the server restarting: try again next time.
      });
  }
  window.setInterval(refresh, INTERVAL_MS);

  // Destructive forms carry `data-confirm` with the question to ask.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var submitter = event.submitter;
    var question =
      (submitter && submitter.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });
})();
