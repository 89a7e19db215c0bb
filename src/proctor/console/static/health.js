// The health page, live: the server rendered the numbers; this follows
// /health/stream (a snapshot a second) and redraws the numbers, tables and two SVG
// charts. Every value is written with textContent (never HTML). When the stream is
// refused (all slots taken) or fails for good, it polls /health.json instead.
"use strict";
(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const W = 600, H = 160, PAD_L = 44, PAD_B = 18, PAD_T = 8;
  const KEEP_MS = 5 * 60 * 1000;
  let series = [];

  const get = (obj, path) => path.split(".").reduce((o, k) => (o == null ? o : o[k]), obj);

  // As health_pages.shown formats on the server.
  // Bidirectional controls shown as their code point, never applied (as on the server).
  const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
  function shown(value, kind) {
    if (kind === "text") return String(value).replace(BIDI, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
    if (typeof value !== "number" || !Number.isFinite(value)) return "\u2014";
    if (kind === "int") return String(Math.round(value));
    if (kind === "ms" && value < 10) return value.toFixed(2);
    return value.toFixed(1);
  }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function rows(id, items, fill) {
    const body = document.getElementById(id);
    if (!body) return;
    const fresh = document.createElement("tbody");
    fresh.id = id;
    for (const item of items) {
      const tr = document.createElement("tr");
      fill(tr, item);
      fresh.appendChild(tr);
    }
    body.replaceWith(fresh);
  }

  function chart(id, lines) {
    const svg = document.getElementById(id);
    if (!svg) return;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const now = series.length ? series[series.length - 1].t : Date.now();
    const t0 = now - KEEP_MS;
    let top = 0;
    for (const [key] of lines) for (const p of series) if (typeof p[key] === "number") top = Math.max(top, p[key]);
    top = top > 0 ? top * 1.1 : 1;
    const x = (t) => PAD_L + ((t - t0) / KEEP_MS) * (W - PAD_L - 4);
    const y = (v) => H - PAD_B - (v / top) * (H - PAD_B - PAD_T);
    const add = (name, attrs, text) => {
      const el = document.createElementNS(SVG, name);
      for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
      if (text !== undefined) el.textContent = text;
      svg.appendChild(el);
      return el;
    };
    add("line", { class: "axis", x1: PAD_L, y1: H - PAD_B, x2: W, y2: H - PAD_B });
    add("line", { class: "axis", x1: PAD_L, y1: PAD_T, x2: PAD_L, y2: H - PAD_B });
    add("text", { class: "tick", x: PAD_L - 4, y: PAD_T + 10, "text-anchor": "end" }, shown(top, top < 10 ? "ms" : "rate"));
    add("text", { class: "tick", x: PAD_L - 4, y: H - PAD_B, "text-anchor": "end" }, "0");
    add("text", { class: "tick", x: PAD_L, y: H - 4 }, "5 min ago");
    add("text", { class: "tick", x: W - 4, y: H - 4, "text-anchor": "end" }, "now");
    for (const [key, cls] of lines) {
      // A gap (no decision in an interval: no percentile) breaks the line.
      let run = [];
      const flush = () => {
        if (run.length > 1) add("polyline", { class: `line ${cls}`, points: run.join(" ") });
        else if (run.length === 1) add("circle", { class: `line ${cls}`, cx: run[0].split(",")[0], cy: run[0].split(",")[1], r: 1.5 });
        run = [];
      };
      for (const p of series) {
        if (p.t < t0) continue;
        if (typeof p[key] === "number") run.push(`${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`);
        else flush();
      }
      flush();
    }
  }

  function witnesses(w) {
    const box = document.getElementById("witnesses");
    if (!box) return;
    const fresh = document.createElement("div");
    fresh.id = "witnesses";
    const note = document.createElement("p");
    fresh.appendChild(note);
    if (!w) {
      note.className = "muted";
      note.textContent = "No witnesses configured: checkpoints are signed by this log alone.";
    } else {
      note.className = `notice ${w.alarm ? "bad" : "ok"}`;
      note.textContent = `${w.alarm ? "A witness reports a fork of this log" : "No witness reports a fork"}. ` +
        `Witnessed checkpoint: ${shown(w.witnessed_size, "int")} entries (${shown(w.lag_entries, "int")} behind), ` +
        `${w.cosignatures} cosignatures.`;
      const wrap = document.createElement("div");
      wrap.className = "table-wrap";
      const table = document.createElement("table");
      const caption = document.createElement("caption");
      caption.className = "sr-only";
      caption.textContent = "Witnesses";
      const head = document.createElement("thead");
      const hr = document.createElement("tr");
      for (const title of ["Witness", "Checkpoints submitted", "Failed answers"]) {
        const th = document.createElement("th");
        th.scope = "col";
        th.textContent = title;
        hr.appendChild(th);
      }
      head.appendChild(hr);
      const body = document.createElement("tbody");
      for (const each of w.each) {
        const tr = document.createElement("tr");
        cell(tr, each.name);
        cell(tr, shown(each.submissions, "int"));
        cell(tr, shown(each.failures, "int"));
        body.appendChild(tr);
      }
      table.append(caption, head, body);
      wrap.appendChild(table);
      fresh.appendChild(wrap);
    }
    box.replaceWith(fresh);
  }

  function render(s) {
    for (const el of document.querySelectorAll("[data-field]")) {
      el.textContent = shown(get(s, el.dataset.field), el.dataset.format);
    }
    const ready = document.getElementById("ready");
    ready.className = `notice ${s.ready ? "ok" : "bad"}`;
    document.getElementById("ready-text").textContent = s.ready ? "Ready" : "Not ready";
    ready.lastElementChild.textContent = `: this governor ${s.ready ? "serves" : "refuses"} authorizations.`;
    rows("checks", Object.entries(s.checks), (tr, [name, state]) => {
      cell(tr, name);
      cell(tr, state, state === "ok" ? "ok" : "bad");
    });
    const error = document.getElementById("nodes-error");
    error.hidden = !s.nodes_error;
    error.textContent = s.nodes_error || "";
    rows("zones", s.zones || [], (tr, z) => {
      cell(tr, z.zone || "(none)");
      cell(tr, String(z.nodes));
      cell(tr, String(z.serving));
    });
    rows("nodes", s.nodes || [], (tr, n) => {
      cell(tr, n.node, "mono");
      cell(tr, n.zone || "(none)");
      cell(tr, n.status, n.status === "serving" ? "ok" : n.status === "stopped" ? "muted" : "bad");
      cell(tr, `${shown(n.heartbeat_age_ms / 1000, "s")} s ago`);
      cell(tr, String(n.lag));
      if (n.url !== undefined) cell(tr, `${n.version} ${n.url} ${n.reason}`); // an admin's view
    });
    witnesses(s.log.witnesses);
    const last = series.length ? series[series.length - 1].t : -1;
    for (const p of s.series) if (p.t > last) series.push(p);
    const cutoff = (series.length ? series[series.length - 1].t : 0) - KEEP_MS;
    series = series.filter((p) => p.t >= cutoff);
    chart("chart-rate", [["rate", "rate"]]);
    chart("chart-latency", [["p50", "p50"], ["p99", "p99"]]);
  }

  function live(text, cls) {
    const badge = document.getElementById("live");
    badge.textContent = text;
    badge.className = `badge ${cls}`;
  }

  function poll() {
    live("polling", "warn");
    const again = () => window.setTimeout(poll, 2000);
    fetch("/health.json", { cache: "no-store" })
      .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`HTTP ${r.status}`))))
      .then((s) => { render(s); again(); })
      .catch(() => { live("unreachable", "bad"); again(); });
  }

  function follow() {
    const source = new EventSource("/health/stream");
    source.addEventListener("snapshot", (e) => {
      render(JSON.parse(e.data));
      live("live", "ok");
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) poll(); // refused (429) or gone for good
      else live("reconnecting", "warn");
    });
  }

  window.addEventListener("DOMContentLoaded", () => {
    const data = document.getElementById("health-data");
    if (data) render(JSON.parse(data.dataset.snapshot));
    if ("EventSource" in window) follow(); else poll();
  });
})();
