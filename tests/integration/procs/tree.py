"""A process tree that tries hard to survive: a setsid child, a double-forked orphan,
and a bounded fork loop. Every process carries MARKER in its argv. Prints "ready"."""

import os
import subprocess
import sys
import time

marker = sys.argv[1]
sleeper = [sys.executable, "-c", "import time; time.sleep(1000)", marker]

# A child in its own session (escapes the process group).
subprocess.Popen(sleeper, start_new_session=True)

# A double-forked orphan (reparented away from us).
if os.fork() == 0:
    if os.fork() == 0:
        os.setsid()
        os.execv(sys.executable, sleeper)
    os._exit(0)
os.wait()

# A bounded fork loop: a process that keeps replacing itself with a new child.
if os.fork() == 0:
    for _ in range(30):
        if os.fork() != 0:
            os._exit(0)  # the parent exits; the child goes on forking
        time.sleep(0.05)
    os.execv(sys.executable, sleeper)

print("ready", flush=True)
time.sleep(1000)
