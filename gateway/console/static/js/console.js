// The console's shared behaviour, loaded on every page (no inline scripts: the CSP forbids them).
//   fedgate.csrf()            this page's CSRF token (from <meta name="csrf-token">)
//   fedgate.postJSON(url, b)  a same-origin POST with the CSRF header; resolves to {status, body}
//   [data-action="back"]      goes back one page
//   [data-confirm="text"]     on a form: asks before submitting
"use strict";
window.fedgate = (function () {
  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }
  function postJSON(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "accept": "application/json", "x-csrf-token": csrf() },
      body: JSON.stringify(body),
    }).then(function (response) {
      return response.json().then(
        function (json) { return { status: response.status, body: json }; },
        function () { return { status: response.status, body: null }; }
      );
    });
  }
  document.addEventListener("click", function (event) {
    var target = event.target.closest("[data-action='back']");
    if (target) { event.preventDefault(); history.back(); }
  });
  document.addEventListener("submit", function (event) {
    var text = event.target.getAttribute("data-confirm");
    if (text && !window.confirm(text)) { event.preventDefault(); }
  });
  return { csrf: csrf, postJSON: postJSON };
})();
