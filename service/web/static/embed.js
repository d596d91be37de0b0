/*
 * Contact form loader. Paste where the form should appear:
 *   <div data-contact-form><a href="https://FORMS-HOST/contact">Send us a message</a></div>
 *   <script src="https://FORMS-HOST/embed.js" async></script>
 * Each [data-contact-form] element's contents (the link, for visitors without JavaScript) are
 * replaced by an iframe of the form, which this loader keeps as tall as the form inside it.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !script.src) { return; }
  var formUrl = new URL("contact", script.src);
  var formOrigin = formUrl.origin;
  var registry = window.__contactFormLoaders = window.__contactFormLoaders || {};
  if (registry[formOrigin]) { registry[formOrigin](); return; }  // pasted twice: mount only
  var frames = [];

  function mount(holder) {
    if (holder.getAttribute("data-contact-form-mounted")) { return; }
    holder.setAttribute("data-contact-form-mounted", "1");
    var src = new URL(formUrl.href);
    // The page the visitor was reading, so the clinic knows which article they wrote from.
    src.searchParams.set("page", window.location.href.split("#")[0]);
    var frame = document.createElement("iframe");
    frame.src = src.href;
    frame.title = holder.getAttribute("data-title") || "Contact form";
    frame.style.display = "block";
    frame.style.width = "100%";
    frame.style.border = "0";
    frame.style.height = "720px";  // until the form reports its height
    holder.textContent = "";
    holder.appendChild(frame);
    frames.push(frame);
  }

  function mountAll() {
    var holders = document.querySelectorAll("[data-contact-form]");
    for (var i = 0; i < holders.length; i++) { mount(holders[i]); }
  }

  window.addEventListener("message", function (event) {
    // Only the form's own origin may resize its frames, and only the frame that sent it.
    if (event.origin !== formOrigin) { return; }
    var data = event.data;
    if (!data || data.type !== "contact-form:height" || typeof data.height !== "number") { return; }
    for (var i = 0; i < frames.length; i++) {
      var frame = frames[i];
      if (frame.contentWindow !== event.source) { continue; }
      frame.style.height = Math.max(100, Math.min(Math.ceil(data.height), 10000)) + "px";
      // After a submission (errors or thanks) bring the top of the form into view.
      if (data.reveal) {
        var top = frame.getBoundingClientRect().top;
        if (top < 0 || top > window.innerHeight * 0.8) { frame.scrollIntoView({ block: "start" }); }
      }
    }
  });

  registry[formOrigin] = mountAll;
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", mountAll);
  } else {
    mountAll();
  }
})();
