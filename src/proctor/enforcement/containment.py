"""Containment: start a command so that its whole process tree can always be killed.

Mechanisms (each one a *backend*; :func:`probe` finds which the machine allows, and
:class:`Containment` uses the strongest unless told otherwise; what a run used is in
:attr:`Contained.backends` and is logged):

``session``
    The child starts a new session and process group.
``subreaper``
    The supervisor process becomes a child subreaper (``PR_SET_CHILD_SUBREAPER``;
    process-wide and permanent), so orphaned descendants are reparented to it and can
    be found and reaped instead of escaping to init.
``pdeathsig``
    ``PR_SET_PDEATHSIG=SIGKILL`` in the child: it dies with the supervisor.
``cgroup2`` / ``cgroup1:freezer``
    One cgroup per execution, joined before ``exec``: exact membership and an
    atomic kill (``cgroup.kill``, or freeze-kill-thaw).
``cgroup1:memory`` / ``cgroup1:pids`` (and ``cgroup2:memory`` / ``cgroup2:pids`` where
the v2 controllers are delegated)
    ``Limits.memory_mb`` (swap included where accounted) and ``Limits.max_pids``.
``pidns`` (with ``userns`` when unprivileged)
    The command runs in a new pid namespace whose init is a small relay (see
    :mod:`proctor.enforcement._spawn`). When init dies the kernel kills every process
    in the namespace, so PDEATHSIG on init makes the *whole tree* die with the
    supervisor, even when the supervisor is SIGKILLed.
``mountns`` (with ``userns`` when unprivileged)
    For a command prepared by :func:`~proctor.enforcement.measure.prepare`: a private
    mount namespace in which the sealed copies of the measured files are shown at their
    own paths (``/proc/self/exe``, ``$0`` and ``__file__`` are the real paths; see
    :mod:`proctor.enforcement._staging`). Without it the command runs from the memfds
    and sees ``/proc/self/fd/N`` paths. Mounts the command makes stay in its namespace.
``netns``
    ``Limits.no_network``: a new network namespace with no interface up.
``rlimit``
    ``Limits.cpu_seconds`` as ``RLIMIT_CPU`` (per process, not per tree).

Fail closed: a limit that no selected backend can enforce is an
:class:`~proctor.errors.EnforcementError` at spawn, never a silent no-op.

A stopped supervisor (``spawn(..., lease_ttl=…)``): the supervisor heartbeats to a
watchdog it does not control — the pid namespace's init, else a separate watchdog
process — which kills the whole tree when no heartbeat came for the lease TTL or the
supervisor died; see :mod:`proctor.enforcement._watchdog` for what holds per backend.

Known limits, stated plainly:

- Without ``pidns``, a SIGKILLed supervisor takes only the direct child with it
  (PDEATHSIG is not inherited); with a ``lease_ttl`` the watchdog process kills the
  rest at once, otherwise it lives on in its cgroup until the next
  :class:`Containment` on the machine is created, which kills it
  (:meth:`Containment.reap_stale`); without a cgroup either, it lives on.
- With a pid namespace, the namespace's init is a relay forked from the supervisor (no
  ``exec``); the command runs as pid 2 with ordinary signal semantics, and
  :attr:`Contained.pid` is the relay, whose reported status is the command's. When the
  command exits, the kernel kills whatever it left in the namespace — also during
  ``terminate_tree``'s grace period, if the command exits before its descendants
  finish handling SIGTERM. ``/proc`` is the host's (``ps`` shows host pids).
- A process running as root inside the tree could move itself out of a cgroup; it
  cannot leave a pid namespace.
- The fallback (no cgroup, no pid namespace) attributes processes heuristically; see
  :mod:`proctor.enforcement._tree`.
- Children are forked from one long-lived thread, because PDEATHSIG follows the parent
  *thread*; the subreaper flag applies to the whole supervisor process.
- Start cost: ``preexec_fn`` makes ``subprocess`` fork instead of vfork (about +1.5 ms
  for a Python supervisor), and the pid namespace's relay is one more fork (about
  +1 ms); choose backends without ``pidns`` where that matters more than the above.
  ``mountns`` costs about 0.6 ms plus the copy of the measured files (2.5 ms for a
  6.8 MB ``python3``); a ``lease_ttl`` without ``pidns`` forks the watchdog (about +1.5 ms).
  :meth:`Containment.prepare` pays all of it but the command's own start while the
  caller waits on something else (``proctor run``: the governor recording the start).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import os
import re
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

from proctor.enforcement import _linux
from proctor.enforcement._cgroups import Group, owner_tag, reap_stale
from proctor.enforcement._contained import Contained, TerminationReport
from proctor.enforcement._pending import PendingStart, guard, track_started
from proctor.enforcement._plan import Limits, Plan, available, make_groups, make_plan
from proctor.enforcement._probe import Capabilities, probe
from proctor.enforcement._spawn import ChildSetup, exec_fd_of
from proctor.enforcement._spawner import spawner
from proctor.enforcement._staging import staging_for
from proctor.errors import EnforcementError

__all__ = [
    "BACKENDS",
    "Capabilities",
    "probe",
    "Limits",
    "TerminationReport",
    "Contained",
    "Containment",
    "PendingStart",
]

_log = logging.getLogger(__name__)

BACKENDS = (
    "session",
    "subreaper",
    "pdeathsig",
    "cgroup2",
    "cgroup1:freezer",
    "cgroup1:memory",
    "cgroup1:pids",
    "pidns",
    "mountns",
    "netns",
    "rlimit",
)
"""Backends that can be selected; a run may also report ``cgroup2:memory``,
``cgroup2:pids`` and ``userns``, which follow from these."""

GATE_TIMEOUT_S = 120.0
"""How long a prepared start waits for its go by default (:meth:`Containment.prepare`)."""
GATE_SLACK_S = 5.0
"""The child waits this much longer than its gate's deadline: the parent refuses a late go
itself, so the child never runs a command its supervisor gave up on."""

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")
_counter = itertools.count(1)
_subreaper_lock = threading.Lock()
_subreaper_set = False

_File = int | IO[Any] | None


@functools.cache
def _owner() -> str:
    return owner_tag()


def _become_subreaper() -> None:
    global _subreaper_set  # noqa: PLW0603 - a process-wide kernel flag, set once
    with _subreaper_lock:
        if not _subreaper_set:
            _linux.prctl(_linux.PR_SET_CHILD_SUBREAPER, 1)
            _subreaper_set = True
            _log.info("this process is now a child subreaper (orphans of contained trees come to it)")


class Containment:
    """Starts commands contained with the chosen backends.

    Args:
        capabilities: what the machine allows (default: :func:`probe`).
        backends: force a subset of :data:`BACKENDS` (tests use it to exercise each
            backend alone); ``None`` selects every available one, except the v1 freezer
            when cgroup v2 is there.

    Raises:
        EnforcementError: a forced backend is unknown or not available here.
    """

    def __init__(
        self, capabilities: Capabilities | None = None, *, backends: Sequence[str] | None = None
    ) -> None:
        self.capabilities = capabilities if capabilities is not None else probe()
        offered = available(self.capabilities)
        self._forced = backends is not None
        if backends is None:
            chosen = {name for name, ok in offered.items() if ok}
            if "cgroup2" in chosen:
                chosen.discard("cgroup1:freezer")
        else:
            chosen = set()
            for name in backends:
                if name not in offered:
                    known = ", ".join(BACKENDS)
                    raise EnforcementError(f"unknown containment backend {name!r}; known: {known}")
                if not offered[name]:
                    raise EnforcementError(f"containment backend {name!r} is not available on this machine")
                chosen.add(name)
        self._selected = tuple(n for n in BACKENDS if n in chosen)
        _log.info("containment backends available: %s", ", ".join(self._selected) or "none")
        self.reap_stale()

    def reap_stale(self) -> int:
        """Kill what runs in the cgroups of dead supervisors, and remove those groups.

        A supervisor that is SIGKILLed leaves its groups behind and, without a pid
        namespace, the tree in them alive; every :class:`Containment` cleans up after
        such supervisors when it is created, in every writable hierarchy whatever its
        own selection (the groups of supervisors still alive are left alone).

        Returns:
            How many processes were killed.
        """
        caps, removed, killed = self.capabilities, 0, 0
        bases = [(caps.cgroup2, 2, "")] if caps.cgroup2 else []
        bases += [(path, 1, c) for c, path in sorted(caps.cgroup1.items())]
        for base, version, controller in bases:
            r, k = reap_stale(base, version=version, controller=controller)
            removed, killed = removed + r, killed + k
        if killed:
            _log.warning("killed %d processes left running by dead supervisors", killed)
        if removed:
            _log.debug("removed %d cgroups of dead supervisors", removed)
        return killed

    @property
    def backends(self) -> tuple[str, ...]:
        """The selected backends (a run uses those its limits need).

        Returns:
            Names from :data:`BACKENDS`.
        """
        return self._selected

    def planned_backends(self, limits: Limits | None = None) -> tuple[str, ...]:
        """The backends :meth:`spawn` would use with ``limits`` for a prepared command.

        Args:
            limits: the run's limits (default: none).

        Returns:
            Backend names, strongest mechanisms included.

        Raises:
            EnforcementError: a limit cannot be enforced with the selected backends.
        """
        return self._plan(limits or Limits(), staged=True).names

    def _plan(self, limits: Limits, *, staged: bool) -> Plan:
        return make_plan(
            self._selected,
            self.capabilities,
            memory_mb=limits.memory_mb,
            max_pids=limits.max_pids,
            no_network=limits.no_network,
            cpu_seconds=limits.cpu_seconds,
            forced=self._forced,
            staged=staged,
        )

    def spawn(
        self,
        argv: Sequence[str],
        *,
        exec_path: str | None = None,
        pass_fds: Sequence[int] = (),
        limits: Limits | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        stdin: _File = None,
        stdout: _File = None,
        stderr: _File = None,
        execution_id: str | None = None,
        lease_ttl: float | None = None,
    ) -> Contained:
        """Start ``argv`` contained.

        Args:
            argv: the command line (``argv[0]`` is what the program sees as its name).
            exec_path: the file to execute instead of looking up ``argv[0]``, such as
                ``/proc/self/fd/N`` from :func:`~proctor.enforcement.measure.prepare`;
                when it names one of ``pass_fds``, that descriptor is closed by the
                ``exec`` itself, so the command does not inherit it. For a prepared
                command (exactly its ``exec_path``, ``argv`` and ``pass_fds``) with
                ``mountns``, the copies are shown at their own paths.
            pass_fds: descriptors the child keeps.
            limits: resource obligations.
            env: the environment (default: inherited).
            cwd: the working directory.
            stdin: like ``subprocess.Popen`` (default: inherited).
            stdout: like ``subprocess.Popen``; ``subprocess.PIPE`` to tee and hash.
            stderr: likewise.
            execution_id: names the cgroups (``[A-Za-z0-9_.-]``, ≤ 80); default: generated.
            lease_ttl: seconds (the lease TTL): this process then heartbeats to a
                watchdog it does not control, which kills the whole tree when no
                heartbeat came for that long (this process stopped) or this process died.

        Returns:
            The running, contained tree.

        Raises:
            EnforcementError: a limit cannot be enforced, a mechanism failed, or the
                command could not be executed; nothing is left running.
        """
        return self._start(
            argv, exec_path=exec_path, pass_fds=pass_fds, limits=limits, env=env, cwd=cwd, stdin=stdin,
            stdout=stdout, stderr=stderr, execution_id=execution_id, lease_ttl=lease_ttl, gate_timeout=None,
        ).go()  # fmt: skip

    def prepare(
        self,
        argv: Sequence[str],
        *,
        exec_path: str | None = None,
        pass_fds: Sequence[int] = (),
        limits: Limits | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        stdin: _File = None,
        stdout: _File = None,
        stderr: _File = None,
        execution_id: str | None = None,
        lease_ttl: float | None = None,
        gate_timeout: float = GATE_TIMEOUT_S,
    ) -> PendingStart:
        """Set up the start of ``argv`` as :meth:`spawn` does, up to the command, and return at once.

        The child is forked, joins its cgroups, enters its namespaces and shows its
        measured copies in the spawner thread, while the caller does something else
        (``proctor run``: the governor records the start); then it waits for
        :meth:`PendingStart.go`, which starts the command. Nothing of the command runs
        before: :meth:`PendingStart.cancel` (or leaving its ``with`` block), this process
        dying, or ``gate_timeout`` seconds passing end the child instead. Other starts of
        this process queue behind a pending one. The arguments are :meth:`spawn`'s.

        Args:
            argv: as for :meth:`spawn`.
            exec_path: as for :meth:`spawn`.
            pass_fds: as for :meth:`spawn`.
            limits: as for :meth:`spawn`.
            env: as for :meth:`spawn`.
            cwd: as for :meth:`spawn`.
            stdin: as for :meth:`spawn`.
            stdout: as for :meth:`spawn`.
            stderr: as for :meth:`spawn`.
            execution_id: as for :meth:`spawn`.
            lease_ttl: as for :meth:`spawn`.
            gate_timeout: seconds after which :meth:`PendingStart.go` refuses.

        Returns:
            The pending start.

        Raises:
            EnforcementError: as for :meth:`spawn`, for what fails before the fork.
        """
        if not (type(gate_timeout) in (int, float) and math.isfinite(gate_timeout) and gate_timeout > 0):
            raise EnforcementError(f"gate_timeout must be a positive number of seconds, got {gate_timeout!r}")
        return self._start(
            argv, exec_path=exec_path, pass_fds=pass_fds, limits=limits, env=env, cwd=cwd, stdin=stdin,
            stdout=stdout, stderr=stderr, execution_id=execution_id, lease_ttl=lease_ttl,
            gate_timeout=gate_timeout,
        )  # fmt: skip

    def _start(
        self,
        argv: Sequence[str],
        *,
        exec_path: str | None = None,
        pass_fds: Sequence[int] = (),
        limits: Limits | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        stdin: _File = None,
        stdout: _File = None,
        stderr: _File = None,
        execution_id: str | None = None,
        lease_ttl: float | None = None,
        gate_timeout: float | None,
    ) -> PendingStart:
        # prepare's body; gate_timeout None: no gate, the child starts the command once
        # set up (spawn, which lets it go at once: its cancel would not stop the command).
        argv = list(argv)
        if not argv:
            raise EnforcementError("nothing to run: argv is empty")
        if lease_ttl is not None and not (
            type(lease_ttl) in (int, float) and math.isfinite(lease_ttl) and lease_ttl > 0
        ):
            raise EnforcementError(f"lease_ttl must be a positive number of seconds, got {lease_ttl!r}")
        limits = limits or Limits()
        staging = staging_for(exec_path, tuple(argv), tuple(pass_fds))
        plan = self._plan(limits, staged=staging is not None)
        stage = staging.copies if staging is not None and plan.has("mountns") else ()
        if staging is not None and stage:
            argv = list(staging.argv)  # scripts by their own paths, shown there
            scripts = {copy.fd for copy in stage[1:]}  # read while staging, then not needed
            pass_fds = [fd for fd in pass_fds if fd not in scripts]
        name = execution_id or f"ex-{next(_counter)}-{secrets.token_hex(4)}"
        if not _NAME.fullmatch(name):
            raise EnforcementError(f"execution id {name!r} is not usable as a cgroup name")
        name += _owner()
        if plan.has("subreaper"):
            _become_subreaper()
        groups: list[Group] = []
        opened: list[int] = []  # this process's copies of the child's ends: closed once forked
        status_r = gate_w = report_r = report_w = -1
        beat, watch_end = socket.socketpair() if lease_ttl is not None else (None, None)
        pidns = ("userns" if plan.has("userns") else "init") if plan.has("pidns") else ""

        def release() -> None:  # what track would have taken over (the gate is PendingStart's)
            nonlocal status_r
            if status_r >= 0:
                with contextlib.suppress(OSError):
                    os.close(status_r)
                status_r = -1
            for end in (beat, watch_end):
                if end is not None:
                    end.close()

        def track(popen: subprocess.Popen[bytes], ttl: float | None) -> Contained:
            nonlocal status_r, beat
            try:
                contained = track_started(
                    popen, argv=argv, plan=plan, groups=groups, pidns_mode=pidns, status_fd=status_r
                )
                status_r = -1  # the Contained owns it now
                if beat is not None and watch_end is not None and lease_ttl is not None:
                    guard(contained, beat, watch_end, ttl or lease_ttl)
                    beat = None  # the heartbeat owns it now
            finally:
                release()
            _log.info("started pid %d (%s) contained by %s", contained.pid, argv[0], ", ".join(plan.names))
            return contained

        try:
            groups = make_groups(self.capabilities, plan, name, limits)
            opened += [g.open_procs() for g in groups]
            cgroup_fds = tuple(opened)
            report_r, report_w = os.pipe2(os.O_CLOEXEC)
            alive_r, alive_w = os.pipe2(os.O_CLOEXEC)
            opened += [alive_r, alive_w]
            status_r, status_w = os.pipe2(os.O_CLOEXEC) if pidns else (-1, -1)
            opened += [status_w] if pidns else []
            gate_r, gate_w = os.pipe2(os.O_CLOEXEC) if gate_timeout is not None else (-1, -1)
            deadline = time.monotonic() + (gate_timeout or 0.0)  # before the fork is queued
            opened += [gate_r] if gate_r >= 0 else []
            setup = ChildSetup(
                report_fd=report_w,
                alive_fd=alive_r,
                alive_peer=alive_w,
                pdeathsig=plan.has("pdeathsig"),
                cgroup_fds=cgroup_fds,
                cpu_seconds=limits.cpu_seconds,
                netns=plan.has("netns"),
                userns=plan.has("userns"),
                pidns=pidns,
                status_fd=status_w,
                uid=os.getuid(),
                gid=os.getgid(),
                exec_fd=exec_fd_of(exec_path, pass_fds),
                argv=tuple(argv),
                exec_path=exec_path,
                env=env,
                pass_fds=tuple(pass_fds),
                stage=stage,
                heartbeat_fd=watch_end.fileno() if watch_end is not None and pidns else -1,
                lease_ttl=lease_ttl or 0.0,
                gate_fd=gate_r,
                gate_peer=gate_w,
                gate_timeout=(gate_timeout or 0.0) + GATE_SLACK_S,
            )
            future = spawner().popen_later(
                new_pidns=pidns == "init",
                args=argv,
                executable=exec_path,
                pass_fds=tuple(pass_fds),
                start_new_session=plan.has("session"),
                preexec_fn=setup,
                env=env,
                cwd=cwd,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                close_fds=True,
            )
        except BaseException:
            for fd in (*opened, report_r, report_w, gate_w):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            release()
            for g in groups:
                g.remove()
            raise
        return PendingStart(
            name=argv[0],
            future=future,
            gate=gate_w,
            deadline=deadline,
            leased=lease_ttl is not None,
            report=(report_r, report_w),
            after_fork=opened,
            groups=groups,
            track=track,
            on_failure=release,
            session=plan.has("session"),
        )
