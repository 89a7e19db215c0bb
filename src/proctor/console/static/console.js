// The console's live tables: every 2 s, /console/live.json, each table rebuilt with
// text nodes only (nothing the log holds is ever parsed as HTML).
"use strict";
(() => {
  const PERIOD_MS = 2000;
  // Bidirectional controls shown as their code point, never applied (as on the server:
  // proctor.console.web.visible), so that no name, path or reason reads as another.
  const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
  const visible = (text) => String(text).replace(BIDI, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  const el = (tag, text, cls) => {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = visible(text);
    if (cls) node.className = cls;
    return node;
  };
  const act = (action, target, label) => {
    const a = el("a", label, "button");
    a.href = `/console/confirm?${new URLSearchParams({ action, target })}`;
    return a;
  };
  const timeline = (id) => {
    const a = el("a", id);
    a.href = `/lineage/executions/${encodeURIComponent(id)}`;
    return a;
  };
  const cells = (row, values) => {
    for (const v of values) {
      if (v instanceof Node) row.append(v);
      else row.append(el("td", v));
    }
  };
  const td = (children, cls) => {
    const cell = el("td", undefined, cls);
    children.forEach((c, i) => { if (i) cell.append(" "); cell.append(c); });
    return cell;
  };
  const badge = (text, good) => td([el("span", text, `badge ${good ? "ok" : "bad"}`)]);
  const fill = (name, rows, empty, columns, build) => {
    const body = document.getElementById(`rows-${name}`);
    const count = document.getElementById(`count-${name}`);
    if (!body) return;
    if (count) count.textContent = String(rows.length);
    const fresh = [];
    for (const item of rows) {
      const tr = document.createElement("tr");
      build(tr, item);
      fresh.push(tr);
    }
    if (!fresh.length && empty) {
      const tr = document.createElement("tr");
      const cell = el("td", empty, "muted");
      cell.colSpan = columns;
      tr.append(cell);
      fresh.push(tr);
    }
    // Keep the focused link's place: skip a rebuild while focus is inside this table.
    if (body.contains(document.activeElement)) return;
    body.replaceChildren(...fresh);
    label(body);
  };
  // Each cell names its column (data-label), for the narrow layout where rows stack.
  const label = (body) => {
    const names = [...body.closest("table").querySelectorAll("thead th")].map((th) => th.textContent);
    for (const tr of body.rows) {
      [...tr.cells].forEach((cell, i) => { if (!cell.colSpan || cell.colSpan === 1) cell.dataset.label = names[i] || ""; });
    }
  };
  document.querySelectorAll("table.stack tbody").forEach(label);
  const render = (data) => {
    fill("executions", data.executions, "Nothing is running.", 8, (tr, e) => cells(tr, [
      e.principal, e.action, td([e.resource], "mono"), e.zone,
      `${((e.lease_age_ms || 0) / 1000).toFixed(1)} s`, e.status, td([timeline(e.id)], "mono"),
      td([act("revoke-execution", e.id, "Revoke execution"), act("revoke-warrant", e.warrant, "Revoke warrant")], "actions"),
    ]));
    fill("approvals", data.approvals, "No approval is waiting.", 6, (tr, a) => cells(tr, [
      td([a.id], "mono"), a.principal, a.action, td([a.resource], "mono"), (a.policies || []).join(", "),
      td([act("approve", a.id, "Approve"), act("deny", a.id, "Deny")], "actions"),
    ]));
    fill("principals", data.principals, "", 5, (tr, p) => cells(tr, [
      p.name, badge(p.status, p.status === "active"), p.zone,
      td([Object.keys(p.attrs).sort().map((k) => `${k}=${p.attrs[k]}`).join(", ")], "mono"),
      td([p.status === "active" ? act("suspend", p.name, "Suspend") : act("resume", p.name, "Resume"),
        act("revoke-principal", p.name, "Revoke")], "actions"),
    ]));
    fill("decisions", data.decisions, "No decision among the log's newest entries.", 7, (tr, d) => {
      const link = el("a", d.index);
      link.href = `/lineage?index=${encodeURIComponent(d.index)}`;
      cells(tr, [td([link]), d.time, d.principal, d.action, td([d.resource], "mono"),
        badge(d.decision, d.decision === "allow"), d.policies.join(", ")]);
    });
    const updated = document.getElementById("updated");
    if (updated) updated.textContent = `Live: refreshed ${new Date().toLocaleTimeString()}.`;
  };
  const problem = document.getElementById("live-error");
  const say = (text) => {
    if (!problem) return;
    problem.hidden = !text;
    problem.textContent = text;
  };
  let timer = 0;
  const poll = async () => {
    try {
      const answer = await fetch("/console/live.json", { cache: "no-store", credentials: "same-origin" });
      if (answer.status === 401) {
        say("Your session ended (expired, signed out, or your admin rights were withdrawn). Sign in again.");
        return; // stop polling
      }
      if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
      render(await answer.json());
      say("");
    } catch (e) {
      say(`Could not refresh: ${e.message}. Retrying.`);
    }
    timer = window.setTimeout(poll, PERIOD_MS);
  };
  timer = window.setTimeout(poll, PERIOD_MS);
  window.addEventListener("pagehide", () => window.clearTimeout(timer));
})();
