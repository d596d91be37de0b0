// Progressive enhancement for the contact form: no double submission, focus on errors.
(function () {
  "use strict";
  var form = document.querySelector("form[data-contact-form]");
  var summary = document.getElementById("error-summary");
  if (summary) { summary.focus(); }
  if (!form) { return; }
  form.addEventListener("submit", function (event) {
    var button = form.querySelector("button[type=submit]");
    if (form.dataset.submitting === "1") { event.preventDefault(); return; }
    form.dataset.submitting = "1";
    if (button) { button.disabled = true; }
    var status = form.querySelector(".status");
    if (status) { status.textContent = "Sending your message\u2026"; }
  });
})();
