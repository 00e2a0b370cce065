// repmon war room: live updates over Server-Sent Events, and the responders' actions.
// Plain JavaScript, no build step, nothing loaded from outside. The server renders every part of a
// page; an event only tells this script which part to fetch again, so a missed or reordered event
// can never leave the page wrong (and on "reset" it simply fetches again).
(function () {
  "use strict";
  var body = document.body;
  var live = body.dataset.live;
  var incidentId = body.dataset.incident;
  var entityKey = body.dataset.entity;
  var status = document.getElementById("live-status");
  var timer = null;

  function setStatus(text, cls) {
    if (status) { status.textContent = text; status.className = "live-status " + (cls || ""); }
  }

  function refresh() {
    if (!live || timer) return;
    timer = setTimeout(function () {
      timer = null;
      fetch(window.location.pathname + "?part=1", { credentials: "same-origin" }).then(function (r) {
        if (!r.ok) return;
        return r.text().then(function (html) {
          var target = document.getElementById("live");
          // keep what the responder is typing: only swap when no input of the part has focus
          var focused = document.activeElement;
          if (focused && target.contains(focused) && focused.tagName === "INPUT" && focused.value) { refresh(); return; }
          target.innerHTML = html;
          body.dataset.refreshed = String(Date.now());
        });
      });
    }, entityKey ? 1000 : 50);  // an entity page is heavier (every trust window): at most once a second
  }

  function concerns(type, data) {
    if (type === "reset") return true;
    if (incidentId) return data.incident_id === incidentId;
    if (entityKey) return data.entity === entityKey || (data.entity || "").indexOf(entityKey + "/") === 0;
    return type === "incident" || type === "action";
  }

  if (live) {
    var es = new EventSource("/api/v1/events");
    es.onopen = function () { setStatus("live", "ok"); };
    es.onerror = function () { setStatus("reconnecting", "bad"); };
    ["incident", "action", "signal", "reset"].forEach(function (type) {
      es.addEventListener(type, function (ev) {
        var data = {};
        try { data = JSON.parse(ev.data); } catch (e) { data = {}; }
        if (concerns(type, data)) refresh();
      });
    });
  }

  function post(url, payload, method) {
    var out = document.getElementById("action-result");
    return fetch(url, {
      method: method || "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Repmon-Request": "1" },
      body: JSON.stringify(payload)
    }).then(function (r) {
      return r.json().then(function (j) {
        if (out) out.textContent = r.ok ? ("done: " + (j.action || "silence " + (j.id || ""))) : ("refused: " + j.reason);
        if (r.ok) refresh();
        return r.ok;
      });
    });
  }

  document.addEventListener("click", function (ev) {
    var b = ev.target.closest("button[data-action]");
    if (!b) return;
    ev.preventDefault();
    // the reason typed beside the buttons goes with the action (optional), then the box is cleared
    var why = document.getElementById("action-why");
    post("/api/v1/incidents/" + encodeURIComponent(b.dataset.incidentId) + "/actions", { action: b.dataset.action, why: why ? why.value : "" })
      .then(function (ok) { if (ok && why) why.value = ""; });
  });

  document.addEventListener("submit", function (ev) {
    var f = ev.target;
    if (f.dataset.action) {
      ev.preventDefault();
      var p = { action: f.dataset.action, why: (f.elements.why || {}).value || "" };
      if (f.elements.owner) p.owner = f.elements.owner.value;
      post("/api/v1/incidents/" + encodeURIComponent(f.dataset.incidentId) + "/actions", p);
    } else if (f.dataset.silence) {
      ev.preventDefault();
      var what = f.elements.what.value.split(":");
      var s = { duration_seconds: Number(f.elements.duration_seconds.value), comment: f.elements.comment.value };
      if (what[0] === "route") { s.route = what.slice(1).join(":"); }
      else if (what[0] === "signal") { s.signal = what[1]; s.entity = f.elements.what.options[0].value.split(":").slice(1).join(":"); }
      else { s.entity = what.slice(1).join(":"); }
      post("/api/v1/silences", s);
    }
  });

  document.addEventListener("change", function (ev) {
    var sel = ev.target.closest("select.relabel");
    if (!sel || !sel.value) return;
    post("/api/v1/mentions/" + encodeURIComponent(sel.dataset.eventId) + "/sentiment", { label: sel.value, why: "" })
      .then(function (ok) { if (ok) { sel.disabled = true; sel.title = "corrected to " + sel.value; } });
  });

  // the mention stream: one frame a second from the server, at most a few hundred rows in the page
  var stream = document.getElementById("stream");
  if (stream) {
    var params = new URLSearchParams(window.location.search);
    ["entity", "sentiment", "aspect", "lang", "source"].forEach(function (k) { if (!params.get(k)) params.delete(k); });
    var ms = new EventSource("/api/v1/stream/mentions?" + params.toString());
    var rate = document.getElementById("stream-rate");
    ms.onopen = function () { setStatus("live", "ok"); };
    ms.onerror = function () { setStatus("reconnecting", "bad"); };
    ms.addEventListener("mentions", function (ev) {
      var f = JSON.parse(ev.data);
      rate.textContent = f.matched + " matching mentions in the last second, " + f.shown + " shown";
      f.items.forEach(function (m) {
        var li = document.createElement("li");
        li.className = "mention sent-" + (m.sentiment || "none");
        var head = document.createElement("span");
        head.className = "mhead";
        head.textContent = [m.occurred_at.slice(0, 16), m.entity || "-", m.sentiment || "-", m.lang || "-", m.source].join(" · ") + (m.aspects.length ? " · " + m.aspects.join(", ") : "");
        var link = /^https?:\/\//i.test(m.url || "");  // a source's javascript: URL must not run here
        var text = document.createElement(link ? "a" : "span");
        if (link) { text.href = m.url; text.rel = "noopener noreferrer"; }
        text.textContent = m.text;
        li.appendChild(head); li.appendChild(text);
        if (m.text) {
          // a responder's correction goes to the labels topic (the sentiment model learns it)
          var fix = document.createElement("select");
          fix.className = "relabel";
          fix.dataset.eventId = m.event_id;
          ["correct sentiment", "negative", "neutral", "positive"].forEach(function (v, i) {
            var o = document.createElement("option");
            o.value = i ? v : ""; o.textContent = v; o.disabled = v === m.sentiment;
            fix.appendChild(o);
          });
          li.appendChild(fix);
        }
        stream.insertBefore(li, stream.firstChild);
      });
      while (stream.children.length > 300) stream.removeChild(stream.lastChild);
    });
  }
})();
