#!/usr/bin/env python3
"""The proof viewer's verification time in the browser: a real 10-event receipt checked
by ``/proofs``' JavaScript in Debian's chromium (WebCrypto, and the vendored @noble
libraries forced), beside two yardsticks in the same run: ``proctor verify``'s
``check_receipt`` in process over the same file, and a bare WebCrypto SHA-256 loop in
the same page (as many digests as one verification computes).

Run from the repository root (chromium and Playwright as ``scripts/setup`` installs
them)::

    python bench/bench_proof_viewer.py              # 200 runs per row, about 40 s
    python bench/bench_proof_viewer.py --runs 50
    python bench/bench_proof_viewer.py --json out.json

The receipt comes from a real governor (``proctor serve`` on a temporary data
directory): ``proctor run sleep 60`` as alice, four policy pushes while it runs (four
``execution.verified`` events), then a revoke: key.declared, policy.activated, decision,
warrant.issued, execution.started, 4 x execution.verified, execution.terminated. The
target (issue 14): at most 50 ms in the browser. The first verification after the page
loads is shown on its own row (WebCrypto imports each key once and the JIT is cold).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
import httpx  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from bench.lib import pct  # noqa: E402
from gov_server import GovernorServer  # noqa: E402
from proctor.receipts import check_receipt  # noqa: E402

POLICY = REPO / "tests" / "integration" / "policies" / "run"
TARGET_MS = 50.0

_TIMED = """async ([text, key, runs, noble]) => {
  const P = globalThis.ProctorProofs;
  P.forceNoble = noble;
  P.resetCrypto();
  const times = [];
  let ok = true;
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const r = await P.checkReceipt(text, key, "");
    times.push(performance.now() - t0);
    ok = ok && r.ok;
  }
  return { times, ok, path: P.cryptoPath() };
}"""

_DIGESTS = """async ([runs, count]) => {
  const data = new Uint8Array(65);
  const times = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    for (let j = 0; j < count; j++) await crypto.subtle.digest("SHA-256", data);
    times.push(performance.now() - t0);
  }
  return times;
}"""


def receipt(server: GovernorServer, root: Path) -> Path:
    """A real 10-event receipt (see the module docstring)."""
    path = root / "receipt.json"
    args = [sys.executable, "-m", "proctor", "run", "--server", server.url, "--key", str(server.key)]
    proc = subprocess.Popen(
        [*args, "--receipt", str(path), "--", "sleep", "60"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    found = re.search(r"execution (ex_\w+) started", proc.stderr.readline())
    if found is None:
        proc.kill()
        raise SystemExit("the execution did not start")
    for _ in range(4):
        server.admin("policy", "push", str(POLICY))
    server.admin("revoke", "--execution", found.group(1))
    proc.communicate(timeout=60)
    return path


def row(name: str, times: list[float]) -> dict[str, Any]:
    """One table row: the run count and the percentiles, in ms."""
    ordered = sorted(times)
    return {
        "row": name,
        "n": len(times),
        "p50": pct(ordered, 50),
        "p95": pct(ordered, 95),
        "max": ordered[-1],
    }


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200, help="verifications per row (default 200)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    ns = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-proofs-") as tmp:
        root = Path(tmp)
        server = GovernorServer(root / "gov", policy=POLICY)
        try:
            key = httpx.get(server.url + "/v1/log/key", timeout=10).text.strip()
            text = receipt(server, root).read_text()
            events = len(json.loads(text)["events"])
            rows = []
            with sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
                try:
                    page = browser.new_page()
                    page.goto(server.url + "/proofs")
                    cold = page.evaluate(_TIMED, [text, key, 1, False])
                    webcrypto = page.evaluate(_TIMED, [text, key, ns.runs, False])
                    noble = page.evaluate(_TIMED, [text, key, max(ns.runs // 4, 10), True])
                    # One verification computes 2 hashes per leaf and one per proof step,
                    # the token digest, the bundle and commitment digests, the key IDs.
                    digests = page.evaluate(_DIGESTS, [ns.runs, 60])
                    version = browser.version
                finally:
                    browser.close()
            if not (cold["ok"] and webcrypto["ok"] and noble["ok"]):
                raise SystemExit("the receipt did not verify in the browser")
            python = []
            for _ in range(ns.runs):
                t0 = time.perf_counter()
                report = check_receipt(text, log_key=key)
                python.append((time.perf_counter() - t0) * 1000)
                if not report.ok:
                    raise SystemExit(f"proctor verify failed: {report.failed}")
            rows = [
                row("browser, WebCrypto, first after load", cold["times"]),
                row(f"browser, WebCrypto ({webcrypto['path']})", webcrypto["times"]),
                row(f"browser, vendored noble ({noble['path']})", noble["times"]),
                row("yardstick: 60 WebCrypto SHA-256 digests", digests),
                row("yardstick: proctor verify (check_receipt, in process)", python),
            ]
        finally:
            server.stop()
    load = os.getloadavg()[0]
    print(f"{events}-event receipt, chromium {version}, load average {load:.1f} on {os.cpu_count()} cores")
    print(f"{'row':<58} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for r in rows:
        print(f"{r['row']:<58} {r['n']:>5} {r['p50']:>8.2f} {r['p95']:>8.2f} {r['max']:>8.2f}")
    met = rows[1]["p95"] <= TARGET_MS
    print(f"target: at most {TARGET_MS:.0f} ms in the browser: {'met' if met else 'NOT met'} (WebCrypto p95)")
    if ns.json:
        Path(ns.json).write_text(json.dumps({"events": events, "load": load, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
