// A job's page: polls the job's status once a second and moves the progress bar; reloads the page
// when the job reaches a final state, so the figures (rendered by the server) appear.
"use strict";
(function () {
  var box = document.getElementById("job");
  if (!box || box.getAttribute("data-final") === "1") { return; }
  var url = box.getAttribute("data-status-url");
  var bar = document.getElementById("job-progress");
  var state = document.getElementById("job-state");
  function label(name) {
    var el = box.querySelector('[data-label="' + name + '"]');
    return el ? el.textContent : name;
  }
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (s) {
        bar.max = Math.max(1, s.steps_total);
        bar.value = s.steps_done;
        document.getElementById("job-steps").textContent = s.steps_done + " / " + s.steps_total;
        document.getElementById("job-step").textContent = s.current_step || "";
        state.textContent = label(s.state);
        state.setAttribute("data-state", s.state);
        state.className = "state state-" + s.state;
        if (s.final) { window.location.reload(); } else { window.setTimeout(poll, 1000); }
      }, function () { window.setTimeout(poll, 3000); });
  }
  window.setTimeout(poll, 500);
})();
