#!/usr/bin/env python3
"""Benchmark the state check the governor runs at start (proctor.governor.state_audit).

Run from the repository root::

    python bench/bench_state_check.py                  # a log of about 100k events
    python bench/bench_state_check.py --events 20000 --json out.json

It builds a governor data directory the way a busy governor fills it: principals,
a policy, then authorizations from several threads (a ``decision`` and a
``warrant.issued`` event, and a warrant row, each), with one warrant in a hundred
revoked. Then, on the closed directory, it times (median of ``--runs``):

1. ``audit_state`` alone: one snapshot, every entry hashed into the tree hash and
   bound to the signed checkpoint, the state events parsed and replayed, every row
   compared (warrants merge-joined by ``issued_index``);
2. opening (and closing) a ``Governor``, which runs 1;
3. the log's own full audit (``Log.check_all``, what ``proctor log verify`` runs
   first), for comparison.

Everything lives in a temporary directory under /tmp, removed at the end unless
``--keep``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (
    None,
    "",
):  # run as a file (python bench/bench_state_check.py): the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.lib import settle
from proctor.authorization.keys import PrincipalKey
from proctor.governor.model import AuthorizeRequest
from proctor.governor.service import Governor, initialize
from proctor.governor.state_audit import audit_state
from proctor.lineage.log import Log
from proctor.policy import PolicyBundle

REPO = Path(__file__).resolve().parent.parent
BASIC = REPO / "tests" / "integration" / "policies" / "basic"
EXE = "sha256:" + "e" * 64
ECHO = AuthorizeRequest(action="exec", resource="/bin/echo", argv=("echo", "hi"), executable_digest=EXE)


def build(root: Path, events: int, threads: int, principals: int) -> dict[str, int]:
    """A data directory with about ``events`` log entries."""
    initialize(root, origin="bench.local/state")
    names = [f"p{i}" for i in range(principals)]
    revoked = 0
    with Governor(root) as gov:
        for name in names:
            key = PrincipalKey.generate(name)
            gov.add_principal(name, key.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
        admin = PrincipalKey.load(root / "keys" / "admin.key")
        bundle = PolicyBundle.from_directory(BASIC, version=1)
        signed = bundle.signed(Ed25519PrivateKey.from_private_bytes(admin.private_bytes()), "admin")
        gov.push_policy(signed.to_json(), by="admin")
        per_thread = max(1, (events - gov.log.size) // 2 // threads)
        warrants: list[str] = []
        lock = threading.Lock()

        def work(t: int) -> None:
            mine = []
            for i in range(per_thread):
                r = gov.authorize(names[(t * per_thread + i) % principals], ECHO)
                if r.warrant_id is not None:
                    mine.append(r.warrant_id)
            with lock:
                warrants.extend(mine)

        started = time.perf_counter()
        ths = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        print(f"built {len(warrants)} warrants in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        for wid in warrants[::100]:
            gov.revoke("warrant", wid, reason="bench", by="admin")
            revoked += 1
        size = gov.log.size
    return {
        "log_entries": size,
        "warrants": len(warrants),
        "revocations": revoked,
        "principals": principals + 1,
    }


def median_s(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        settle()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--principals", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="proctor-bench-state-"))
    try:
        root = tmp / "data"
        shape = build(root, args.events, args.threads, args.principals)
        with Log.open(root) as log:
            verifier = log.verifier
            report = audit_state(root / "proctor.db", verifier)
            if not report.ok:
                raise SystemExit(f"the state check failed on untouched state: {report.discrepancies[:3]}")
            audit = median_s(lambda: audit_state(root / "proctor.db", verifier), args.runs)
            check_all = median_s(log.check_all, max(1, args.runs // 2))

        def open_governor() -> None:
            Governor(root).close()

        governor_open = median_s(open_governor, args.runs)
        result = {
            **shape,
            "state_events": report.events,
            "audit_state_s": round(audit, 3),
            "governor_open_s": round(governor_open, 3),
            "log_check_all_s": round(check_all, 3),
            "audit_us_per_entry": round(audit / shape["log_entries"] * 1e6, 2),
        }
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
