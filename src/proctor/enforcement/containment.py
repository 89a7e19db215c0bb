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
from collections.abc import Sequence
from typing import IO, Any

from proctor.enforcement import _linux
from proctor.enforcement._cgroups import Group, owner_tag, reap_stale
from proctor.enforcement._contained import Contained, TerminationReport
from proctor.enforcement._plan import Limits, Plan, available, make_plan
from proctor.enforcement._probe import Capabilities, probe
from proctor.enforcement._spawn import ChildSetup, drain_report, exec_fd_of, spawner, start_watchdog
from proctor.enforcement._staging import staging_for
from proctor.enforcement._tree import ProcessTree, TreeSpec, exited, settled_pidns
from proctor.enforcement._watchdog import Heartbeat
from proctor.errors import EnforcementError

__all__ = [
    "BACKENDS",
    "Capabilities",
    "probe",
    "Limits",
    "TerminationReport",
    "Contained",
    "Containment",
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
        opened: list[int] = []
        status_r = -1  # handed over to the Contained, or closed here on failure
        beat, watch_end = socket.socketpair() if lease_ttl is not None else (None, None)
        try:
            groups = self._make_groups(plan, name, limits)
            cgroup_fds = [g.open_procs() for g in groups]
            opened += cgroup_fds
            report_r, report_w = os.pipe2(os.O_CLOEXEC)
            alive_r, alive_w = os.pipe2(os.O_CLOEXEC)
            opened += [report_r, report_w, alive_r, alive_w]
            pidns = ("userns" if plan.has("userns") else "init") if plan.has("pidns") else ""
            status_r, status_w = os.pipe2(os.O_CLOEXEC) if pidns else (-1, -1)
            opened += [status_w] if pidns else []
            setup = ChildSetup(
                report_fd=report_w,
                alive_fd=alive_r,
                alive_peer=alive_w,
                pdeathsig=plan.has("pdeathsig"),
                cgroup_fds=tuple(cgroup_fds),
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
            )
            try:
                popen = spawner().popen(
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
            except (OSError, subprocess.SubprocessError) as e:
                os.close(report_w)
                opened.remove(report_w)
                detail = drain_report(report_r)
                raise EnforcementError(f"cannot start {argv[0]!r}: {detail or e}") from e
            contained = self._track(
                popen, argv=argv, plan=plan, groups=groups, pidns_mode=pidns, status_fd=status_r
            )
            status_r = -1  # the Contained owns it now
            if beat is not None and watch_end is not None and lease_ttl is not None:
                _guard(contained, beat, watch_end, lease_ttl)
                beat = None  # the heartbeat owns it now
        except BaseException:
            if status_r >= 0:
                os.close(status_r)
            for g in groups:
                g.remove()
            raise
        finally:
            for fd in opened:
                with contextlib.suppress(OSError):
                    os.close(fd)
            for end in (beat, watch_end):
                if end is not None:
                    end.close()
        _log.info("started pid %d (%s) contained by %s", contained.pid, argv[0], ", ".join(plan.names))
        return contained

    def _make_groups(self, plan: Plan, name: str, limits: Limits) -> list[Group]:
        caps = self.capabilities
        groups: list[Group] = []
        try:
            if plan.has("cgroup2") and caps.cgroup2 is not None:
                own = _linux.own_cgroups().get("", "/")
                g = Group.create(caps.cgroup2, name, version=2, own_rel=own)
                groups.append(g)
                wanted = [c for c in ("memory", "pids") if plan.has(f"cgroup2:{c}")]
                if wanted:
                    parent = Group(os.path.dirname(g.path), version=2, controller="")
                    parent.write("cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
                if plan.has("cgroup2:memory") and limits.memory_mb:
                    g.write("memory.max", str(limits.memory_mb << 20))
                    if os.path.exists(g.file("memory.swap.max")):
                        g.write("memory.swap.max", "0")
                if plan.has("cgroup2:pids") and limits.max_pids:
                    g.write("pids.max", str(limits.max_pids + plan.relays))
            for controller in plan.v1:
                g = Group.create(caps.cgroup1[controller], name, version=1, controller=controller)
                groups.append(g)
                if controller == "memory" and limits.memory_mb:
                    g.write("memory.limit_in_bytes", str(limits.memory_mb << 20))
                    if os.path.exists(g.file("memory.memsw.limit_in_bytes")):
                        g.write("memory.memsw.limit_in_bytes", str(limits.memory_mb << 20))
                if controller == "pids" and limits.max_pids:
                    g.write("pids.max", str(limits.max_pids + plan.relays))
        except BaseException:
            for g in groups:
                g.remove()
            raise
        return groups

    def _track(
        self,
        popen: subprocess.Popen[bytes],
        *,
        argv: list[str],
        plan: Plan,
        groups: list[Group],
        pidns_mode: str,
        status_fd: int,
    ) -> Contained:
        pid = popen.pid
        pidfd = -1
        try:
            pidfd = os.pidfd_open(pid)
            st = _linux.read_stat(pid)
            pidns = None
            if pidns_mode:
                pidns = settled_pidns(pid, pidfd, for_children=pidns_mode == "userns")
                if pidns is None and exited(pidfd):
                    # A short command can end before its namespace is looked at (a
                    # zombie's /proc/PID/ns cannot be read). Its init is gone, and with it
                    # everything in its namespace; the session and cgroups still track
                    # whatever else it left, as for a tree without a pid namespace.
                    pass
                elif pidns is None or pidns == _linux.pidns_of(os.getpid()):
                    raise EnforcementError(f"pid {pid} did not get a pid namespace of its own")
        except (OSError, EnforcementError) as e:
            popen.kill()
            popen.wait()
            if pidfd >= 0:
                os.close(pidfd)
            if isinstance(e, EnforcementError):
                raise
            raise EnforcementError(f"cannot track pid {pid}: {e.strerror}") from e
        spec = TreeSpec(
            child=pid,
            child_start=st.starttime if st is not None else 0,
            session=plan.has("session"),
            pidns_mode=pidns_mode,
            groups=groups,
            pidns=pidns,
            direct_children=Contained.direct_children,
        )
        return Contained(
            popen=popen,
            argv=argv,
            backends=plan.names,
            tree=ProcessTree(spec),
            pidfd=pidfd,
            status_fd=status_fd,
        )


def _guard(contained: Contained, beat: socket.socket, watch_end: socket.socket, ttl: float) -> None:
    """Give a started tree its watchdog and start heartbeating to it (fail closed)."""
    watchdog = None
    if contained.tree_spec.pidns is None:  # with a pid namespace, its init is the watchdog
        try:
            watchdog = start_watchdog(
                contained.tree_spec, watch_end.fileno(), ttl, Contained.direct_children()
            )
        except (OSError, subprocess.SubprocessError) as e:
            contained.close()
            raise EnforcementError(f"cannot start the watchdog of pid {contained.pid}: {e}") from e
    contained.guard(Heartbeat(beat, ttl, contained.watchdog_lost), watchdog)
