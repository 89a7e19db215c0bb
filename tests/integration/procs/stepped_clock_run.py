"""``proctor run`` whose wall clock steps while it runs: the clock tests' enforcer.

Usage: ``stepped_clock_run.py STEP_AFTER STEP -- proctor run arguments…``. After
STEP_AFTER seconds, ``time.time()`` as the enforcement package reads it jumps by STEP
seconds (forward or back, as an NTP step or an operator's ``date -s`` would); the
monotonic clock does not move. The request signatures keep the true time (the HTTP
client is not stepped), so the governor still hears the enforcer: what is tested is which
clock the enforcer's lease and warrant timers read, not authentication under skew.
"""

import runpy
import sys
import threading
import time
import types

import proctor.enforcement as enforcement
import proctor.enforcement._approval
import proctor.enforcement._cgroups
import proctor.enforcement._contained
import proctor.enforcement._failover
import proctor.enforcement._spawn
import proctor.enforcement._spawner
import proctor.enforcement._watchdog
import proctor.enforcement.supervisor  # noqa: F401 - loaded so that its clock is stepped too

step_after, step = float(sys.argv[1]), float(sys.argv[2])
offset = [0.0]
real_time = time.time


def stepped_time() -> float:
    return real_time() + offset[0]


stepped = types.ModuleType("time")
stepped.__dict__.update({k: v for k, v in vars(time).items() if not k.startswith("__")})
stepped.time = stepped_time  # type: ignore[attr-defined]
for name, module in list(sys.modules.items()):
    if name.startswith(enforcement.__name__ + ".") and getattr(module, "time", None) is time:
        module.time = stepped  # type: ignore[attr-defined]


def jump() -> None:
    time.sleep(step_after)
    offset[0] = step
    print(f"stepped-clock: the wall clock stepped by {step:+.0f} s", file=sys.stderr, flush=True)


threading.Thread(target=jump, daemon=True).start()
sys.argv = ["proctor", *sys.argv[4:]] if sys.argv[3] == "--" else ["proctor", *sys.argv[3:]]
runpy.run_module("proctor", run_name="__main__")
