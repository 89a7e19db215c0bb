"""A bounded soak of real governors, and the ledger of what their clients were told.

:class:`Soak` drives one ``proctor serve --shared`` (or several on one PostgreSQL
database) for a while from threads that run at once:

- **authorizers**: signed ``POST /v1/authorize`` as alice (allowed) and bob (denied);
  an allowed warrant is then started and finished over the API, started and left to the
  admin to revoke, started and abandoned (the governor's sweep must close it), handed
  to the admin to revoke before it is used (its start must then be refused), or left
  unused;
- **runners**: real ``proctor run`` executions: short ones, long ones that renew their
  lease, and process trees (``tests/integration/procs/tree.py``) that the admin revokes
  while they run;
- **the admin**: revokes what it is handed (executions by id, warrants), and, now and
  then, adds a principal, runs a process tree as it, revokes the principal while it
  runs and checks it may authorize nothing after; once, pushes a new policy version;
- **a direct appender**: a second writer of the same log (``Log.open(shared=True)``),
  taking turns with the governor for the sequencer lock.

Every answer a client acknowledged goes into the ledger (:class:`Ack`: the log index it
named, the event type and fields it implies; :class:`Expect`: an execution's start and
end; :class:`RunOutcome`: a ``proctor run``'s exit status and the processes of its tree
left alive). :func:`check_ledger` then holds the log to it. Randomness is seeded
(``PROCTOR_SOAK_SEED``); the seed is in every result.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from gov_exec import echo_request, start_body
from gov_server import GovernorServer, cli, client_of
from gov_support import POLICIES, signed_bundle
from log_invariants import Report, check_log, read_events
from proc_support import marked
from proctor.authorization.keys import PrincipalKey
from proctor.client import GovernorClient, GovernorError
from proctor.lineage.log import Log

__all__ = [
    "FIGURE_COLUMNS",
    "QUOTAS",
    "Ack",
    "Expect",
    "RunOutcome",
    "Soak",
    "SoakResult",
    "Soaked",
    "check_ledger",
    "pg_soak_nodes",
    "soak",
    "soak_seed",
    "sqlite_soak_node",
]

RUN_POLICY = POLICIES / "run"
"""Developers may run anything, with a 2 s lease (so a long run renews); others nothing."""

TREE = Path(__file__).parent / "integration" / "procs" / "tree.py"

QUOTAS = "".join(
    f"""
[quotas.principals.{name}]
max_running = 4096
max_starts_per_minute = 1000000
max_requests_per_second = 1000000
max_authorizations_per_second = 1000000
"""
    for name in ("alice", "bob", "admin", *(f"soak{k}" for k in range(1, 41)))
)
"""The soak measures the log under load, not the quotas: they are raised out of its way."""

FIGURE_COLUMNS = [
    "backend",
    "nodes",
    "seconds",
    "authorizations",
    "proctor runs",
    "API executions",
    "revocations",
    "direct appends",
    "events",
    "events/s",
    "violations",
    "answers checked",
]
"""The columns of :meth:`Soaked.figures`."""

_STARTED = re.compile(r"execution (ex_[a-z0-9]+) started")
_LEASE_LOST = re.compile(r"execution ex_[a-z0-9]+ terminated: lease-lost: ")


def soak_seed() -> int:
    """``PROCTOR_SOAK_SEED``, else a fresh random seed."""
    text = os.environ.get("PROCTOR_SOAK_SEED")
    return int(text) if text else random.SystemRandom().randrange(1 << 31)


def sqlite_soak_node(root: Path) -> list[GovernorServer]:
    """One ``proctor serve --shared`` on a fresh SQLite data directory (shared, so that
    a direct appender may take turns with it)."""
    return [
        GovernorServer(root, policy=RUN_POLICY, config=QUOTAS, serve_args=("--shared", "--node", "soak-a"))
    ]


def pg_soak_nodes(root: Path, dsn: str, count: int = 3) -> list[GovernorServer]:
    """``count`` ``proctor serve --shared`` on the PostgreSQL database ``dsn``, each with
    its own copy of the data directory (keys and configuration), as on separate hosts."""
    first = GovernorServer(
        root / "node-a",
        policy=RUN_POLICY,
        config=QUOTAS,
        store=dsn,
        serve_args=("--shared", "--node", "node-a"),
    )
    names = "bcdefgh"[: count - 1]
    for n in names:
        shutil.copytree(first.data, root / f"node-{n}" / "data", ignore=shutil.ignore_patterns("*.lock"))

    def node(n: str) -> GovernorServer:
        beside = types.SimpleNamespace(data=root / f"node-{n}" / "data", store=dsn)
        return GovernorServer(
            root / f"node-{n}",
            beside=cast(GovernorServer, beside),
            serve_args=("--shared", "--node", f"node-{n}"),
        )

    with ThreadPoolExecutor(max(1, len(names))) as pool:  # the others start side by side
        futures = [pool.submit(node, n) for n in names]
    started = [f.result() for f in futures if f.exception() is None]
    failed = [f.exception() for f in futures if f.exception() is not None]
    if failed:
        for server in [first, *started]:
            server.stop()
        raise RuntimeError(f"a governor node did not start: {failed[0]}") from failed[0]
    return [first, *started]


@dataclass(frozen=True)
class Ack:
    """An answer a client was given: the log index it named and what must be there."""

    index: int
    type: str
    fields: Mapping[str, Any]
    what: str


@dataclass(frozen=True)
class Expect:
    """An execution a client saw start, and how the log must say it ended."""

    execution: str
    end: str
    """``execution.completed`` or ``execution.terminated``."""
    reasons: tuple[str, ...]
    """The terminated event's reason must be one of these (empty: any)."""
    what: str


@dataclass(frozen=True)
class RunOutcome:
    """One ``proctor run``: its kind, exit status and what was left of its tree."""

    execution: str
    kind: str
    """``short``, ``long`` (renews its lease), ``revoked`` (by id), ``principal`` (its principal revoked)."""
    status: int
    expected_status: int
    survivors: tuple[int, ...]


@dataclass
class SoakResult:
    """What a soak did and was told."""

    seed: int
    seconds: float
    nodes: int
    acks: list[Ack] = field(default_factory=list)
    expects: list[Expect] = field(default_factory=list)
    runs: list[RunOutcome] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    """Answers that broke a rule while the soak ran (an unexpected error, a start that
    should have been refused): each one is a failure of the soak."""


@dataclass
class _Revocable:
    execution: str
    api: bool
    what: str
    started: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Soak:
    """One soak of ``servers`` (all serving one log) for ``seconds``."""

    def __init__(self, servers: list[GovernorServer], *, seconds: float, seed: int, work: Path) -> None:
        self.servers = servers
        self.a = servers[0]
        self.admin_key = self.a.data / "keys" / "admin.key"
        self.work = work
        self.result = SoakResult(seed=seed, seconds=seconds, nodes=len(servers))
        self.seconds = seconds
        self._lock = threading.Lock()
        self._revocable: queue.Queue[_Revocable] = queue.Queue()
        self._warrants: queue.Queue[tuple[str, str, tuple[str, ...], GovernorServer]] = queue.Queue()
        self._producers_done = threading.Event()
        self.deadline = 0.0
        self.bob_key = work / "bob.key"

    # -- the ledger ------------------------------------------------------------------

    def ack(self, index: Any, kind: str, what: str, **fields: Any) -> None:
        if type(index) is not int:
            self.fail(f"{what}: an answer without a log index ({index!r})")
            return
        with self._lock:
            self.result.acks.append(Ack(index, kind, fields, what))

    def expect(self, execution: str, end: str, reasons: tuple[str, ...], what: str) -> None:
        with self._lock:
            self.result.expects.append(Expect(execution, end, reasons, what))

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.result.counts[name] += n

    def fail(self, message: str) -> None:
        with self._lock:
            self.result.failures.append(message)

    # -- the run ---------------------------------------------------------------------

    def run(self) -> SoakResult:
        """Prepare, run every thread until the deadline, wait until nothing runs."""
        began = time.monotonic()
        self._prepare()
        self.deadline = time.monotonic() + self.seconds
        producers = [threading.Thread(target=self._guard, args=(self._authorizer, n)) for n in range(2)]
        producers += [threading.Thread(target=self._guard, args=(self._runner, n)) for n in range(2)]
        producers.append(threading.Thread(target=self._guard, args=(self._principals, 0)))
        others = [
            threading.Thread(target=self._guard, args=(self._admin, 0)),
            threading.Thread(target=self._guard, args=(self._appender, 0)),
        ]
        for t in producers + others:
            t.start()
        for t in producers:
            t.join()
        self._producers_done.set()
        for t in others:
            t.join()
        self._settle()
        self.result.seconds = time.monotonic() - began
        self.result.counts["soak seconds"] = round(self.seconds)
        return self.result

    def _guard(self, target: Any, n: int) -> None:
        try:
            target(n)
        except Exception as e:  # a thread's failure is the soak's, never lost
            self.fail(f"{target.__name__}[{n}] stopped: {type(e).__name__}: {e}")

    def _prepare(self) -> None:
        bob = PrincipalKey.generate("bob")
        bob.save(self.bob_key)
        with client_of(self.a, self.admin_key) as admin:
            admin.json(
                "POST",
                "/v1/principals",
                {"name": "bob", "public_key": bob.public_key_b64, "attrs": {"role": "ops"}},
            )
        self.result.added.append("bob")

    def _settle(self, timeout: float = 30.0) -> None:
        """Wait until no execution runs (the abandoned ones are swept: lease 2 s, grace 1 s)."""
        deadline = time.monotonic() + timeout
        with client_of(self.a, self.admin_key) as admin:
            while True:
                running = admin.json("GET", "/v1/executions")["executions"]
                if not running or time.monotonic() > deadline:
                    break
                time.sleep(0.25)
        if running:
            self.fail(f"still running {timeout:.0f} s after the soak: {[r.get('id') for r in running]}")

    def _node(self, rng: random.Random) -> GovernorServer:
        return rng.choice(self.servers)

    # -- authorizations and API executions ----------------------------------------------

    def _authorizer(self, n: int) -> None:
        rng = random.Random(self.result.seed * 1000 + n)
        server = self.servers[n % len(self.servers)]
        with client_of(server) as alice, client_of(server, self.bob_key) as bob:
            i = 0
            while time.monotonic() < self.deadline:
                i += 1
                argv = (f"soak-{n}-{i}",)
                if rng.random() < 0.25:
                    self._denied(bob, argv)
                    continue
                issued = self._allowed(alice, argv)
                if issued is None:
                    continue
                token, wid = issued
                r = rng.random()
                if r < 0.5:
                    ex = self._start(alice, token, wid, argv)
                    if ex is not None:
                        self._finish_own(alice, ex)
                elif r < 0.62:
                    ex = self._start(alice, token, wid, argv)
                    if ex is not None:
                        self._revocable.put(_Revocable(ex, api=True, what=f"API execution {ex}"))
                elif r < 0.66:
                    ex = self._start(alice, token, wid, argv)
                    if ex is not None:  # its enforcer vanishes: the sweep must close it
                        self.expect(ex, "execution.terminated", ("supervisor-lost",), f"abandoned {ex}")
                        self.count("API executions abandoned")
                elif r < 0.74:
                    self._warrants.put((token, wid, argv, self._node(rng)))
                else:
                    self.count("warrants left unused")

    def _denied(self, bob: GovernorClient, argv: tuple[str, ...]) -> None:
        answer = bob.authorize(echo_request(*argv))
        self.count("authorizations")
        self.count("denied")
        if answer.get("allow") is not False or "warrant" in answer:
            self.fail(f"bob (role ops) was allowed {argv}: {answer}")
            return
        self.ack(answer.get("log_index"), "decision", "a deny", principal="bob", decision="deny")

    def _allowed(self, alice: GovernorClient, argv: tuple[str, ...]) -> tuple[str, str] | None:
        answer = alice.authorize(echo_request(*argv))
        self.count("authorizations")
        if answer.get("allow") is not True:
            reason = str(answer.get("decision", {}).get("reason", ""))
            if "the warrant could not be issued" not in reason:
                self.fail(f"alice (role dev) was denied {argv}: {answer.get('decision')}")
                return None
            # Fail closed under load: the policy allowed, the warrant was not minted in
            # time, so the answer is a deny; the log holds the allow and (from the minting
            # helper's reserved slot) the warrant.failed after it.
            at = answer.get("log_index")
            self.count("allowed, warrant not issued in time (denied)")
            self.ack(at, "decision", "an allow without a warrant", principal="alice", decision="allow")
            if "minting helper" in reason and type(at) is int:
                self.ack(at + 1, "warrant.failed", "a warrant not minted in time", decision_index=at)
            return None
        self.count("allowed")
        at, warrant = answer["log_index"], answer["warrant"]
        self.ack(at, "decision", "an allow", principal="alice", decision="allow")
        self.ack(
            warrant["log_index"], "warrant.issued", "a warrant", warrant=warrant["id"], decision_index=at
        )
        return str(warrant["token"]), str(warrant["id"])

    def _finish_own(self, alice: GovernorClient, ex: str) -> None:
        """Finish an API execution at once, as completed; on a machine so loaded that its
        2 s lease lapsed first, the sweep ended it (supervisor-lost) and the finish is refused."""
        try:
            self._finish(alice, ex, "completed")
        except GovernorError as e:
            if e.status != 409:
                raise
            self.expect(ex, "execution.terminated", ("supervisor-lost",), f"{ex}, swept before its finish")
            self.count("API executions swept before their finish (load)")
            return
        self.count("API executions completed")

    def _start(self, alice: GovernorClient, token: str, wid: str, argv: tuple[str, ...]) -> str | None:
        answer = alice.json("POST", "/v1/executions", start_body(token, *argv))
        ex = str(answer["execution"])
        self.ack(answer.get("log_index"), "execution.started", "an API start", execution=ex, warrant=wid)
        self.count("API executions started")
        return ex

    def _finish(self, alice: GovernorClient, ex: str, expected: str) -> None:
        answer = alice.json("POST", f"/v1/executions/{ex}/finish", {"outcome": "completed", "exit_status": 0})
        status = answer.get("status")
        if status != expected:
            self.fail(f"finishing {ex}: the governor said {status!r}, expected {expected!r}")
        kind = "execution.completed" if status == "completed" else "execution.terminated"
        self.ack(answer.get("log_index"), kind, f"the finish of {ex}", execution=ex)

    # -- proctor run -----------------------------------------------------------------------

    def _runner(self, n: int) -> None:
        rng = random.Random(self.result.seed * 1000 + 100 + n)
        while time.monotonic() < self.deadline:
            server = self._node(rng)
            marker = f"soakrun-{self.result.seed}-{n}-{rng.randrange(1 << 40):x}"
            r = rng.random()
            if r < 0.4:
                self._proctor_run(server, server.key, "short", ["/bin/echo", marker], marker)
            elif r < 0.65:
                hold = f"{rng.uniform(2.5, 4.0):.2f}"  # past the 2 s lease: it renews
                code = "import sys, time; time.sleep(float(sys.argv[1]))"
                self._proctor_run(
                    server, server.key, "long", [sys.executable, "-c", code, hold, marker], marker
                )
            else:
                self._proctor_run(server, server.key, "revoked", [sys.executable, str(TREE), marker], marker)

    def _proctor_run(
        self,
        server: GovernorServer,
        key: Path,
        kind: str,
        command: list[str],
        marker: str,
        *,
        revoke: Any = None,
    ) -> None:
        """Run ``command`` under ``proctor run``; a tree waits for ``revoke(execution)``
        (default: the admin thread revokes it by id) and must exit 79, dead."""
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "proctor",
                "run",
                "--server",
                server.url,
                "--key",
                str(key),
                "--",
                *command,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stderr is not None
            assert proc.stdout is not None
            line = proc.stderr.readline()
            found = _STARTED.search(line)
            if found is None:
                rest = proc.communicate(timeout=60)[1]
                self.fail(f"proctor run ({kind}) did not start: exit {proc.returncode}: {line}{rest[-2000:]}")
                return
            ex = found.group(1)
            self.count(f"runs ({kind})")
            expected = 0
            if kind in ("revoked", "principal"):
                expected = 79
                if proc.stdout.readline().strip() != "ready":
                    self.fail(f"proctor run {ex}: its tree did not report ready")
                if revoke is None:
                    item = _Revocable(ex, api=False, what=f"proctor run {ex}")
                    self._revocable.put(item)
                    item.done.wait(120)
                else:
                    revoke(ex)
                self.expect(ex, "execution.terminated", ("revoked",), f"revoked proctor run {ex}")
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                self.fail(f"proctor run {ex} ({kind}) did not exit within 60 s")
                proc.kill()
                out, err = proc.communicate(timeout=30)
            survivors = tuple(marked(marker, exclude=b"proctor"))
            if kind in ("short", "long"):
                lost = _LEASE_LOST.search(err) if proc.returncode == 79 else None
                if lost is None:
                    self.expect(ex, "execution.completed", (), f"proctor run {ex} ({kind})")
                else:
                    # So loaded a machine that it could not renew its 2 s lease in time: it
                    # was stopped (fail closed), and the log must say so.
                    expected = 79
                    reasons = ("lease-lost", "supervisor-lost")
                    self.expect(ex, "execution.terminated", reasons, f"proctor run {ex} ({kind}), lease lost")
                    self.count("proctor runs stopped by a lost lease (load)")
            with self._lock:
                self.result.runs.append(RunOutcome(ex, kind, proc.returncode, expected, survivors))
            if proc.returncode != expected:
                self.fail(
                    f"proctor run {ex} ({kind}) exited {proc.returncode}, expected {expected}: {err[-2000:]}"
                )
            if kind == "short" and expected == 0 and out.strip() != marker:
                self.fail(f"proctor run {ex}: expected {marker!r} on stdout, found {out!r}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            for pid in marked(marker):  # never leave a process behind, whatever happened
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    # -- the admin -----------------------------------------------------------------------

    def _revoke(self, admin: GovernorClient, kind: str, target: str) -> None:
        answer = admin.json("POST", "/v1/revocations", {"kind": kind, "target": target, "reason": "soak"})
        self.ack(
            answer.get("log_index"),
            "revocation",
            f"revoking {kind} {target}",
            target={"kind": kind, "id": target},
        )
        self.count(f"revocations ({kind})")

    def _admin(self, _n: int) -> None:
        rng = random.Random(self.result.seed * 1000 + 200)
        with client_of(self.a, self.admin_key) as admin:
            clients = {s.url: client_of(s) for s in self.servers}
            try:
                while not (
                    self._producers_done.is_set() and self._revocable.empty() and self._warrants.empty()
                ):
                    try:
                        item = self._revocable.get(timeout=0.05)
                    except queue.Empty:
                        item = None
                    if item is not None:
                        # Let it run a moment first (a real run renews its lease meanwhile).
                        time.sleep(max(0.0, item.started + rng.uniform(0.1, 1.0) - time.monotonic()))
                        try:
                            self._revoke(admin, "execution", item.execution)
                            if item.api:
                                self._finish_revoked(clients[self.a.url], item)
                        except GovernorError as e:  # one failed answer, reported; the admin goes on
                            self.fail(f"revoking {item.what}: {e}")
                        finally:
                            item.done.set()
                    with contextlib.suppress(queue.Empty):
                        token, wid, argv, server = self._warrants.get_nowait()
                        try:
                            self._revoke(admin, "warrant", wid)
                            self._refused_start(clients[server.url], token, wid, argv)
                        except GovernorError as e:
                            self.fail(f"revoking warrant {wid}: {e}")
            finally:
                for c in clients.values():
                    c.close()

    def _finish_revoked(self, alice: GovernorClient, item: _Revocable) -> None:
        """Its enforcer finishes a revoked API execution as completed: the log says
        terminated (revoked). Unless its lease lapsed first (the admin was busy): then the
        sweep ended it (terminated, supervisor-lost) and the finish is refused."""
        try:
            self._finish(alice, item.execution, "terminated")
        except GovernorError as e:
            if e.status != 409:
                raise
            self.expect(
                item.execution, "execution.terminated", ("supervisor-lost",), f"{item.what}, swept first"
            )
            self.count("API executions swept before the admin revoked them")
            return
        self.expect(item.execution, "execution.terminated", ("revoked",), item.what)

    def _refused_start(self, alice: GovernorClient, token: str, wid: str, argv: tuple[str, ...]) -> None:
        try:
            answer = alice.json("POST", "/v1/executions", start_body(token, *argv))
        except GovernorError as e:
            if e.status not in (403, 503):
                self.fail(
                    f"a start under revoked warrant {wid}: status {e.status}, expected 403 (or 503): {e}"
                )
            self.count("starts refused (warrant revoked)")
            return
        self.fail(f"a start under revoked warrant {wid} was accepted: {answer}")

    def _principals(self, _n: int) -> None:
        """Now and then: a new principal runs a tree, is revoked while it runs, and may
        authorize nothing after. Once, half way: a new policy version."""
        rng = random.Random(self.result.seed * 1000 + 300)
        period = max(6.0, self.seconds / 5)
        pushed = False
        k = 0
        with client_of(self.a, self.admin_key) as admin:
            while time.monotonic() < self.deadline - 4:
                time.sleep(
                    min(rng.uniform(0.5, 1.5) * period / 2, max(0.0, self.deadline - time.monotonic()))
                )
                if not pushed and time.monotonic() > self.deadline - self.seconds / 2:
                    pushed = True
                    version = int(admin.json("GET", "/v1/policy")["bundle"]["version"]) + 1
                    bundle = signed_bundle(self.a.data, RUN_POLICY, version=version)
                    answer = admin.json("PUT", "/v1/policy", bundle)
                    self.ack(
                        answer.get("log_index"),
                        "policy.activated",
                        "a policy push",
                        bundle=answer.get("bundle"),
                    )
                    self.count("policy pushes")
                if time.monotonic() > self.deadline - 4:
                    break
                k += 1
                self._principal_round(admin, rng, k)

    def _principal_round(self, admin: GovernorClient, rng: random.Random, k: int) -> None:
        name = f"soak{k}"
        key = PrincipalKey.generate(name)
        path = self.work / f"{name}.key"
        key.save(path)
        admin.json(
            "POST",
            "/v1/principals",
            {"name": name, "public_key": key.public_key_b64, "attrs": {"role": "dev"}},
        )
        with self._lock:
            self.result.added.append(name)
        server = self._node(rng)
        marker = f"soakprincipal-{self.result.seed}-{k}-{rng.randrange(1 << 40):x}"

        stop = threading.Event()
        racer = threading.Thread(target=self._guard, args=(lambda _n: self._race(path, name, stop), k))

        def revoke(ex: str) -> None:
            racer.start()  # its starts race the revocation
            time.sleep(rng.uniform(0.2, 0.8))
            self._revoke(admin, "principal", name)
            time.sleep(0.3)
            stop.set()

        try:
            self._proctor_run(
                server, path, "principal", [sys.executable, str(TREE), marker], marker, revoke=revoke
            )
        finally:
            stop.set()
            if racer.is_alive():
                racer.join()
        with client_of(self._node(rng), path) as revoked:
            try:
                answer = revoked.authorize(echo_request("after"))
            except GovernorError as e:
                if e.status != 403:
                    self.fail(f"revoked principal {name} authorizing: status {e.status}, expected 403: {e}")
                self.count("authorizations refused (principal revoked)")
                return
            if answer.get("allow") is not False:
                self.fail(f"revoked principal {name} was allowed: {answer}")
            else:
                self.count("authorizations refused (principal revoked)")

    def _race(self, path: Path, name: str, stop: threading.Event) -> None:
        """Authorize and start API executions as ``name`` until ``stop``, across its
        revocation: each start is refused or recorded before the revocation (the log
        check finds one recorded after it); each started one is finished, or swept."""
        stock: list[tuple[str, str, tuple[str, ...]]] = []
        i = 0
        with client_of(self.a, path) as racer:
            while not stop.is_set():
                i += 1
                argv: tuple[str, ...] = (f"race-{name}-{i}",)
                try:
                    if len(stock) < 3:  # warrants in hand, so that starts go on past the revocation
                        answer = racer.authorize(echo_request(*argv))
                        self.count("authorizations")
                        if answer.get("allow") is True:
                            warrant = answer["warrant"]
                            stock.append((str(warrant["token"]), str(warrant["id"]), argv))
                            self.ack(answer.get("log_index"), "decision", "a racing allow", principal=name)
                            self.ack(
                                warrant["log_index"],
                                "warrant.issued",
                                "a racing warrant",
                                warrant=warrant["id"],
                            )
                        continue
                    token, wid, argv = stock.pop(0)
                    started = racer.json("POST", "/v1/executions", start_body(token, *argv))
                except GovernorError as e:
                    if e.status != 403:
                        self.fail(f"{name} racing its revocation: status {e.status}, expected 403: {e}")
                    self.count("starts and authorizations refused (racing a revocation)")
                    time.sleep(0.02)  # refused from now on: no need to flood (nor to meet a quota)
                    continue
                ex = str(started["execution"])
                self.ack(
                    started.get("log_index"),
                    "execution.started",
                    f"a racing start of {name}",
                    execution=ex,
                    warrant=wid,
                )
                self.count("API executions started")
                try:
                    self._finish(racer, ex, "completed")
                except GovernorError:  # revoked meanwhile: its own finish is refused; the sweep closes it
                    self.expect(ex, "execution.terminated", (), f"racing {ex}, revoked before its finish")

    # -- the direct appender ---------------------------------------------------------------

    def _appender(self, _n: int) -> None:
        rng = random.Random(self.result.seed * 1000 + 400)
        n = 0
        with Log.open(self.a.data, shared=True, store=self.a.store) as log:
            log.sequencer_timeout = 60.0  # a loaded machine: wait for the governor as long as it takes
            while time.monotonic() < self.deadline:
                batch = [
                    {"v": 1, "type": "approval", "time": _now(), "soak": n + j}
                    for j in range(rng.randint(1, 3))
                ]
                for index, event in zip(log.append_many(batch), batch, strict=True):
                    self.ack(index, "approval", "a direct append", soak=event["soak"])
                n += len(batch)
                self.count("direct appends", len(batch))
                time.sleep(rng.uniform(0.02, 0.15))


@dataclass
class Soaked:
    """One soak and what was read back after it."""

    backend: str
    result: SoakResult
    report: Report
    ledger_problems: list[str]
    answers_checked: int
    verify_status: int
    verify_out: str
    verify_err: str

    def context(self) -> str:
        """Which soak, and how to repeat it."""
        return f"soak on {self.backend}, seed {self.result.seed} (PROCTOR_SOAK_SEED={self.result.seed} repeats it)"

    @property
    def ok(self) -> bool:
        """Whether everything held: no failed answer, no violation, verify passed, the ledger held."""
        return (
            not self.result.failures
            and self.report.ok
            and not self.report.open_executions
            and not self.ledger_problems
            and self.verify_status == 0
        )

    def figures(self) -> list[object]:
        """One row of :data:`FIGURE_COLUMNS`, from what ran."""
        counts, report = self.result.counts, self.report
        load = max(1.0, float(counts["soak seconds"]))
        return [
            self.backend,
            self.result.nodes,
            counts["soak seconds"],
            counts["authorizations"],
            sum(v for k, v in counts.items() if k.startswith("runs (")),
            counts["API executions started"],
            sum(v for k, v in counts.items() if k.startswith("revocations (")),
            counts["direct appends"],
            report.events,
            f"{report.events / load:.0f}",
            len(report.violations),
            self.answers_checked,
        ]

    def summary(self) -> list[str]:
        """What the figures mean, in lines."""
        result, counts = self.result, self.result.counts
        lines = [
            f"{self.backend}: {result.nodes} governor node(s), {counts['soak seconds']} s of load "
            f"({result.seconds:.0f} s with set-up and settling), seed {result.seed}",
            f"violations found by check_log: {len(self.report.violations)}; proctor log verify "
            f"{'passed' if self.verify_status == 0 else 'FAILED'}; acknowledged answers checked "
            f"against the log: {self.answers_checked}, problems {len(self.ledger_problems)}",
        ]
        lines += [f"{name}: {n}" for name, n in sorted(counts.items()) if name != "soak seconds"]
        return lines


def soak(servers: list[GovernorServer], backend: str, work: Path, *, seconds: float, seed: int) -> Soaked:
    """Soak ``servers`` (which serve one log), stop them, and read the log back: its
    invariants (:func:`log_invariants.check_log`), ``proctor log verify``, the ledger."""
    try:
        result = Soak(servers, seconds=seconds, seed=seed, work=work).run()
    finally:
        for server in servers:
            server.stop()
    data, store = servers[0].data, servers[0].store
    report = check_log(data, store=store)
    problems, checked = check_ledger(result, read_events(data, store=store))
    at = ("--store", store) if store is not None else ()
    verify = cli("log", "verify", "--data", str(data), "--json", *at, check=False, timeout=300)
    return Soaked(backend, result, report, problems, checked, verify.returncode, verify.stdout, verify.stderr)


# -- holding the log to the ledger ---------------------------------------------------------


def check_ledger(
    result: SoakResult, events: Iterable[tuple[int, Mapping[str, Any]]]
) -> tuple[list[str], int]:
    """Every acknowledged answer of ``result`` against the log's events.

    Returns:
        (problems, how many answers were checked).
    """
    by_index: dict[int, Mapping[str, Any]] = {}
    started: dict[str, int] = {}
    ends: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
    added: set[str] = set()
    for index, event in events:
        by_index[index] = event
        kind = event.get("type")
        if kind == "execution.started":
            started[str(event.get("execution"))] = index
        elif kind in ("execution.completed", "execution.terminated"):
            ends.setdefault(str(event.get("execution")), []).append((index, event))
        elif kind == "principal.changed" and event.get("change") == "added":
            added.add(str(event.get("principal")))
    problems: list[str] = []
    checked = 0
    for ack in result.acks:
        checked += 1
        logged = by_index.get(ack.index)
        if logged is None:
            problems.append(f"{ack.what}: leaf {ack.index} is not in the log")
            continue
        wrong = {k: logged.get(k) for k, v in ack.fields.items() if logged.get(k) != v}
        if logged.get("type") != ack.type or wrong:
            problems.append(
                f"{ack.what}: leaf {ack.index} is {logged.get('type')} {json.dumps(wrong)}, "
                f"expected {ack.type} {json.dumps(dict(ack.fields))}"
            )
    for exp in result.expects:
        checked += 1
        if exp.execution not in started:
            problems.append(f"{exp.what}: no execution.started of {exp.execution}")
            continue
        found = ends.get(exp.execution, [])
        if len(found) != 1:
            problems.append(f"{exp.what}: {len(found)} terminal events, expected one")
            continue
        _, end = found[0]
        if end.get("type") != exp.end or (exp.reasons and end.get("reason") not in exp.reasons):
            problems.append(
                f"{exp.what}: ended as {end.get('type')} ({end.get('reason')}), expected {exp.end} {exp.reasons}"
            )
    for name in result.added:
        checked += 1
        if name not in added:
            problems.append(f"principal {name} was added, the log has no principal.changed 'added' of it")
    for run in result.runs:
        checked += 1
        if run.status != run.expected_status:
            problems.append(
                f"proctor run {run.execution} ({run.kind}) exited {run.status}, expected {run.expected_status}"
            )
        if run.survivors:
            problems.append(
                f"proctor run {run.execution} ({run.kind}) left processes alive: {list(run.survivors)}"
            )
    return problems, checked
