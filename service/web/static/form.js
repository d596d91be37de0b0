// Progressive enhancement for the form: no double submission, focus on errors, and, inside an
// iframe placed by embed.js, telling the host page how tall the form is.
(function () {
  "use strict";
  var summary = document.getElementById("error-summary");
  if (summary) {
    summary.focus();
    // A summary link moves focus to its field; the captcha's to the widget's checkbox, or for a
    // third-party widget to its frame (the checkbox inside is out of reach). Failing both, the
    // link's own target, the captcha's box, takes focus.
    summary.addEventListener("click", function (event) {
      var link = event.target.closest("a[href^='#']");
      var target = link && document.getElementById(link.getAttribute("href").slice(1));
      if (!target) { return; }
      var control = target.matches("input, textarea") ? target
        : target.querySelector("input[type=checkbox]") || target.querySelector("iframe");
      if (!control) { return; }
      event.preventDefault();
      control.focus();
      control.scrollIntoView({ block: "center" });
    });
  }
  linkCaptchaError();
  keepCaptchaVerified();

  var form = document.querySelector("form[data-contact-form]");
  if (form) {
    form.addEventListener("submit", function (event) {
      if (form.getAttribute("data-submitting")) { event.preventDefault(); return; }
      form.setAttribute("data-submitting", "1");
      var button = form.querySelector("button[type=submit]");
      if (button) { button.disabled = true; }
      var status = form.querySelector(".status");
      if (status) { status.textContent = "Sending your message\u2026"; }
    });
    // Back from the thank-you page restores this page as it was: make it usable again.
    window.addEventListener("pageshow", function (event) {
      if (!event.persisted) { return; }
      form.removeAttribute("data-submitting");
      var button = form.querySelector("button[type=submit]");
      if (button) { button.disabled = false; }
      var status = form.querySelector(".status");
      if (status) { status.textContent = ""; }
    });
  }

  // The widget draws its checkbox itself: tie the captcha's error text to it once it exists.
  function linkCaptchaError() {
    var error = document.getElementById("altcha-error");
    if (!error || !window.customElements) { return; }
    window.customElements.whenDefined("altcha-widget").then(function () {
      var tries = 0;
      (function link() {
        var checkbox = document.querySelector("altcha-widget input[type=checkbox]");
        if (checkbox) {
          checkbox.setAttribute("aria-describedby", "altcha-error");
          checkbox.setAttribute("aria-invalid", "true");
        } else if (tries++ < 50) {
          window.setTimeout(link, 50);
        }
      })();
    });
  }

  // The widget ticks its box once it has verified itself (it starts when the form gets focus).
  // A visitor who then does what the label says and clicks the box would un-tick it: ALTCHA 3
  // treats that click as a reset, and Send would say the captcha is not checked. A click on a
  // verified box is kept from the widget, so the box stays ticked. (A page that the Back button
  // restores from the browser's cache, its answer perhaps expired, the widget resets itself.)
  function keepCaptchaVerified() {
    var widget = document.querySelector("altcha-widget");
    if (!widget) { return; }
    document.addEventListener("click", function (event) {
      if (typeof widget.getState !== "function" || widget.getState() !== "verified") { return; }
      var path = event.composedPath ? event.composedPath() : [];
      var box = path[0];
      if (path.indexOf(widget) >= 0 && box && box.tagName === "INPUT" && box.type === "checkbox") {
        event.preventDefault();
      }
    }, true);
  }

  if (window.parent === window || !window.ResizeObserver) { return; }
  // After a post (errors or thanks) the host page should bring the form into view.
  var reveal = !!(summary || document.querySelector("[data-reveal]"));
  function report() {
    // Only the height is sent, so any host may hear it; embed.js checks that it came from us.
    var height = document.documentElement.getBoundingClientRect().height;
    window.parent.postMessage({ type: "contact-form:height", height: height, reveal: reveal }, "*");
    reveal = false;
  }
  new ResizeObserver(report).observe(document.documentElement);
})();
