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

import pytest

from gov_exec import allow, start_body
from gov_support import EXE, POLICIES, signed_bundle
from proctor.authorization.keys import PrincipalKey
from proctor.errors import LogAppendError, StoreError
from proctor.governor.model import AuthorizeRequest
from proctor.governor.service import Governor, initialize

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * (1 << 16))
            f.flush()
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
