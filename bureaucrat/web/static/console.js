// bureaucrat console: select an activity on the diagram, and follow the instance live.
// No framework, nothing fetched from elsewhere: the instance page polls its own JSON endpoint
// for the instance's version and, when it changed, swaps in the parts of the page that change.
(function () {
  "use strict";
  var POLL_MS = 1000;
  var IDLE_POLL_MS = 5000; // a finished instance changes only when an operator reruns it
  var FINISHED = ["completed", "faulted", "terminated", "broken"];
  var selected = null;

  function select(id) {
    selected = id;
    document.querySelectorAll("svg.diagram .activity").forEach(function (g) {
      g.classList.toggle("selected", g.getAttribute("data-activity") === id);
    });
    document.querySelectorAll("input.selected-activity").forEach(function (input) {
      input.value = id || "";
    });
    document.querySelectorAll(".selected-note").forEach(function (note) {
      note.textContent = id ? note.getAttribute("data-some") + id : note.getAttribute("data-none");
    });
    applyStatus(null);
    var note = document.getElementById("selection-note");
    if (note && id) note.textContent = "Selected: " + id;
  }

  // Each operation's form names the statuses in which the engine applies it (data-when).
  var currentStatus = null;
  function applyStatus(status) {
    if (status) currentStatus = status;
    document.querySelectorAll("form[data-when]").forEach(function (form) {
      var button = form.querySelector("button");
      var applies = (form.getAttribute("data-when") || "").split(" ").indexOf(currentStatus) >= 0;
      var needsActivity = form.action.endsWith("/rerun") && !selected;
      if (button) button.disabled = !applies || needsActivity;
    });
  }

  function onDiagram(event) {
    if (event.target.closest("a")) return; // a link to a subprocess
    var g = event.target.closest("svg.diagram .activity");
    if (!g) return;
    var id = g.getAttribute("data-activity");
    select(selected === id ? null : id);
  }

  function onKey(event) {
    if (event.key !== "Enter" && event.key !== " ") return;
    var g = event.target.closest && event.target.closest("svg.diagram .activity");
    if (!g) return;
    event.preventDefault();
    select(g.getAttribute("data-activity"));
  }

  function confirmForms() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
      });
    });
  }

  function setLive(state, text) {
    var indicator = document.getElementById("live-indicator");
    if (!indicator) return;
    indicator.className = "live-state " + state;
    indicator.querySelector(".live-text").textContent = text;
  }

  function follow(root) {
    var version = root.getAttribute("data-version");
    var versionUrl = root.getAttribute("data-version-url");
    var fragmentsUrl = root.getAttribute("data-fragments-url");
    var busy = false;

    function swap(html) {
      var doc = new DOMParser().parseFromString(html, "text/html");
      doc.querySelectorAll("[data-live]").forEach(function (fresh) {
        var old = document.getElementById(fresh.id);
        if (!old) return;
        var scroll = old.querySelector(".diagram-wrap");
        var left = scroll ? scroll.scrollLeft : 0;
        old.replaceWith(document.importNode(fresh, true));
        var wrap = document.getElementById(fresh.id).querySelector(".diagram-wrap");
        if (wrap) wrap.scrollLeft = left;
      });
      if (selected) select(selected);
    }

    var status = root.getAttribute("data-status");

    var eager = Date.now() + 10000; // just after a load (an operation, say) changes come fast

    function later() {
      var idle = FINISHED.indexOf(status) >= 0 && Date.now() > eager;
      setTimeout(tick, idle ? IDLE_POLL_MS : POLL_MS);
    }

    function tick() {
      if (busy || document.hidden) {
        later();
        return;
      }
      busy = true;
      fetch(versionUrl, { headers: { Accept: "application/json" }, cache: "no-store" })
        .then(function (response) {
          if (!response.ok) throw new Error(response.status);
          return response.json();
        })
        .then(function (now) {
          setLive("", "live");
          status = now.status;
          applyStatus(now.status);
          if (String(now.version) === version) return null;
          return fetch(fragmentsUrl, { cache: "no-store" }).then(function (response) {
            if (!response.ok) throw new Error(response.status);
            return response.text().then(function (html) {
              swap(html);
              version = String(now.version);
              root.setAttribute("data-version", version);
            });
          });
        })
        .catch(function () {
          setLive("lost", "reconnecting");
        })
        .then(function () {
          busy = false;
          later();
        });
    }

    later();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.addEventListener("click", onDiagram);
    document.addEventListener("keydown", onKey);
    confirmForms();
    var root = document.getElementById("instance");
    if (root) {
      applyStatus(root.getAttribute("data-status"));
      follow(root);
    }
  });
})();
