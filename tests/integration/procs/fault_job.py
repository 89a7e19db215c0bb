"""A governed job of the fault tests: it writes its marker, leaves a child in a session of
its own behind (which tries to outlive it), sleeps, and exits 0.

Usage: ``fault_job.py MARKERS TOKEN SECONDS``. The marker is the file ``MARKERS/TOKEN``,
created first (its name is the evidence that the job ran; it holds the wall-clock time in
nanoseconds and the pid). Every process of the job carries TOKEN in its argv, so a test
finds any of them that outlived its lease.
"""

import os
import subprocess
import sys
import time

markers, token, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
with open(os.path.join(markers, token), "x", encoding="ascii") as f:
    f.write(f"{time.time_ns()} {os.getpid()}\n")
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)", token], start_new_session=True)
print("ready", flush=True)
time.sleep(seconds)
