/* proctor proof viewer: the page. Reads the three inputs (typed, pasted, chosen or
 * dropped as files), runs ProctorProofs.checkReceipt or checkCheckpoint, and shows each
 * step. Everything from the receipt is shown with textContent: never parsed as HTML.
 */
(function (P) {
  "use strict";
  const $ = (id) => document.getElementById(id);

  // ?crypto=noble forces the vendored library (to test and compare both paths).
  if (new URLSearchParams(location.search).get("crypto") === "noble") P.forceNoble = true;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  async function readFile(file, target) {
    if (!file) return;
    $(target).value = await file.text();
  }

  for (const input of document.querySelectorAll("input[type=file][data-target]")) {
    input.addEventListener("change", () => readFile(input.files[0], input.dataset.target));
  }
  for (const zone of document.querySelectorAll(".drop[data-target]")) {
    zone.addEventListener("dragover", (e) => {
      e.preventDefault();
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("dragging");
      const file = e.dataTransfer && e.dataTransfer.files[0];
      if (file) readFile(file, zone.dataset.target);
    });
  }
  const useKey = $("use-server-key");
  if (useKey) useKey.addEventListener("click", () => ($("log-key").value = useKey.dataset.key));

  function show(report, ms, kind) {
    const steps = $("steps");
    steps.replaceChildren();
    for (const s of report.steps) {
      const li = el("li", undefined, s.ok ? "ok" : "bad");
      li.dataset.step = String(s.number);
      li.dataset.ok = String(s.ok);
      li.append(el("span", `${s.ok ? "✓" : "✗"} ${s.number}. `), el("span", s.name, "step-name"), el("span", `: ${s.detail}`));
      if (!s.ok) li.setAttribute("aria-label", `step ${s.number}, ${s.name}, failed: ${s.detail}`);
      steps.append(li);
    }
    if (kind === "receipt") {
      const done = new Set(report.steps.map((s) => s.number));
      for (const [n, name] of Object.entries(P.STEP_NAMES)) {
        if (!done.has(Number(n))) steps.append(el("li", `${n}. ${name}: not checked`, "skipped"));
      }
    }
    const verdict = $("verdict");
    const what = kind === "receipt" ? `Receipt${report.execution ? " of " + report.execution : ""}` : "Checkpoint";
    const failed = report.steps.find((s) => !s.ok);
    verdict.textContent = report.ok ? `${what}: valid` : `${what}: INVALID — step ${failed.number} (${failed.name}) failed`;
    verdict.className = "notice " + (report.ok ? "ok" : "bad");
    verdict.dataset.ok = String(report.ok);
    verdict.dataset.failed = report.ok ? "" : String(failed.number);
    const timing = $("timing");
    timing.textContent = `Checked in ${ms.toFixed(1)} ms in this browser (${P.cryptoPath() === "webcrypto" ? "WebCrypto" : "vendored @noble/ed25519 and @noble/hashes"}).`;
    timing.dataset.ms = ms.toFixed(2);
    timing.dataset.crypto = P.cryptoPath() || "";
    $("result").hidden = false;
    const events = $("events");
    events.replaceChildren();
    for (const e of report.events || []) {
      const tr = el("tr");
      const pre = el("pre", JSON.stringify(e.data, null, 1));
      const cell = el("td");
      cell.append(pre);
      tr.append(el("td", String(e.index)), el("td", String(e.data.type)), el("td", String(e.data.time)), cell);
      events.append(tr);
    }
    $("events-section").hidden = !(report.events && report.events.length);
    // The verdict gets the focus: a keyboard or screen-reader user lands on it.
    verdict.focus();
  }

  // Bad input (as proctor verify's exit 2): nothing was checked.
  function refuse(message) {
    const verdict = $("verdict");
    verdict.textContent = message;
    verdict.className = "notice bad";
    verdict.dataset.ok = "false";
    verdict.dataset.failed = "";
    $("steps").replaceChildren();
    $("timing").textContent = "";
    $("events").replaceChildren();
    $("events-section").hidden = true;
    $("result").hidden = false;
    verdict.focus();
  }

  $("verify-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const button = $("verify");
    button.disabled = true;
    try {
      await P.probe().catch(() => null);
      const text = $("document").value;
      const key = $("log-key").value;
      const policy = $("witness-policy").value.trim();
      const receipt = text.trimStart().startsWith("{");
      const t0 = performance.now();
      const report = receipt ? await P.checkReceipt(text, key, policy) : await P.checkCheckpoint(text, key, policy);
      if (report.error) refuse(`Not checked: the witness policy does not parse: ${report.error}`);
      else show(report, performance.now() - t0, receipt ? "receipt" : "checkpoint");
    } finally {
      button.disabled = false;
    }
  });
})(globalThis.ProctorProofs);
