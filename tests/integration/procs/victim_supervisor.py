"""A supervisor for the test to SIGKILL: spawns victim_tree.py contained, prints its pids.

Usage: victim_supervisor.py MARKER BACKENDS   (BACKENDS: comma-separated, or "default")

Prints one JSON line {"pids": [...], "child": pid, "backends": [...]} once the tree is
ready, then waits to be killed.
"""

import json
import subprocess
import sys
from pathlib import Path

from proctor.enforcement.containment import Containment

marker, backends = sys.argv[1], sys.argv[2]
containment = Containment(backends=None if backends == "default" else backends.split(","))
tree = Path(__file__).with_name("victim_tree.py")
contained = containment.spawn([sys.executable, str(tree), marker], stdout=subprocess.PIPE)
assert contained.stdout is not None
if contained.stdout.readline().strip() != b"ready":
    sys.exit("the tree did not start")
alive = contained.alive()
print(json.dumps({"pids": alive, "child": contained.pid, "backends": list(contained.backends)}), flush=True)
sys.stdin.read()
