"""When the governor cannot durably record (a full disk), it fails closed: nothing is
authorized, no lease is renewed (every execution dies when its lease ends), it reports
not ready, and a revocation it could not record is still applied and said to be so."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fault_checks import COLUMNS, Tally, check_after_fault
from fault_workload import (
    Ledger,
    Workload,
    describe,
    fault_rng,
    kill_tokens,
    survivors,
    tokens,
    wait_gone,
    warm,
)
from figures import record
from gov_exec import allow, start_body
from gov_server import GovernorServer
from gov_support import EXE, POLICIES, signed_bundle
from proctor.authorization.keys import PrincipalKey
from proctor.errors import LogAppendError, StoreError
from proctor.governor.model import AuthorizeRequest
from proctor.governor.service import Governor, initialize

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")

TTL = 2.0  # the run policy's lease
GRACE = 0.5
MARGIN = 3.0
BALLAST = 4 << 20
"""Bytes the filler holds before the workload: what unlinking it gives back at least."""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(disk)], check=True)
    try:
        # The filler exists from the start, with room in it to give back: were the disk
        # filled by the workload itself before fill() runs, unlinking an empty filler
        # would give no room back.
        (disk / "filler").write_bytes(b"\0" * BALLAST)
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Grow the filler until the disk is full (at once if the workload filled it).

    Unbuffered: a buffered file keeps what a failed write could not store and tries
    again when it is closed, which raised ENOSPC out of the ``with``.
    """
    filler = disk / "filler"
    with open(filler, "ab", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * (1 << 16))
    return filler


def test_a_full_disk_stops_every_lease_and_revocations_still_apply(small_disk: Path) -> None:
    data = small_disk / "data"
    initialize(data, origin="full.example/gov")
    with Governor(data) as gov:
        alice = PrincipalKey.generate("alice")
        gov.add_principal("alice", alice.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
        gov.push_policy(signed_bundle(data, POLICIES / "basic"), by="admin")
        running = gov.executions.start("alice", start_body(allow(gov, "a"), "a"))["execution"]
        other = gov.executions.start("alice", start_body(allow(gov, "b"), "b"))["execution"]
        assert gov.executions.renew("alice", running, {"integrity": "ok"})["ok"] is True
        assert gov.ready()[0]
        filler = fill(small_disk)
        # Nothing is authorized unrecorded...
        denied = gov.authorize(
            "alice",
            AuthorizeRequest(action="exec", resource="/bin/echo", argv=("echo", "c"), executable_digest=EXE),
        )
        assert not denied.allowed
        # ...no lease is renewed, so every execution dies at its lease's end...
        with pytest.raises(StoreError, match="cannot durably record"):
            gov.executions.renew("alice", running, {"integrity": "ok"})
        # ...the governor says it is not ready...
        ok, checks = gov.ready()
        assert not ok
        assert "cannot durably record" in checks["log"]
        # ...and a revocation it cannot record is applied all the same, and says so.
        with pytest.raises(LogAppendError, match="applied here"):
            gov.revoke("execution", other, reason="stop it", by="admin")
        # Room again: the probe notices, and leases are renewed again.
        filler.unlink()
        gov.start_sweeper(interval_s=0.1)
        deadline = time.monotonic() + 20
        while gov.log.commit_failure is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gov.log.commit_failure is None
        assert gov.ready()[0]
        assert gov.log.check_all().ok


def test_a_disk_that_fills_mid_workload_loses_nothing_acknowledged_and_recovers_in_place(
    small_disk: Path, tmp_path: Path
) -> None:
    """A disk that fills mid-workload loses nothing acknowledged and ends every lease, and
    with room again the governor recovers without a restart.

    A real ``proctor serve`` on a 16 MiB tmpfs, filled at a random point of concurrent
    authorizations, runs and appends; /readyz says the disk is full; then the checks of
    ``tests/fault_checks.py``.
    """
    rng, _seed = fault_rng("disk-full")
    server = GovernorServer(small_disk / "gov", policy=POLICIES / "run")
    markers = tmp_path / "markers"
    markers.mkdir()
    ledger = Ledger()
    tally = Tally("disk full", "data directory (tmpfs)")
    try:
        with Workload(lambda: server.url, server.data, markers, ledger, rng) as load:
            warm(load, ledger, markers)
            delay = rng.uniform(0.0, 1.0)
            print(f"the disk fills {delay:.3f} s after the workload was warm")
            time.sleep(delay)
            hit = len(survivors(tokens(markers)))
            filler = fill(small_disk)
            left, took = wait_gone(tokens(markers), TTL + GRACE + MARGIN)
            assert left == [], f"commands outlived their lease on a full disk: {describe(left)}"
            ready = httpx.get(f"{server.url}/readyz", timeout=60)
            assert ready.status_code == 503, ready.text
            assert "cannot durably record" in ready.text, ready.text
            assert "full" in ready.text, ready.text  # SQLite: "database or disk is full"
            filler.unlink()  # room again: the governor notices by itself
            deadline = time.monotonic() + 60
            while (
                httpx.get(f"{server.url}/readyz", timeout=60).status_code != 200
                and time.monotonic() < deadline
            ):
                time.sleep(0.1)
            warm(load, ledger, markers)
        assert survivors(tokens(markers)) == []
        tally.round_done(check_after_fault(server, ledger, markers), ledger)
    finally:
        kill_tokens(tokens(markers))
        server.stop()
    record(
        "faults-disk-full",
        section="Faults injected",
        summary=[
            f"disk full (a 16 MiB tmpfs filled) while serving: 1 round, {hit} governed process(es) running; "
            f"each was dead {took:.2f} s after it at the latest; recovered in place once there was room",
        ],
        columns=COLUMNS,
        rows=tally.rows(),
    )
