// The dashboard: one snapshot (see ops/http_server.py snapshot()) rendered into the page,
// pushed by server-sent events on /events; falls back to polling /api/snapshot.
// Read-only: it only ever sends GET requests. No libraries: it works offline.
"use strict";

(function () {
  const token = new URLSearchParams(window.location.search).get("token");
  const withToken = (path) => (token ? path + "?token=" + encodeURIComponent(token) : path);
  const $ = (id) => document.getElementById(id);

  function money(value) {
    if (value === null || value === undefined || value === "") return "-";
    const n = Number(value);
    if (!Number.isFinite(n)) return String(value);
    return n.toLocaleString("en-US", { style: "currency", currency: "USD" });
  }

  // Market times in New York time, where the sessions are (the browser's own zone may differ).
  const nyFormat = new Intl.DateTimeFormat("en-CA", {
    timeZone: "America/New_York", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
  function when(iso) {
    if (!iso) return "-";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return nyFormat.format(d).replace(",", "") + " ET";
  }

  function signClass(value) {
    const n = Number(value);
    return !Number.isFinite(n) || n === 0 ? "" : n > 0 ? "pos" : "neg";
  }

  function setText(id, text, cls) {
    const el = $(id);
    el.textContent = text === null || text === undefined ? "-" : String(text);
    if (cls !== undefined) el.className = cls;
  }

  function fillTable(id, rows, cells) {
    const body = $(id).querySelector("tbody");
    body.replaceChildren();
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = $(id).querySelectorAll("thead th").length;
      td.className = "muted";
      td.textContent = "none";
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    for (const row of rows) {
      const tr = document.createElement("tr");
      for (const [text, cls] of cells(row)) {
        const td = document.createElement("td");
        td.textContent = text === null || text === undefined ? "-" : String(text);
        if (cls) td.className = cls;
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }

  function drawCurve(points) {
    const values = points.map((p) => Number(p[1])).filter(Number.isFinite);
    const line = $("curve-line");
    if (values.length < 2) {
      line.setAttribute("points", "");
      setText("curve-range", values.length ? "one point so far" : "no equity reading yet this session");
      return;
    }
    let lo = Math.min(...values), hi = Math.max(...values);
    if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
    const step = 800 / (values.length - 1);
    line.setAttribute("points", values.map((v, i) =>
      (i * step).toFixed(1) + "," + (175 - ((v - lo) / (hi - lo)) * 170).toFixed(1)).join(" "));
    setText("curve-range", points.length + " readings, " + money(lo) + " to " + money(hi) +
      ", " + when(points[0][0]) + " to " + when(points[points.length - 1][0]));
  }

  function describe(d) {
    const parts = [d.event];
    if (d.action) parts.push(d.action);
    if (d.side) parts.push(d.side);
    if (d.qty) parts.push("qty " + d.qty);
    if (d.strategy) parts.push(d.strategy);
    if (d.confidence !== undefined) parts.push("confidence " + d.confidence);
    if (d.check) parts.push(d.check);
    if (d.reason) parts.push(d.reason);
    else if (d.reasoning) parts.push(String(d.reasoning));
    if (d.status) parts.push(d.status);
    return parts.join(" \u00b7 ");
  }

  function render(s) {
    const eq = $("equity");
    eq.textContent = money(s.equity);
    eq.dataset.value = s.equity === null ? "" : s.equity;
    setText("day-pnl", s.day_pnl === null ? "-" : money(s.day_pnl), "big " + signClass(s.day_pnl));
    setText("session-start", money(s.session_start_equity));
    setText("as-of", when(s.as_of));
    drawCurve(s.curve || []);

    const h = s.health || {};
    setText("health", h.status || "?", "pill " + (h.status || ""));
    const safety = s.safety || {};
    setText("state", safety.state + (safety.reason ? " (" + safety.reason + ")" : ""),
      String(safety.state).toLowerCase() === "active" ? "" : "warn");
    setText("breaker", safety.latched ? "LATCHED: " + (safety.latch_kind || "") + " " + (safety.latch_reason || "")
      : "armed", safety.latched ? "warn" : "");
    setText("broker", h.broker);
    setText("stream", h.stream);
    setText("cycle-age", h.last_cycle_age_s === null || h.last_cycle_age_s === undefined
      ? "none yet" : h.last_cycle_age_s.toFixed(1) + " s ago");
    const c = s.counts || {};
    setText("counts", [c.cycles, c.orders_submitted, c.fills, c.alerts].join(" / "));
    const reasons = $("reasons");
    reasons.replaceChildren();
    for (const r of h.reasons || []) {
      const li = document.createElement("li");
      li.textContent = r;
      reasons.appendChild(li);
    }

    const m = s.market || {};
    setText("market-time", when(m.now));
    setText("market-phase", m.phase);
    setText("market-next", m.next_event ? (m.waiting_for || "event") + " at " + when(m.next_event) : "-");

    fillTable("positions", s.positions || [], (p) => [
      [p.symbol], [p.qty], [money(p.unrealized_pl), signClass(p.unrealized_pl)], [p.stop],
      [p.protected ? "protected" : "UNPROTECTED", p.protected ? "pos" : "neg"]]);
    fillTable("orders", s.orders || [], (o) => [[o.symbol], [o.side], [o.type], [o.qty], [o.status], [o.client_order_id]]);
    fillTable("decisions", s.decisions || [], (d) => [[when(d.at)], [d.stage], [d.symbol], [describe(d), "wrap"]]);
    fillTable("alerts", s.alerts || [], (a) => [[when(a.at)], [a.level, "level-" + a.level], [a.title, "wrap"], [a.message, "wrap"]]);
    setText("connection", "updated " + new Date().toLocaleTimeString());
  }

  let polling = null;
  function poll() {
    fetch(withToken("api/snapshot"), { cache: "no-store" })
      .then((r) => (r.ok ? r.json() : Promise.reject(new Error("HTTP " + r.status))))
      .then(render)
      .catch((e) => setText("connection", "no answer from the daemon (" + e.message + ")"));
  }

  function connect() {
    if (!window.EventSource) {
      polling = setInterval(poll, 2000);
      poll();
      return;
    }
    const source = new EventSource(withToken("events"));
    source.addEventListener("snapshot", (e) => render(JSON.parse(e.data)));
    source.onerror = () => setText("connection", "reconnecting to the daemon...");
  }

  connect();
})();
