// The query builder: "preview" posts the form (with the CSRF header) and shows the accuracy the
// gateway expects; nothing is stored or charged. Household queries offer only household attributes.
"use strict";
(function () {
  var form = document.getElementById("builder");
  if (!form) { return; }
  var box = document.getElementById("preview");
  function restrictGroups() {
    var household = form.elements.unit.value === "household";
    Array.prototype.forEach.call(form.elements.group_by.options, function (option) {
      var allowed = !household || option.getAttribute("data-household") === "1";
      option.disabled = !allowed;
      if (!allowed) { option.selected = false; }
    });
  }
  form.elements.unit.addEventListener("change", restrictGroups);
  restrictGroups();
  document.getElementById("preview-button").addEventListener("click", function () {
    box.classList.remove("hidden");
    box.setAttribute("aria-busy", "true");
    fetch(form.getAttribute("data-preview"), {
      method: "POST",
      credentials: "same-origin",
      headers: { "x-csrf-token": window.fedgate.csrf() },
      body: new FormData(form),
    }).then(function (response) {
      return response.text().then(function (html) {
        // The fragment is rendered and escaped by the server's templates.
        var doc = new DOMParser().parseFromString(html, "text/html");
        var content = doc.querySelector("main") || doc.body;
        box.replaceChildren.apply(box, Array.prototype.slice.call(content.childNodes));
        box.setAttribute("data-status", String(response.status));
        box.removeAttribute("aria-busy");
      });
    });
  });
})();
