"""The containment escape matrix: what each backend holds against a command trying to outlive it.

Every cell is one (configuration, escape, privilege): a fresh supervisor process (like
``proctor run``: it spawns the command with a lease TTL, waits for it, reaps its
orphans, and closes the tree when the command ends) starts a command that makes one
escape attempt; then the tree is terminated (or, for the attacks on the supervisor, the
supervisor can no longer act) and every process the command started must be dead
within a bound. Each process carries a per-cell marker in its argv and environment;
``/proc`` is scanned for it (zombies are dead).

The expected outcome of every cell is data (:data:`EXPECTED`): ``dies`` (every process
is dead within the bound), ``refused`` (the attempt itself failed: the supervisor could
not be named, the cgroup could not be left; and then everything died), ``escapes``
(something the command started is alive after the bound) or ``may escape`` (the
backend guarantees nothing and a race with the kernel decides: either of ``dies`` and
``escapes`` is seen). The test fails when reality differs in either direction, and the
same data renders the table of docs/containment.md (:func:`markdown_table`).

Usage (the test runs these; by hand for a closer look)::

    python tests/escape_matrix.py table            # the expected table, as markdown
    python tests/escape_matrix.py run OUT.json [CONFIG/ESCAPE ...]  # run cells as this user

Why one module: the data, the supervisor, the checks of what each escape did and the
runner describe one matrix and change together (a new escape is a column in the data,
a check here, a line in the docs and a branch in the command); only the command, which
runs contained as a script of its own, is apart (``escape_command.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import proc_support

__all__ = [
    "CONFIGS",
    "ESCAPES",
    "ATTACKS",
    "PRIVILEGES",
    "OUTCOMES",
    "D",
    "R",
    "E",
    "M",
    "TTL",
    "GRACE",
    "AFTER_TERMINATE",
    "AFTER_ATTACK",
    "EXPECTED",
    "expected",
    "markdown_table",
    "config_label",
    "COMMAND",
    "supervise",
    "Observation",
    "run_cell",
    "escape_made",
    "unavailable",
    "privilege",
    "run_matrix",
    "run_unprivileged",
    "marked",
    "kill_marked",
]

BASE = ["session", "subreaper", "pdeathsig"]
CONFIGS: dict[str, list[str] | None] = {
    "strongest": None,  # what Containment() selects: every backend available
    "pidns": [*BASE, "pidns"],
    "cgroup2": [*BASE, "cgroup2"],
    "cgroup1-freezer": [*BASE, "cgroup1:freezer"],
    "pgroup+subreaper": BASE,
    "session": ["session"],  # the fallback: nothing but a session of its own
}
"""Backend selections, strongest first (the names test_containment.py uses)."""

ESCAPES: dict[str, str] = {
    "setsid": "a child starts a session of its own",
    "double-fork": "a daemon: fork, setsid, fork, the middle one exits (an orphan out of the session)",
    "fork-storm": "64 children at once, and 4 runaway chains forking as fast as they can during the kill",
    "nohup": "`nohup cmd &` from sh, which exits",
    "disown": "`set -m; cmd & disown` from bash (its own process group), which exits",
    "leave-cgroup": "a child writes its pid to the root cgroup's (and the supervisor's) `cgroup.procs`",
    "ptrace": "PTRACE_ATTACH to the supervisor, and int3 written over its libc through /proc/PID/mem",
    "kill-supervisor": "SIGKILL to the supervisor",
    "stop-supervisor": "SIGSTOP to the supervisor (the lease TTL passes)",
    "stop-both": "SIGSTOP to the supervisor and to its watchdog process",
}
"""The escape attempts (columns). The four attacks on the supervisor are made by a
command that first left a child in its session and a daemon (as ``double-fork``)."""

ATTACKS = ("ptrace", "kill-supervisor", "stop-supervisor", "stop-both")
PRIVILEGES = ("root", "unprivileged")
OUTCOMES = ("dies", "refused", "escapes", "may escape")

TTL = 0.5  # the lease TTL (s): the heartbeat period is 0.1 s
GRACE = 0.1  # terminate_tree's SIGTERM grace (every escapee ignores SIGTERM and SIGHUP)
AFTER_TERMINATE = 0.5  # s after terminate_tree returned for the last process to be gone
AFTER_ATTACK = TTL + 2.5  # s after the supervisor was stopped or killed
READY_WITHIN = 30.0
WORKERS = 2  # cells run at once, per privilege (the two halves run side by side)

D, R, E, M = OUTCOMES
_ALL_DIE = dict.fromkeys(ESCAPES, D)
_PIDNS = {**_ALL_DIE, "kill-supervisor": R, "stop-supervisor": R, "stop-both": R}
EXPECTED: dict[tuple[str, str], dict[str, str]] = {
    # A pid namespace: the command cannot name the supervisor (signals are refused); the
    # root command can still write the supervisor's memory through the host's /proc
    # (which crashes it, and the namespace dies with it). Leaving a cgroup does not leave
    # the namespace, whose init's death kills everything in it.
    ("strongest", "root"): _PIDNS,
    ("pidns", "root"): _PIDNS,
    # Unprivileged, the command is in a user namespace of its own: no ptrace right over
    # the supervisor, and no write access to another cgroup.
    ("strongest", "unprivileged"): {**_PIDNS, "leave-cgroup": R, "ptrace": R},
    ("pidns", "unprivileged"): {**_PIDNS, "leave-cgroup": R, "ptrace": R},
    # A cgroup holds every process forked inside it, whatever its session or parent, and
    # the watchdog kills it when the supervisor dies or stops. Root leaves it by writing
    # another group's cgroup.procs (as does a user with a delegated subtree, moving to
    # the supervisor's group), and stopping the watchdog too leaves nobody to act.
    ("cgroup2", "root"): {**_ALL_DIE, "leave-cgroup": E, "stop-both": E},
    ("cgroup1-freezer", "root"): {**_ALL_DIE, "leave-cgroup": E, "stop-both": E},
    ("cgroup2", "unprivileged"): {**_ALL_DIE, "leave-cgroup": E, "stop-both": E},
    ("cgroup1-freezer", "unprivileged"): {**_ALL_DIE, "leave-cgroup": E, "stop-both": E},
    # Session, process group and the supervisor as subreaper: the daemon is the
    # supervisor's (adopted) child, found while the supervisor lives. Once the supervisor
    # is dead (killed, or crashed by the ptrace write) the daemon is reparented to init
    # and nothing attributes it any more: whether the watchdog, woken by the
    # supervisor's death, finds it before the kernel has reparented it is a race.
    ("pgroup+subreaper", "root"): {**_ALL_DIE, "ptrace": M, "kill-supervisor": M, "stop-both": E},
    ("pgroup+subreaper", "unprivileged"): {
        **_ALL_DIE,
        "leave-cgroup": R,
        "ptrace": M,
        "kill-supervisor": M,
        "stop-both": E,
    },
    # Session only: an orphan that left the session goes to init and is found by
    # nothing, so the daemon escapes whatever happens to the supervisor.
    ("session", "root"): {
        **_ALL_DIE,
        "double-fork": E,
        "ptrace": E,
        "kill-supervisor": E,
        "stop-supervisor": E,
        "stop-both": E,
    },
    ("session", "unprivileged"): {
        **_ALL_DIE,
        "double-fork": E,
        "leave-cgroup": R,
        "ptrace": E,
        "kill-supervisor": E,
        "stop-supervisor": E,
        "stop-both": E,
    },
}
"""The expected outcome of every cell: (configuration, privilege) → escape → outcome."""

# With Yama's ptrace_scope >= 1 (>= 3 for root) the ptrace attempt is refused outright;
# what follows is then what the backend does against a supervisor that still acts.
_PTRACE_REFUSED = {"session": E}


def _yama_scope() -> int:
    try:
        return int(Path("/proc/sys/kernel/yama/ptrace_scope").read_text())
    except (OSError, ValueError):
        return 0


def expected(config: str, escape: str, privilege: str, backends: tuple[str, ...] = ()) -> str:
    """The expected outcome of one cell on this machine.

    ``strongest`` is expected to hold what its strongest mechanism holds, by the backends
    the run reported (a pid namespace where there is one, as the table assumes); Yama's
    ``ptrace_scope`` refuses the ptrace attempt (>= 1 unprivileged, >= 3 for root).
    """
    if config == "strongest" and backends and "pidns" not in backends:
        config = next(
            (c for c, b in CONFIGS.items() if b and b[-1] in backends and c != "pidns"),
            "pgroup+subreaper" if "subreaper" in backends else "session",
        )
    outcome = EXPECTED[(config, privilege)][escape]
    scope = _yama_scope()
    if escape == "ptrace" and (scope >= 3 or (scope >= 1 and privilege == "unprivileged")):
        outcome = _PTRACE_REFUSED.get(config, R)
    return outcome


def markdown_table() -> str:
    """The expected matrix as a markdown table (rows: configuration x privilege)."""
    head = "| backends | privilege | " + " | ".join(f"`{e}`" for e in ESCAPES) + " |"
    rule = "| --- | --- |" + " --- |" * len(ESCAPES)
    rows = [
        f"| {config_label(config)} | {privilege} | "
        + " | ".join(_cell(EXPECTED[(config, privilege)][e]) for e in ESCAPES)
        + " |"
        for config in CONFIGS
        for privilege in PRIVILEGES
    ]
    return "\n".join([head, rule, *rows])


def config_label(config: str) -> str:
    """How a configuration is named in the tables."""
    backends = CONFIGS[config]
    return "default (strongest)" if backends is None else " + ".join(backends)


def _cell(outcome: str) -> str:
    return f"**{outcome}**" if outcome in (E, M) else outcome


# -- the command ---------------------------------------------------------------------

COMMAND = Path(__file__).with_name("escape_command.py")
"""The contained command (one escape attempt; see its docstring)."""

# $0 is the marker; $1 python, $2 the command, $3 the report file, $4 the supervisor.
NOHUP = """trap '' TERM HUP
nohup "$1" "$2" "$0" up-nohup "$3" "$4" >/dev/null 2>&1 &
while ! grep -q '^up ' "$3"; do sleep 0.01; done
echo "ready pid=$$" >> "$3"
exit 0
"""
DISOWN = """set -m
trap '' TERM HUP
"$1" "$2" "$0" up-disown "$3" "$4" >/dev/null 2>&1 &
disown
while ! grep -q '^up ' "$3"; do sleep 0.01; done
echo "ready pid=$$" >> "$3"
exit 0
"""


def _command_argv(marker: str, escape: str, report: str, supervisor: int) -> list[str]:
    args = [marker, sys.executable, str(COMMAND), report, str(supervisor)]
    if escape == "nohup":
        return ["/bin/sh", "-c", NOHUP, *args]
    if escape == "disown":
        return ["/bin/bash", "-c", DISOWN, *args]
    return [sys.executable, str(COMMAND), marker, escape, report, str(supervisor)]


# -- the supervisor: a process of its own, as `proctor run` is --------------------------

MARKER_ENV = "PROCTOR_ESCAPE_MARKER"


def supervise(marker: str, config: str, escape: str, report: str, ttl: float) -> None:
    """Spawn the command contained, with a lease; terminate on request; close when it ends.

    Prints JSON lines: ``started`` (pid, child, backends), ``terminated`` (the report) or
    ``error``, and ``exited`` once the command ended and the tree was closed.
    """
    import resource

    from proctor.enforcement.containment import Containment
    from proctor.errors import EnforcementError

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the ptrace attack crashes this process
    lock = threading.Lock()

    def emit(**fields: object) -> None:
        with lock:
            print(json.dumps(fields), flush=True)

    tree = Containment(backends=CONFIGS[config]).spawn(
        _command_argv(marker, escape, report, os.getpid()),
        env={**os.environ, MARKER_ENV: marker},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        lease_ttl=ttl,
    )
    emit(started=True, pid=os.getpid(), child=tree.pid, backends=list(tree.backends))
    done = threading.Event()

    def commands() -> None:
        for line in sys.stdin:
            if line.strip() == "terminate":
                try:
                    emit(terminated=tree.terminate_tree(grace=GRACE).to_json())
                except EnforcementError as e:
                    emit(error=str(e))
        done.set()

    threading.Thread(target=commands, daemon=True).start()
    status = tree.wait()  # reaps the tree's orphans meanwhile, as `proctor run` does
    tree.close()  # kills whatever the command left
    emit(exited=status)
    done.wait()


# -- finding the processes of one cell -------------------------------------------------


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _state(pid: int) -> str:
    """The process state letter (``""`` once it is gone)."""
    stat = _read(f"/proc/{pid}/stat")
    return stat.rsplit(b") ", 1)[1][:1].decode() if b") " in stat else ""


def _comm(pid: int) -> str:
    return _read(f"/proc/{pid}/comm").decode(errors="replace").strip()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie is dead)."""
    return _state(pid) not in ("", "Z", "X")


def marked(marker: str) -> list[int]:
    """Live processes with ``marker`` in their argv or environment."""
    needle, found = marker.encode(), []
    for entry in os.listdir("/proc"):
        if (
            entry.isdigit()
            and (needle in _read(f"/proc/{entry}/cmdline") or needle in _read(f"/proc/{entry}/environ"))
            and alive(int(entry))
        ):
            found.append(int(entry))
    return found


def kill_marked(marker: str, seconds: float = 5.0) -> None:
    """SIGSTOP everything marked (argv or environment) until nothing new appears, then
    SIGKILL it all."""
    proc_support.kill_marked(marker, seconds, find=marked)


# -- one cell ---------------------------------------------------------------------------


@dataclass
class Observation:
    """What one cell did and what was found.

    Attributes:
        config: the backend configuration.
        escape: the escape attempted.
        privilege: ``root`` or ``unprivileged``.
        outcome: ``dies``, ``refused``, ``escapes``, ``n/a`` (the configuration is not
            available to this user here) or ``error`` (the cell could not run as
            designed); ``detail`` says why.
        ms: from the termination request (or the attack that disabled the supervisor) until
            the last process was gone; ``None`` when something escaped.
        attempt: what the attempt achieved, as the command reported it (``""`` if it has none).
        backends: what the run reported using.
        lines: the command's report (``up``/``ready``/``attack`` lines).
        survivors: what was alive at the bound (``pid comm state``).
        detail: why a cell is n/a, or what the supervisor answered.
    """

    config: str
    escape: str
    privilege: str
    outcome: str
    ms: int | None = None
    attempt: str = ""
    backends: tuple[str, ...] = ()
    lines: tuple[str, ...] = ()
    survivors: tuple[str, ...] = ()
    detail: str = ""

    def to_json(self) -> dict[str, object]:
        """As a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Observation:
        """Back from :meth:`to_json`."""
        fields = dict(data)
        for name in ("backends", "lines", "survivors"):
            fields[name] = tuple(fields[name])  # type: ignore[arg-type]
        return cls(**fields)  # type: ignore[arg-type]


class _Lines:
    """The supervisor's JSON lines, read by a thread so that waiting can time out."""

    def __init__(self, stream: object) -> None:
        self._queue: queue.Queue[dict[str, object] | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: object) -> None:
        for raw in stream:  # type: ignore[attr-defined]
            with contextlib.suppress(ValueError):
                self._queue.put(json.loads(raw))
        self._queue.put(None)

    def next_with(self, key: str, timeout: float) -> dict[str, object] | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                return None
            if item is None:
                return None
            if key in item or "error" in item:
                return item
        return None


def _report_line(report: Path, word: str, timeout: float) -> list[str] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in report.read_text().splitlines():
            if line.split(" ", 1)[0] == word:
                return line.split()
        time.sleep(0.005)
    return None


def _gone_within(pids: Callable[[], list[int]], deadline: float, settled: Callable[[], bool]) -> list[int]:
    """Poll until ``pids()`` is empty; what is left at ``deadline``, or once ``settled()``
    has held for 0.2 s (nobody is left who could kill what remains)."""
    settled_at = None
    while left := pids():
        now = time.monotonic()
        if now >= deadline:
            return left
        if settled():
            settled_at = settled_at or now
            if now - settled_at >= 0.2:
                return left
        time.sleep(0.005)
    return []


def run_cell(config: str, escape: str, privilege: str, workdir: Path) -> Observation:
    """Run one cell as this user: start a supervisor, let the command escape, terminate, look."""
    marker = f"proctor-escape-{os.getpid()}-{secrets.token_hex(5)}"
    report = workdir / f"{marker}.log"
    report.write_text("")
    errors = workdir / f"{marker}.err"
    with errors.open("w") as err:
        sup = subprocess.Popen(
            [sys.executable, __file__, "supervise", marker, config, escape, str(report), str(TTL)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
            text=True,
        )
    answers = _Lines(sup.stdout)
    dogs: list[int] = []
    try:
        started = answers.next_with("started", READY_WITHIN)
        if started is None or "started" not in started:
            raise RuntimeError(
                f"{config}/{escape}: the supervisor did not start: {started}; {errors.read_text()[-2000:]}"
            )
        if _report_line(report, "ready", READY_WITHIN) is None:
            raise RuntimeError(f"{config}/{escape}: the command never got ready: {report.read_text()!r}")
        dogs = [p for p in marked(marker) if _comm(p) == "proctor-watch"]

        def tree() -> list[int]:
            return [p for p in marked(marker) if p != sup.pid and p not in dogs]

        attack = _report_line(report, "attack", 10) if escape in (*ATTACKS, "leave-cgroup") else None
        if attack is None and escape in (*ATTACKS, "leave-cgroup"):
            raise RuntimeError(f"{config}/{escape}: the attempt was not made: {report.read_text()!r}")
        reached = None if attack is None else attack[1] == "reached"
        if escape in ATTACKS and reached:
            # The supervisor is dead or stopped: the watchdog (or the kernel) must act.
            assert attack is not None
            t0 = float(attack[2].removeprefix("t="))

            def settled() -> bool:
                return (
                    bool(dogs) and not any(alive(d) for d in dogs) and _state(sup.pid) in ("", "Z", "T", "t")
                )

            left = _gone_within(tree, t0 + AFTER_ATTACK, settled)
            answer: dict[str, object] | None = None
        else:
            t0 = time.monotonic()
            assert sup.stdin is not None
            sup.stdin.write("terminate\n")
            sup.stdin.flush()
            answer = answers.next_with("terminated", 30)
            left = _gone_within(tree, time.monotonic() + AFTER_TERMINATE, lambda: False)
        dead_ms = None if left else int((time.monotonic() - t0) * 1000)
        outcome = E if left else (R if reached is False else D)
        return Observation(
            config=config,
            escape=escape,
            privilege=privilege,
            outcome=outcome,
            ms=dead_ms,
            attempt=" ".join(attack[3:]) if attack else "",
            backends=tuple(str(b) for b in started["backends"]),  # type: ignore[attr-defined]
            lines=tuple(report.read_text().splitlines()),
            survivors=tuple(f"{p} {_comm(p)} {_state(p)}" for p in left),
            detail=json.dumps(answer) if answer else "",
        )
    finally:
        for pid in (sup.pid, *dogs):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)
        with contextlib.suppress(OSError):
            sup.stdin.close()  # type: ignore[union-attr]
        try:
            sup.wait(timeout=5)
        except subprocess.TimeoutExpired:
            sup.kill()
            sup.wait()
        kill_marked(marker)
        with contextlib.suppress(OSError):
            sup.stdout.close()  # type: ignore[union-attr]
        report.unlink(missing_ok=True)
        errors.unlink(missing_ok=True)


def escape_made(obs: Observation) -> str | None:
    """Why the command did not make its escape as designed, or ``None`` if it did.

    Checked from what the processes reported themselves (numbers from inside their own
    pid namespace), so that a cell never passes because nothing tried to escape.
    """
    up: dict[str, dict[str, int]] = {}
    ready: dict[str, int] = {}
    for line in obs.lines:
        words = line.split()
        fields = {k: int(v) for k, _, v in (w.partition("=") for w in words[2:]) if v.lstrip("-").isdigit()}
        if words[0] == "up":
            up[words[1]] = {"pid": int(words[2]), **fields}
        elif words[0] == "ready":
            ready = {k: int(v) for k, _, v in (w.partition("=") for w in words[1:])}
    need = {
        "setsid": ["setsid"],
        "double-fork": ["daemon"],
        "fork-storm": ["storm"],
        "nohup": ["nohup"],
        "disown": ["disown"],
        "leave-cgroup": ["leaver"],
    }.get(obs.escape, ["child", "daemon"])
    if missing := [name for name in need if name not in up] or ([] if ready else ["ready"]):
        return f"not reported: {missing}"
    if obs.escape == "setsid" and not up["setsid"]["sid"] == up["setsid"]["pid"] != ready["sid"]:
        return f"the child did not lead a session of its own: {up['setsid']}"
    if "daemon" in up and (up["daemon"]["sid"] == ready["sid"] or up["daemon"]["ppid"] == ready["pid"]):
        return f"the daemon is not an orphan out of the session: {up['daemon']}"
    job = up.get(obs.escape, {})
    if obs.escape == "disown" and not (
        job["sid"] == job["psid"] and job["pgid"] == job["pid"] != job["ppgid"]
    ):
        return f"the disowned job is not in a process group of its own in its shell's session: {job}"
    if obs.escape == "nohup" and not (job["sid"] == job["psid"] and job["pgid"] == job["ppgid"]):
        return f"the nohup'd process is not in its shell's session and group: {job}"
    return None


def unavailable(config: str) -> str | None:
    """Why ``config`` cannot be used by this user on this machine, or ``None``."""
    from proctor.enforcement.containment import Containment, probe
    from proctor.errors import EnforcementError

    try:
        Containment(probe(), backends=CONFIGS[config])
    except EnforcementError as e:
        return str(e)
    return None


def privilege() -> str:
    """``root`` or ``unprivileged``: who runs this process."""
    return "root" if os.geteuid() == 0 else "unprivileged"


def run_matrix(cells: list[tuple[str, str]] | None = None, *, workers: int = WORKERS) -> list[Observation]:
    """Run cells (default: all) as this user, ``workers`` at a time (each cell has its own
    marker and supervisor); an unavailable configuration's cells are n/a."""
    who = privilege()
    cells = cells if cells is not None else [(c, e) for c in CONFIGS for e in ESCAPES]
    reasons = {config: unavailable(config) for config in {c for c, _ in cells}}
    with tempfile.TemporaryDirectory(prefix="proctor-escape-") as tmp:
        os.chmod(tmp, 0o755)

        def one(cell: tuple[str, str]) -> Observation:
            config, escape = cell
            if (reason := reasons[config]) is not None:
                return Observation(config, escape, who, "n/a", detail=reason)
            try:
                return run_cell(config, escape, who, Path(tmp))
            except Exception as e:  # this cell fails, the others still run
                return Observation(config, escape, who, "error", detail=f"{type(e).__name__}: {e}")

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="escape-cell") as pool:
            return list(pool.map(one, cells))


def run_unprivileged(
    cells: list[tuple[str, str]] | None = None, timeout: float = 240
) -> list[Observation] | str:
    """From root: run cells (default: all) as uid 65534 in one process; the observations, or why not."""
    from unpriv_support import UNPRIVILEGED, unprivileged_python

    if not os.path.exists(UNPRIVILEGED[0]):
        return "setpriv (util-linux) is not installed"
    home = tempfile.mkdtemp(prefix="proctor-escape-unpriv-")
    repo = Path(__file__).parents[1]
    try:
        os.chmod(home, 0o777)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "TMPDIR": home,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": os.pathsep.join(
                [
                    str(repo / "src"),
                    str(repo / "tests"),
                    *(p for p in sys.path if p.endswith("site-packages")),
                ]
            ),
        }
        python = unprivileged_python(env)
        if python is None:
            return "no Python interpreter of this version is executable by an unprivileged user"
        out = Path(home) / "observations.json"
        done = subprocess.run(
            [*UNPRIVILEGED, python, __file__, "run", str(out), *(f"{c}/{e}" for c, e in cells or ())],
            env=env,
            cwd=home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"the unprivileged run failed ({done.returncode}):\n{done.stderr[-4000:]}")
        return [Observation.from_json(o) for o in json.loads(out.read_text())]
    finally:
        subprocess.run(["rm", "-rf", home], check=False)


def main(argv: list[str]) -> int:
    """Entry point (see the module docstring)."""
    if argv[:1] == ["table"]:
        print(markdown_table())
        return 0
    if argv[:1] == ["supervise"] and len(argv) == 6:
        supervise(argv[1], argv[2], argv[3], argv[4], float(argv[5]))
        return 0
    if argv[:1] == ["run"] and len(argv) >= 2:
        cells = [(c, e) for c, _, e in (cell.partition("/") for cell in argv[2:])]
        observations = run_matrix(cells or None)
        Path(argv[1]).write_text(json.dumps([o.to_json() for o in observations], indent=1))
        for o in observations:
            print(f"{o.privilege:12} {o.config:17} {o.escape:16} {o.outcome:8} {o.ms} {o.attempt}")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
