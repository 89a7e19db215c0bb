"""A process tree built to survive termination; every process carries MARKER in its argv.

Usage: victim_tree.py MARKER [stubborn]

- a child in its own session (escapes the process group),
- a double-forked orphan that also leaves the session (escapes the parent chain),
- a fork tree: two children per process, five levels (62 processes),
- a runaway that keeps replacing itself with a fresh child (bounded: 500 rounds),
- with ``stubborn``, every process ignores SIGTERM (so only SIGKILL ends it).

About 70 processes in all. Prints "ready" once every process exists.
"""

import os
import signal
import subprocess
import sys
import time

marker = sys.argv[1]
stubborn = sys.argv[2:] == ["stubborn"]
if stubborn:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited through fork and exec
sleeper = [sys.executable, "-c", "import time; time.sleep(1000)", marker]
r, w = os.pipe()


def started() -> None:
    os.write(w, b"x")


def sleep_forever() -> None:
    while True:
        time.sleep(1000)


# 1. A child in its own session.
subprocess.Popen(sleeper, start_new_session=True)

# 2. A double-forked orphan in a session of its own.
if os.fork() == 0:
    if os.fork() == 0:
        os.setsid()
        started()
        os.execv(sys.executable, sleeper)
    os._exit(0)
os.wait()


# 3. A fork tree: each process forks two children, five levels deep.
def grow(depth: int) -> None:
    for _ in range(2):
        if os.fork() == 0:
            started()
            if depth > 1:
                grow(depth - 1)
            sleep_forever()


if os.fork() == 0:
    grow(5)
    sleep_forever()

# 4. A runaway: always exactly one process, but always a new one.
if os.fork() == 0:
    started()
    for _ in range(500):
        if os.fork() != 0:
            os._exit(0)
        time.sleep(0.01)
    sleep_forever()

expected = 1 + 62 + 1
got = 0
while got < expected:
    got += len(os.read(r, expected - got))
print("ready", flush=True)
sleep_forever()
