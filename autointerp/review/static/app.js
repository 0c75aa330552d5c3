// Keyboard shortcuts and the remembered reviewer name. The pages work without this file.
(function () {
  "use strict";
  var KEY = "autointerp.reviewer";

  function typing(event) {
    var t = event.target;
    return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
  }

  function go(url) { if (url) { window.location.href = url; } }

  function syncReviewer() {
    var input = document.getElementById("reviewer");
    var saved = window.localStorage ? window.localStorage.getItem(KEY) : null;
    if (!input) {  // the list page: bulk actions and undo carry the remembered name
      if (saved) { document.querySelectorAll(".reviewer-copy").forEach(function (el) { el.value = saved; }); }
      return;
    }
    if (saved) { input.value = saved; }
    var copy = function () {
      document.querySelectorAll(".reviewer-copy").forEach(function (el) { el.value = input.value; });
      if (window.localStorage) { window.localStorage.setItem(KEY, input.value); }
    };
    input.addEventListener("input", copy);
    copy();
  }

  function featurePage(event) {
    var nav = document.getElementById("nav");
    if (!nav) { return false; }
    var forms = { a: "form-accept", r: "form-reject" };
    if (event.key === "j") { go(nav.dataset.next); }
    else if (event.key === "k") { go(nav.dataset.prev); }
    else if (event.key === "n") { go(nav.dataset.nextUnreviewed); }
    else if (event.key === "u") { go(nav.dataset.list); }
    else if (forms[event.key]) {
      var form = document.getElementById(forms[event.key]);
      if (form) { form.requestSubmit(); }
    } else if (event.key === "e") {
      var box = document.getElementById("edit-box");
      if (box) { box.open = true; document.getElementById("edited-text").focus(); event.preventDefault(); }
    } else { return false; }
    return true;
  }

  function listPage(event) {
    var rows = Array.prototype.slice.call(document.querySelectorAll("#feature-table tr.row"));
    if (!rows.length) { return false; }
    var at = rows.findIndex(function (r) { return r.classList.contains("selected"); });
    if (event.key === "j" || event.key === "k") {
      if (at >= 0) { rows[at].classList.remove("selected"); }
      at = event.key === "j" ? Math.min(rows.length - 1, at + 1) : Math.max(0, at - 1);
      rows[at].classList.add("selected");
      rows[at].scrollIntoView({ block: "nearest" });
    } else if (event.key === "Enter" || event.key === "o") {
      if (at >= 0) { go(rows[at].dataset.href); }
    } else if (event.key === "n") {
      var link = document.getElementById("next-unreviewed");
      if (link) { go(link.getAttribute("href")); }
    } else { return false; }
    return true;
  }

  document.addEventListener("keydown", function (event) {
    if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (event.key === "?") {
      window.alert("j / k: next / previous\nn: next unreviewed\na: accept\nr: reject\ne: edit or note\nu: back to the list");
      return;
    }
    if (featurePage(event) || listPage(event)) { event.preventDefault(); }
  });

  document.addEventListener("DOMContentLoaded", syncReviewer);
})();
