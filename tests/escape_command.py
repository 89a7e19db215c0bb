"""The contained command of the escape matrix: one attempt to outlive its containment.

Usage: escape_command.py MARKER ESCAPE REPORT SUPERVISOR_PID

Every process it starts ignores SIGTERM, SIGHUP and SIGINT (so only SIGKILL ends it),
carries MARKER in its argv (and the environment the supervisor gave it), and appends
lines to REPORT, numbers as seen from inside its own pid namespace:

- ``up NAME PID sid=… pgid=… ppid=…`` once an escapee exists;
- ``ready pid=… sid=… pgid=…`` once the escape is in place;
- ``attack reached|refused t=MONOTONIC DETAIL`` for the attempts that can be refused
  (leaving the cgroup, and the attacks on the supervisor, which are written *before*
  the blow is struck: the supervisor's death may kill the writer at once).

See ``escape_matrix.ESCAPES`` for what each ESCAPE does. Nothing it starts outlives a
minute, whatever happens to the test.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import sys
import time
from collections.abc import Callable

END = time.monotonic() + 60
ATTACKS = ("ptrace", "kill-supervisor", "stop-supervisor", "stop-both")
_PTRACE_ATTACH, _PTRACE_DETACH, _WALL = 16, 17, 0x40000000

marker, escape, report, supervisor = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


def say(*words: object) -> None:
    fd = os.open(report, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, (" ".join(str(w) for w in words) + "\n").encode())
    finally:
        os.close(fd)


def _ids(parent: int | None = None) -> dict[str, int]:
    ids = {"sid": os.getsid(0), "pgid": os.getpgid(0), "ppid": os.getppid()}
    if parent is not None:  # and its parent's session and group (the shell's, still running)
        ids.update(psid=os.getsid(parent), ppgid=os.getpgid(parent))
    return ids


def up(name: str) -> None:
    say("up", name, os.getpid(), *(f"{k}={v}" for k, v in _ids().items()))


def attempt(reached: bool, detail: str) -> None:
    say("attack", "reached" if reached else "refused", f"t={time.monotonic():.6f}", detail)


def linger() -> None:
    while time.monotonic() < END:
        time.sleep(0.2)
    os._exit(0)


def child(*steps: Callable[[], object]) -> int:
    """Fork a child that runs ``steps`` in order (the last one never returns)."""
    pid = os.fork()
    if pid == 0:
        try:
            for step in steps:
                step()
        finally:
            os._exit(0)
    return pid


def wait_up(n: int) -> None:
    while time.monotonic() < END:
        with open(report, encoding="utf-8") as f:
            if sum(line.startswith("up ") for line in f) >= n:
                return
        time.sleep(0.005)


def daemon() -> None:
    """The classic daemon: a new session, then a fork whose parent exits."""
    os.setsid()
    middle = os.getpid()
    if os.fork():
        os._exit(0)
    while os.getppid() == middle:
        time.sleep(0.001)
    up("daemon")
    linger()


def err(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, str(e.errno))


def leave_cgroup() -> tuple[bool, str]:
    """Move into the root cgroup of every hierarchy (or else the supervisor's own group)."""
    mounts: dict[str, str] = {}
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _, options = right.split()[:3]
            if fstype == "cgroup2":
                mounts[""] = left.split()[4]
            elif fstype == "cgroup":
                for option in options.split(","):
                    mounts.setdefault(option, left.split()[4])
    moved, refused = [], []
    with open("/proc/self/cgroup", encoding="utf-8") as f:
        lines = f.read().splitlines()
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        where = mounts.get(controllers.split(",")[0])
        if where is None:
            continue
        targets = ["/"] + ([rel.split("/proctor/")[0] or "/"] if "/proctor/" in rel else [])
        for target in targets:
            if target == rel:
                continue
            try:
                with open(
                    os.path.join(where, target.lstrip("/"), "cgroup.procs"), "w", encoding="ascii"
                ) as g:
                    g.write("0")
                moved.append(f"{controllers or 'v2'}:{target}")
                break
            except OSError as e:
                refused.append(f"{controllers or 'v2'}:{err(e)}")
    if moved or not refused:  # nothing refused: it was in no group but the roots
        return True, "moved=" + (",".join(moved) or "none-needed")
    return False, "refused=" + ",".join(sorted(set(refused)))


def can_signal(pid: int) -> str | None:
    """``None`` if this process may signal ``pid`` (it is visible and permitted), else why not."""
    try:
        os.kill(pid, 0)
    except OSError as e:
        return err(e)
    return None


def watchdogs() -> list[int]:
    """The supervisor's watchdog processes (none with a pid namespace: its init is the watchdog)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                data = f.read()
        except OSError:
            continue
        comm, rest = data[data.index("(") + 1 : data.rindex(")")], data[data.rindex(")") + 2 :].split()
        if comm == "proctor-watch" and int(rest[1]) == supervisor:
            found.append(int(entry))
    return found


def ptrace() -> None:
    """PTRACE_ATTACH, then int3 over the supervisor's libc through /proc/PID/mem: it crashes."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    attached = libc.ptrace(_PTRACE_ATTACH, supervisor, None, None) == 0
    attach = "attached" if attached else errno.errorcode.get(ctypes.get_errno(), "?")
    if attached:
        os.waitpid(supervisor, _WALL)  # until it is stopped
    try:
        with open(f"/proc/{supervisor}/maps", encoding="utf-8") as f:
            spans = [ln.split()[0] for ln in f if " r-xp " in ln and "libc" in ln.split()[-1]]
        fd = os.open(f"/proc/{supervisor}/mem", os.O_RDWR)
    except OSError as e:
        attempt(False, f"attach={attach} mem={err(e)}")
        if attached:
            libc.ptrace(_PTRACE_DETACH, supervisor, None, None)
        return
    attempt(bool(spans), f"attach={attach} mem={'writable' if spans else 'no-libc'}")
    for span in spans:
        start, end = (int(x, 16) for x in span.split("-"))
        os.pwrite(fd, b"\xcc" * (end - start), start)
    if attached:
        libc.ptrace(_PTRACE_DETACH, supervisor, None, None)  # it runs on, into the traps


def signal_supervisor(sig: int, *, dogs: bool = False) -> None:
    if (why := can_signal(supervisor)) is not None:
        attempt(False, why)
        return
    stopped = 0
    for dog in watchdogs() if dogs else []:
        try:
            os.kill(dog, signal.SIGSTOP)
            stopped += 1
        except OSError:
            pass
    attempt(True, f"delivered watchdogs-stopped={stopped}" if dogs else "delivered")
    os.kill(supervisor, sig)


def storm() -> None:
    """64 children at once, then 4 runaway chains that fork as fast as they can for 15 s."""
    r, w = os.pipe()

    def started() -> None:
        os.close(r)
        os.write(w, b"x")

    for _ in range(64):
        child(started, linger)
    until = time.monotonic() + 15

    def chain() -> None:
        started()
        while time.monotonic() < until:  # every generation forks the next and exits
            if os.fork():
                os._exit(0)
        linger()

    for _ in range(4):
        child(chain)
    os.close(w)
    got = 0
    while got < 68:
        got += len(os.read(r, 68 - got))
    os.close(r)
    up("storm")


def leaver() -> None:
    reached, detail = leave_cgroup()
    attempt(reached, detail)
    up("leaver")
    linger()


def main() -> None:
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, signal.SIG_IGN)
    if escape.startswith("up-"):  # a sleeper started by nohup or disown, beside its shell
        shell = os.getppid()
        say(*(["up", escape[3:], os.getpid()] + [f"{k}={v}" for k, v in _ids(shell).items()]))
        linger()
    if escape == "setsid":
        child(os.setsid, lambda: up("setsid"), linger)
        wait_up(1)
    elif escape == "double-fork":
        os.waitpid(child(daemon), 0)
        wait_up(1)
    elif escape == "fork-storm":
        storm()
    elif escape == "leave-cgroup":
        child(leaver)
        wait_up(1)
    elif escape in ATTACKS:
        child(lambda: up("child"), linger)
        os.waitpid(child(daemon), 0)
        wait_up(2)
    else:
        sys.exit(f"unknown escape {escape!r}")
    say("ready", f"pid={os.getpid()}", f"sid={os.getsid(0)}", f"pgid={os.getpgid(0)}")
    if escape == "ptrace":
        ptrace()
    elif escape == "kill-supervisor":
        signal_supervisor(signal.SIGKILL)
    elif escape == "stop-supervisor":
        signal_supervisor(signal.SIGSTOP)
    elif escape == "stop-both":
        signal_supervisor(signal.SIGSTOP, dogs=True)
    linger()


if __name__ == "__main__":
    main()
