"""Crash safety: SIGKILL an appending process; every acknowledged append survives."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from proctor.lineage.log import Log

CHILD = textwrap.dedent(
    """
    import sys, threading
    from proctor.lineage.log import Log

    log = Log.open(sys.argv[1])
    out_lock = threading.Lock()

    def worker(w):
        k = 0
        while True:
            n = 1 + (k % 5)
            batch = [{"v": 1, "type": "decision", "time": "2026-11-26T06:00:00Z",
                      "w": w, "k": k + j, "pad": "x" * (k % 300)} for j in range(n)]
            indices = log.append_many(batch) if n > 1 else [log.append(batch[0])]
            with out_lock:
                for j, i in enumerate(indices):
                    sys.stdout.write(f"{i} {w} {k + j}\\n")
                sys.stdout.flush()
            k += n

    for w in range(4):
        threading.Thread(target=worker, args=(w,), daemon=True).start()
    threading.Event().wait()
    """
)


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_append(tmp_path: Path) -> None:
    data = tmp_path / "data"
    Log.initialize(data, origin="crash.example/log").close()
    rng = random.Random(7)
    acked: dict[int, tuple[int, int]] = {}
    for _round in range(6):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(data)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Kill at a random moment once it is appending (not while a loaded machine is
        # still importing it: then it would have acknowledged nothing to check).
        assert child.stdout is not None
        first = child.stdout.readline()
        time.sleep(rng.uniform(0.05, 0.8))
        os.kill(child.pid, signal.SIGKILL)
        out, err = child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL, err
        lines = [ln for ln in (first + out).splitlines() if ln]
        assert lines, f"the child acknowledged nothing before it was killed: {err}"
        for line in lines:
            i, w, k = (int(x) for x in line.split())
            assert i not in acked, f"index {i} acknowledged twice"
            acked[i] = (w, k)
        # Reopen after every kill: the next round appends to the recovered log.
        with Log.open(data) as log:
            size = log.size
            missing = [i for i in acked if i >= size]
            assert not missing, f"acknowledged indices lost: {missing[:10]}"
            for i, (w, k) in acked.items():
                event = json.loads(log.leaf(i))
                assert (event["w"], event["k"]) == (w, k), f"entry {i} holds another event"
            report = log.verify_all()
            assert report.ok
            assert report.size == size
    assert len(acked) > 100
