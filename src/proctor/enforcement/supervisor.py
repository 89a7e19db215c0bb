"""``proctor run``: start a command only under a valid warrant, keep verifying, and kill
the whole process tree the moment trust breaks.

Steps (numbered as in ``docs/architecture.md``, "One ``proctor run``, from measurement
to receipt"):

1. Measure: resolve the command and hash the executable and any script it runs.
2. Authorize with the governor (argv and measurement in the request); a required
   approval is waited for (``_approval``). Denied: exit 77, nothing started.
3. Verify the warrant locally: signature, validity window, argv digest, measurement,
   zone. Any mismatch: exit 77, nothing started.
4. Start under containment, executing the measured bytes (``prepare``), after the
   governor recorded ``execution.started`` (the warrant is single-use). The child is
   set up (forked, in its cgroups and namespaces) while the governor records the start,
   and starts the command only on the go given after that answer
   (:meth:`~proctor.enforcement.containment.Containment.prepare`, ADR 0024).
5. Keep the lease: renew every TTL/3 (each renewal re-verifies everything at the
   governor and re-hashes the measured files here); follow pushed revocations and
   policy changes on ``GET /v1/stream``; watch the measured files with inotify.
6. Terminate on any broken trust — revoked, expired, denied on re-evaluation,
   integrity, obligation exceeded, lease lost (governor unreachable until the lease
   expired: no grace beyond it): SIGTERM, a short grace, SIGKILL of the whole tree;
   ``execution.terminated`` with the reason; exit 79.
   Interrupted (SIGINT, SIGTERM or SIGHUP to ``proctor run``): the same kill,
   ``execution.terminated`` with reason ``interrupted``; exit 128 + the signal. Before
   the command started, nothing starts and a start the governor recorded is finished
   ``failed``, reason ``interrupted``.
7. Otherwise pass the exit status through; ``execution.completed`` with the exit
   status, duration, resource usage and the SHA-256 of stdout and stderr, which are
   streamed through while hashed.

Every failure of the supervisor's own machinery fails closed: it stops the tree.

Why one module: the steps above are one sequence over one state (the contained tree,
the lease deadline, the kill lock and the first reason to kill), and their order is the
guarantee; it is audited here, in the order it runs, while the mechanisms each step
uses live in their own modules.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import signal
import socket
import sys
import threading
import time
from base64 import b64decode
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from proctor.authorization.keys import PrincipalKey
from proctor.authorization.warrants import (
    VerifiedWarrant,
    WarrantClaims,
    WarrantRequest,
    args_digest,
    verify_warrant_bounds,
)
from proctor.client import GovernorError
from proctor.enforcement._approval import ApprovingGovernors, governor_urls
from proctor.enforcement._failover import Answered
from proctor.enforcement._leases import LeaseCheck
from proctor.enforcement._probe import probe_ahead
from proctor.enforcement.containment import Containment, Limits, PendingStart
from proctor.enforcement.integrity import IntegrityWatch
from proctor.enforcement.measure import Prepared, measure, prepare
from proctor.errors import EnforcementError, ProctorError, VerificationError, WarrantError
from proctor.policy.decision import describe_denial
from proctor.verification import check_measurement, measured_resource
from proctor.verification.lease import (
    enforcer_ttl_s,
    lease_deadline,
    lease_remaining_s,
    renewal_interval_s,
    renewal_timeout_s,
)
from proctor.verification.lease_answer import named_start

__all__ = ["EXIT_DENIED", "EXIT_TERMINATED", "RunOptions", "Supervisor"]

EXIT_DENIED = 77
EXIT_TERMINATED = 79
INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Signals that end a run as interrupted (exit 128 + the signal), its record included."""
_CHUNK = 65536
_ENDING_WAIT_S = 7.0  # the finishes of refused starts (each at most 6.5 s), before the run ends
AHEAD_TTL_S = 60.0
"""The lease TTL a child set up ahead is prepared with; the warrant's comes with the go."""


@dataclass(frozen=True)
class _Terms:
    """What the start is prepared with: the warrant's id, the zone it is checked for, its
    lease TTL and obligations. Read from the authorization's answer (unsigned) so that
    the start is sent before the warrant is verified; :meth:`check` holds them to the
    verified claims before the go."""

    warrant: str
    zone: str
    lease_ttl_ms: int
    obligations: dict[str, Any]

    @classmethod
    def of(cls, claims: WarrantClaims, zone: str) -> _Terms:
        """The terms of verified claims."""
        return cls(claims.warrant_id, zone, claims.lease_ttl_ms, dict(claims.obligations))

    @classmethod
    def hinted(cls, answer: dict[str, Any], zone: str) -> _Terms | None:
        """The terms the answer states; ``None`` when it does not state them all (``zone``:
        ``--zone``, else the answer's)."""
        warrant, decision = answer.get("warrant"), answer.get("decision")
        if not isinstance(warrant, dict) or not isinstance(decision, dict):
            return None
        ident, ttl, named = warrant.get("id"), warrant.get("lease_ttl_ms"), warrant.get("zone")
        obligations = decision.get("obligations")
        if not zone and not isinstance(named, str):
            return None
        if type(ident) is not str or type(ttl) is not int or not isinstance(obligations, dict):
            return None
        return cls(ident, zone or str(named), ttl, obligations)

    def check(self, claims: WarrantClaims) -> None:
        """Raises :class:`WarrantError` when the verified claims are not exactly these
        terms: equal JSON, types included (``1``, ``1.0`` and ``true`` are equal in
        Python, and an obligation read as another type would not be enforced)."""
        theirs = (claims.warrant_id, claims.lease_ttl_ms, dict(claims.obligations))
        if _exact(theirs) != _exact((self.warrant, self.lease_ttl_ms, self.obligations)):
            raise WarrantError(
                f"the answer's terms (warrant {self.warrant}, lease {self.lease_ttl_ms} ms, obligations "
                f"{self.obligations}) are not the warrant's ({theirs[0]}, {theirs[1]} ms, {theirs[2]})",
                reason="scope",
            )


def _exact(value: Any) -> bytes:
    """``value`` as JSON whose bytes differ for values of different JSON types."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # not JSON (a hostile answer's value): never equal to the claims'
        return b"\x00" + repr(value).encode()


def _limits(obligations: dict[str, Any]) -> Limits:
    """The containment limits the obligations ask for."""
    return Limits(
        memory_mb=_int(obligations.get("memory_limit_mb")),
        max_pids=_int(obligations.get("max_pids")),
        no_network=obligations.get("no_network") is True,
    )


class _Interrupted(KeyboardInterrupt):
    """An interrupt before the command started (raised by the handler on the main thread)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.said = False  # the run said what it left


@dataclass
class RunOptions:
    """How ``proctor run`` governs one command.

    ``server`` is one governor URL, or several of one deployment separated by commas:
    the enforcer fails over between them (:mod:`proctor.enforcement._failover`).
    """

    server: str
    key: PrincipalKey
    action: str = "exec"
    resource: str | None = None
    zone: str = ""
    receipt: str | None = None
    warrant_key: bytes | None = None
    grace: float = 0.5
    enforcer: str = field(default_factory=socket.gethostname)
    quiet: bool = False


class Supervisor:
    """One governed execution."""

    def __init__(
        self,
        options: RunOptions,
        argv: Sequence[str],
        *,
        stdout: IO[bytes] | None = None,
        stderr: IO[bytes] | None = None,
    ) -> None:
        self.options = options
        self.argv = list(argv)
        self._out = stdout or sys.stdout.buffer
        self._err = stderr or sys.stderr.buffer
        self._governors = ApprovingGovernors(governor_urls(options.server), options.key, on_note=self.say)
        self._kill_lock = threading.Lock()
        self._reason: str | None = None
        self._detail = ""
        self._report: Any = None
        self._done = threading.Event()
        self._renew_now = threading.Event()
        self._contained: Any = None
        self._execution = ""
        self._warrants: set[str] = set()
        self._lease_deadline = 0.0
        self._accept_renewal = LeaseCheck(b"", "", 0).renewal("")  # none until a verified start
        self._renew_error = ""
        self._integrity: IntegrityWatch | None = None
        self._digests = {"stdout": hashlib.sha256(), "stderr": hashlib.sha256()}
        self._output_bytes = 0
        self._max_output: int | None = None
        self._sealed: Prepared | None = None
        self._pending: PendingStart | None = None
        self._ahead_lock = threading.Lock()
        self._closed = False
        self._containment: Containment | None = None
        self._interrupt = 0  # the first interrupting signal (INTERRUPTS), once one came
        self._abortable = False  # the handler may stop the run where it is (before the go)
        self._replaced: dict[int, Any] = {}  # the handlers ours replaced, to put back
        self._start_future: Future[Answered] | None = None
        self._unaccepted: list[tuple[str, str]] = []  # (execution, warrant) named by answers not accepted
        self._ending: threading.Thread | None = None  # _end_unaccepted beside the run, joined at its end
        self._warrant_id: str | None = None  # the verified warrant's id, once it is known

    def say(self, message: str) -> None:
        """One prefixed line on stderr (never on the command's stdout)."""
        if not self.options.quiet:
            sys.stderr.write(f"proctor: {message}\n")
            sys.stderr.flush()

    # -- the run ---------------------------------------------------------------

    def run(self) -> int:
        """Govern the command; return the process exit code."""
        try:
            self._catch_interrupts()
            self._abort_point(abortable=True)  # one that came while they were set
            return self._run()
        except _Interrupted as e:
            if not e.said:
                self.say(f"interrupted by {signal.Signals(e.signum).name}; nothing started")
            return 128 + e.signum
        finally:
            self._abortable = False
            with self._ahead_lock:  # a child the ahead thread sets up after this ends itself
                self._closed = True
                pending = self._pending
            if pending is not None:
                pending.cancel()  # nothing after a go
            if self._sealed is not None:
                self._sealed.close()  # idempotent: closed once the child has its copies
            if self._ending is not None:  # the finishes of refused starts, on their way
                self._ending.join(timeout=_ENDING_WAIT_S)
            self._governors.close()
            for signum, handler in self._replaced.items():
                signal.signal(signum, handler)

    def _run(self) -> int:
        opts = self.options
        probe_ahead()  # both done while the governor decides (ADR 0022)
        warrant_key = self._governors.text_ahead("/v1/warrant-key") if not opts.warrant_key else str
        # 1. Measure.
        try:
            measurement = measure(self.argv)
        except EnforcementError as e:
            self.say(f"cannot measure the command: {e}")
            return EXIT_DENIED
        # For exec, the resource is the measured file the command names (the script
        # for a script): a different one named by the caller is refused, not trusted.
        measured = measured_resource(measurement.to_json())
        resource = opts.resource or measured.path
        if opts.action == "exec" and resource != measured.path:
            self.say(
                f"--resource {resource} is not what the command executes ({measured.path}); "
                "the resource of an exec is the measured file. Nothing started."
            )
            return EXIT_DENIED
        digest = measured.digest if opts.action == "exec" else ""
        try:
            self._sealed = prepared = prepare(measurement)
        except EnforcementError as e:
            self.say(f"integrity check before start failed; nothing started: {e}")
            return EXIT_DENIED
        ahead = self._thread(self._prepare_ahead, prepared)  # while the governor decides
        # 2. Authorize.
        request = {
            "action": opts.action,
            "resource": resource,
            "argv": self.argv,
            "zone": opts.zone,
            "executable_digest": digest,
        }
        try:
            answer = self._governors.json("POST", "/v1/authorize", request)
        except GovernorError as e:
            self.say(f"authorization failed: {e}")
            return EXIT_DENIED
        finally:
            ahead.join()  # its child is cancelled on every way out (run)
        containment = self._containment or Containment()
        decision = answer.get("decision", {})
        if not answer.get("allow") or "warrant" not in answer:
            self.say(
                describe_denial(
                    decision, principal=opts.key.name, action=opts.action, resource=resource, zone=opts.zone
                )
            )
            return EXIT_DENIED
        token = str(answer["warrant"]["token"])
        # 3. Verify the warrant locally before anything runs: while the governor records
        #    the start when its answer says what the start needs (the terms, checked
        #    against the verified claims before the go), else first.
        try:
            root = opts.warrant_key or b64decode(warrant_key().strip(), validate=True)
        except (GovernorError, ValueError) as e:
            self.say(f"the warrant does not verify locally; nothing started: {e}")
            return EXIT_DENIED
        try:  # every governor asked from now on is of the deployment that signed it
            self._governors.trust(root)
        except GovernorError as e:
            self.say(f"no governor of this deployment answered; nothing started: {e}")
            return EXIT_DENIED
        verify = functools.partial(
            self._verify, token, root, resource, digest, measurement=measurement, exact=not opts.zone
        )
        terms = _Terms.hinted(answer, opts.zone)
        verified: VerifiedWarrant | None = None
        if terms is None:  # an answer that does not say them: verified first
            hint = answer["warrant"].get("zone")
            try:
                verified = verify(zone=opts.zone or (hint if isinstance(hint, str) else None))
            except (ProctorError, ValueError) as e:
                self.say(f"the warrant does not verify locally; nothing started: {e}")
                return EXIT_DENIED
            terms = _Terms.of(verified.claims, opts.zone or verified.claims.zone)
            self._warrant_id = verified.claims.warrant_id
        # 4. Start under containment, executing the measured bytes.
        limits = _limits(terms.obligations)  # held to the verified claims' before the go
        lease = LeaseCheck(root, terms.warrant, terms.lease_ttl_ms)  # signed answers only (ADR 0017)
        ttl = enforcer_ttl_s(terms.lease_ttl_ms)  # the warrant's (checked), not an unsigned answer's
        # The child set up ahead runs nothing of the command before the go, which only a
        # recorded start gives. Obligations that change its containment need another.
        pending = self._pending
        if pending is None or not pending.usable or limits != Limits():
            try:
                pending = self._prepare_fresh(containment, prepared, limits, ttl)
            except Exception as e:  # noqa: BLE001 - whatever failed, nothing runs (fail closed)
                self.say(f"could not prepare the command's start; nothing started: {type(e).__name__}: {e}")
                return EXIT_DENIED
        body = {
            "warrant": token,
            "action": opts.action,
            "resource": resource,
            "argv": self.argv,
            "zone": terms.zone,  # the zone the warrant is checked for
            "measurement": measurement.to_json(),
            "containment": list(containment.planned_backends(limits)),
            "enforcer": opts.enforcer,
        }
        with pending:  # cancelled unless let go
            try:
                start = self._start_sent(body, lease)
                if verified is None:  # the start is on its way: verified meanwhile
                    try:
                        verified = verify(zone=terms.zone)
                        self._warrant_id = verified.claims.warrant_id  # verified: its refused starts end
                        terms.check(verified.claims)
                    except (ProctorError, ValueError) as e:
                        self._unstarted(start, f"the warrant does not verify locally; nothing started: {e}")
                        return EXIT_DENIED
                claims = verified.claims
                obligations = dict(claims.obligations)  # the verified ones, from here on
                if _limits(obligations) != limits:  # cannot be, once checked: never weaker than the warrant's
                    self._unstarted(
                        start, "the start was prepared with other limits than the warrant's; nothing started"
                    )
                    return EXIT_DENIED
                self._max_output = _int(obligations.get("max_output_bytes"))
                self._warrants = {claims.warrant_id, *([claims.parent] if claims.parent else [])}
                try:
                    started = self._start_answer(start)
                except GovernorError as e:
                    self.say(f"the governor refused to start the execution: {e}")
                    return EXIT_DENIED
                self._execution = str(started["execution"])
                position = started.get("log_index")  # where its revocations are followed from
                if type(position) is not int or position < 0:  # not under the answer's signature
                    detail = f"the start answer has no log position to follow revocations from: {position!r}"
                    self.say(f"execution {self._execution}: {detail}; nothing started")
                    self._finish({"outcome": "failed", "reason": "start-failed", "detail": detail})
                    return EXIT_DENIED
                self._lease_deadline = lease_deadline(time.monotonic(), ttl)
                began = time.monotonic()
                try:
                    if not pending.usable:  # its time ran out while the start was recorded
                        pending = self._prepare_fresh(containment, prepared, limits, ttl)
                    # From here an interrupt is only noted: raised inside the go, it could
                    # leave a command started and untracked. It stops the command below.
                    self._abort_point(abortable=False)
                    self._contained = pending.go(lease_ttl=ttl)
                except Exception as e:  # noqa: BLE001 - whatever failed, nothing runs (fail closed)
                    self.say(f"could not start the command: {type(e).__name__}: {e}")
                    self._finish({"outcome": "failed", "reason": "start-failed", "detail": str(e)})
                    return EXIT_DENIED
            except _Interrupted as e:
                why = f"interrupted by {signal.Signals(e.signum).name} before the command started"
                e.said = True
                if self._start_future is not None:
                    self._unstarted(self._start_future, f"{why}; nothing started", reason="interrupted")
                else:
                    self.say(f"{why}; nothing started")
                raise
        if self._interrupt:  # it came while the command was being started: stopped now
            self.kill("interrupted", self._interrupted_by())
        prepared.close()
        self.say(
            f"execution {self._execution} started (warrant {claims.warrant_id}, pid {self._contained.pid}, "
            f"containment: {', '.join(self._contained.backends)})"
        )
        # 5. Keep verifying while it runs.
        files = {f.path: f.digest for f in measurement.files}
        self._integrity = IntegrityWatch(files, lambda path, detail: self.kill("integrity", detail))
        self._integrity.start()
        pumps = [
            self._thread(self._pump, self._contained.stdout, self._out, "stdout"),
            self._thread(self._pump, self._contained.stderr, self._err, "stderr"),
        ]
        self._thread(self._watchdog, ttl)
        self._accept_renewal = lease.renewal(self._execution)
        self._thread(self._renewer, ttl)
        self._thread(self._listen, position)
        self._thread(self._contained.hold_command, self._done)  # its pidfd, for a kill's first signal
        max_duration = _int(obligations.get("max_duration_s"))
        if max_duration:
            self._timer(max_duration, "obligation", f"ran longer than {max_duration} s")
        # The warrant's own end (attenuations included) stops it even if no renewal says so.
        self._timer(verified.expires - time.time(), "expired", f"the warrant expired at {verified.expires}")
        status = int(self._contained.wait())
        for pump in pumps:
            pump.join(timeout=5)
        self._done.set()
        self._integrity.stop()
        duration_ms = int((time.monotonic() - began) * 1000)
        usage = _usage(self._contained)
        self._contained.close()
        outputs = {k: "sha256:" + h.hexdigest() for k, h in self._digests.items()}
        # 6./7. Record how it ended.
        if self._reason is not None:
            report = self._report
            self._finish(
                {
                    "outcome": "terminated",
                    "reason": self._reason,
                    "detail": self._detail,
                    "signal": str(getattr(report, "signal", "SIGKILL")),
                    "processes_killed": int(getattr(report, "processes_killed", 0) or 0),
                    "exit_status": status,
                    "resource_usage": usage,
                    "stdout_digest": outputs["stdout"],
                    "stderr_digest": outputs["stderr"],
                }
            )
            self.say(f"execution {self._execution} terminated: {self._reason}: {self._detail}")
            self._write_receipt()
            return 128 + self._interrupt if self._reason == "interrupted" else EXIT_TERMINATED
        self._finish(
            {
                "outcome": "completed",
                "exit_status": status,
                "resource_usage": usage,
                "stdout_digest": outputs["stdout"],
                "stderr_digest": outputs["stderr"],
                "duration_ms": duration_ms,
            }
        )
        self._write_receipt()
        return status if status >= 0 else 128 - status

    def _prepare_ahead(self, sealed: Prepared) -> None:
        """Set the contained child up while the governor decides (ADR 0024), in a thread
        started once the request is being sent: forked, in its cgroups and namespaces,
        waiting for a go that only a recorded start gives. It is prepared with no
        resource limits and a lease whose TTL comes with the go; a warrant with limits
        gets a child prepared for them instead. A failure here only means no head
        start: the start after the warrant says what failed."""
        try:
            self._containment = containment = Containment()
            pending = _prepare_child(containment, sealed, Limits(), AHEAD_TTL_S)
        except Exception:  # noqa: BLE001 - no head start; the start after the warrant fails closed
            return
        with self._ahead_lock:
            if not self._closed:
                self._pending = pending
                return
        pending.cancel()  # the run ended (an interrupt while this was joined)

    def _prepare_fresh(
        self, containment: Containment, sealed: Prepared, limits: Limits, ttl: float
    ) -> PendingStart:
        """A child prepared for the warrant's limits and lease, the earlier one cancelled."""
        if self._pending is not None:
            self._pending.cancel()
        self._pending = _prepare_child(containment, sealed, limits, ttl)
        return self._pending

    def _verify(
        self,
        token: str,
        root: bytes,
        resource: str,
        digest: str,
        *,
        measurement: Any,
        zone: str | None,
        exact: bool,
    ) -> VerifiedWarrant:
        """Step 3: the warrant verified for exactly this run (signature, validity,
        argv digest, zone, measurement). ``zone`` ``None``: the warrant's own, read from
        it; ``exact``: the zone is the one the governor evaluated (no ``--zone``), which
        the warrant must name exactly.

        Raises:
            WarrantError, IntegrityError, ValueError: it does not verify.
        """
        opts, now = self.options, int(time.time())
        if zone is None:  # an answer that does not name the zone: the warrant is opened once more
            zone = verify_warrant_bounds(token, root_public_key=root, now=now, request=None).claims.zone
        verified = verify_warrant_bounds(
            token,
            root_public_key=root,
            now=now,
            request=WarrantRequest(
                action=opts.action,
                resource=resource,
                args_digest=args_digest(self.argv),
                zone=zone,
                executable_digest=digest,
            ),
        )
        claims = verified.claims
        if exact and claims.zone != zone:
            raise ValueError(f"the answer named zone {zone!r}, the warrant {claims.zone!r}")
        check_measurement(
            measurement.to_json(),
            action=claims.action,
            resource=claims.resource,
            executable_digest=claims.executable_digest,
        )
        return verified

    def _start_sent(self, body: dict[str, Any], lease: LeaseCheck) -> Future[Answered]:
        """Step 4's ``POST /v1/executions``, in a thread; returns once the request is on
        the socket (or has failed), so that the warrant is verified while it is answered."""
        answered: Future[Answered] = Future()
        self._start_future = answered  # an interrupt while it is sent finishes what it started
        sent = threading.Event()

        def accept(answered: Answered) -> None:  # on the start's thread, before it resolves
            try:
                lease.start(answered)
            except VerificationError:
                self._note_unaccepted(answered)
                raise

        def start() -> None:
            try:
                ask = self._governors.request
                answered.set_result(ask("POST", "/v1/executions", body, accept=accept, on_sent=sent.set))
            except BaseException as e:  # noqa: BLE001 - handed to the run, which waits for it
                answered.set_exception(e)
            finally:
                sent.set()

        self._thread(start)
        sent.wait()
        return answered

    def _unstarted(self, start: Future[Answered], why: str, *, reason: str = "start-failed") -> None:
        """The warrant did not verify while its start was being recorded (or the run was
        interrupted): the command never runs; a start the governor recorded is finished
        ``failed``, with ``reason``."""
        self.say(why)
        try:
            started = self._start_answer(start)
            self._execution = str(started["execution"])
        except (GovernorError, ValueError, KeyError, TypeError):
            return  # not started (or not answered validly): nothing to finish
        self._finish({"outcome": "failed", "reason": reason, "detail": why[:900]})

    def _note_unaccepted(self, answered: Answered) -> None:
        """A start answer that was not accepted (not signed for this request, ADR 0017)
        may still name a start its governor recorded: remember the execution it names and
        the warrant it says that runs under, to finish it if that is the warrant this run
        verified (:meth:`_end_unaccepted`; the warrant hinted in the authorization's
        answer is not what decides, it may have been altered too)."""
        try:
            answer = answered.json()
        except ValueError:
            return
        warrant = answer.get("warrant") if isinstance(answer, dict) else None
        named = named_start(answer, warrant)
        if named is not None and isinstance(warrant, str):
            self._unaccepted.append((named, warrant))

    def _start_answer(self, start: Future[Answered]) -> Any:
        """The accepted start answer's JSON (raises as ``start`` does), and the starts a
        governor recorded under answers that were not accepted (:meth:`_note_unaccepted`)
        finished ``failed``, reason ``start-failed``: they never run, and their records say
        so now rather than ``supervisor-lost`` at their leases' end — on this thread when
        nothing starts, beside the run when another governor's answer was accepted (its
        lease's clock is not held up). The ids are the unverified answers', so the finish
        names the *verified* warrant: the governor ends an execution only if it is this
        principal's and runs under it (else 409, nothing recorded). No verified warrant
        (it did not verify, or the run stopped first): nothing is finished, the leases
        lapse."""
        try:
            answer = start.result().json()
        except BaseException:
            if start.done():  # else (interrupted while waiting) the later call finishes them
                abortable, self._abortable = self._abortable, False  # an interrupt waits for them
                try:
                    self._end_unaccepted()
                finally:
                    self._abort_point(abortable=abortable)
            raise
        if self._unaccepted:  # another governor's answer was accepted: not on the run's path
            self._ending = self._thread(self._end_unaccepted)
        return answer

    def _end_unaccepted(self) -> None:
        """Finish the starts :meth:`_start_answer` names, bound to the verified warrant."""
        unaccepted, self._unaccepted = self._unaccepted, []
        warrant = self._warrant_id
        if warrant is None:
            return
        for execution, named in unaccepted:
            if named != warrant:  # it names another warrant: not this run's to end
                continue
            self.say(f"execution {execution} was recorded, but its answer was not accepted; ending it")
            self._finish(
                {
                    "outcome": "failed",
                    "reason": "start-failed",
                    "detail": "the governor's answer to its start was not accepted (not signed for "
                    "the request); nothing ran",
                    "warrant": warrant,  # only the start of this run's verified warrant ends
                },
                execution=execution,
            )

    # -- interrupts ----------------------------------------------------------------

    def _catch_interrupts(self) -> None:
        """Handle :data:`INTERRUPTS` while the run lasts (main thread only: elsewhere
        Python cannot); :meth:`run` puts the handlers they replaced back, last."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in INTERRUPTS:
            old = signal.signal(signum, self._on_interrupt)
            self._replaced[signum] = signal.SIG_DFL if old is None else old

    def _on_interrupt(self, signum: int, _frame: object) -> None:
        """The first interrupt: before the go, the run stops where it is
        (:class:`_Interrupted`, raised once); while the command runs, its tree is killed
        (on a thread: a handler must not wait for the grace). Any other (a second
        Ctrl-C, one during the go, or once the command ended) is only noted: what it
        would interrupt (the go, a finish, a cancel) must run to its end."""
        if self._interrupt:
            return
        self._interrupt = signum
        if self._abortable:
            self._abortable = False
            raise _Interrupted(signum)
        if self._contained is not None and not self._done.is_set():
            detail = self._interrupted_by()
            threading.Thread(target=self.kill, args=("interrupted", detail), daemon=True).start()

    def _abort_point(self, *, abortable: bool) -> None:
        """From here the handler may stop the run (``abortable``), or may not; an
        interrupt noted while it could not stops it now, if it may."""
        self._abortable = abortable
        if abortable and self._interrupt:
            self._abortable = False
            raise _Interrupted(self._interrupt)

    def _interrupted_by(self) -> str:
        return f"{signal.Signals(self._interrupt).name} received by proctor run"

    # -- termination -------------------------------------------------------------

    def kill(self, reason: str, detail: str = "") -> None:
        """Terminate the whole tree now (idempotent; first reason wins). Thread-safe."""
        with self._kill_lock:
            if self._reason is not None or self._done.is_set():
                return
            self._reason, self._detail = reason, detail
            contained = self._contained
        if contained is None:
            return
        try:
            self._report = contained.terminate_tree(grace=self.options.grace)
        except Exception as e:  # noqa: BLE001 - last resort: the kill must happen
            self._detail += f"; terminate_tree failed ({e}); killing the process group"
            with contextlib.suppress(OSError):
                os.killpg(contained.pid, signal.SIGKILL)

    # -- the lease (arithmetic: proctor.verification.lease, rules 4-6) --------------

    def _watchdog(self, ttl: float) -> None:
        """Fail closed: no successful renewal before the lease ends means no execution.

        A thread of its own, so that a renewal stuck on an unresponsive governor can
        never hold the deadline back. It sleeps until the deadline it read (exact: a
        renewal only moves it later, rule 5), not waking every few milliseconds."""
        while not self._done.is_set():
            remaining = lease_remaining_s(self._lease_deadline, time.monotonic())
            if remaining <= 0:
                why = f" (last failure: {self._renew_error})" if self._renew_error else ""
                self.kill("lease-lost", f"no successful lease renewal within {ttl:.1f} s{why}")
                return
            self._done.wait(timeout=remaining)

    def _renewer(self, ttl: float) -> None:
        period = renewal_interval_s(ttl)
        next_renewal = time.monotonic() + period
        while not self._done.is_set() and self._reason is None:
            now = time.monotonic()
            # A pushed change (policy, an ancestor's revocation) asks for a renewal
            # right away; otherwise renew on schedule.
            if now < next_renewal and not self._renew_now.wait(timeout=next_renewal - now):
                continue
            self._renew_now.clear()
            next_renewal = time.monotonic() + period
            self._renew_once(ttl)

    def _renew_once(self, ttl: float) -> None:
        integrity_ok = self._integrity.recheck() if self._integrity is not None else True
        body: dict[str, Any] = {"integrity": "ok" if integrity_ok else "violated"}
        try:  # any governor of the deployment, each attempt bounded, none past the lease's end
            answered = self._governors.request(
                "POST",
                f"/v1/executions/{self._execution}/renew",
                body,
                timeout=renewal_timeout_s(ttl),
                deadline=self._lease_deadline,
                accept=self._accept_renewal,  # signed by the warrant key for this request (ADR 0017)
            )
            answer, sent = answered.json(), answered.sent
        except (GovernorError, ValueError) as e:
            if isinstance(e, GovernorError) and e.status in (403, 404):
                self.kill("revoked", f"the governor refused the renewal: {e}")
            # Unreachable, or the request was not authenticated (a clock or key
            # problem, not a revocation): the lease deadline decides, and says why.
            self._renew_error = str(e)
            return
        if answer.get("ok"):
            self._lease_deadline = lease_deadline(sent, ttl)
            self._renew_error = ""
        else:
            self.kill(str(answer.get("terminate", "revoked")), str(answer.get("detail", "")))

    def _listen(self, since: int) -> None:
        # The stream, signed by the principal, carries what it may see, resuming at the last
        # seq (rule 5 of follow); the lease, not the stream, bounds safety.
        self._governors.follow(f"execution={self._execution}", since, self._on_message, self._done)

    def _on_message(self, message: dict[str, Any]) -> None:
        if message.get("type") == "revocation":
            kind, target = message.get("kind"), message.get("target")
            mine = (
                (kind == "execution" and target == self._execution)
                or (kind == "warrant" and target in self._warrants)
                or (kind == "principal" and target == self.options.key.name)
            )
            if mine:
                self.kill("revoked", f"{kind} {target} was revoked")
            if mine or kind == "execution":  # another execution's is never ours (ADR 0021)
                return
        # Anything else may concern us indirectly (an ancestor warrant, the policy): renew now.
        self._renew_now.set()

    # -- output and bookkeeping -------------------------------------------------------

    def _pump(self, source: IO[bytes] | None, sink: IO[bytes], name: str) -> None:
        if source is None:
            return
        digest = self._digests[name]
        while True:
            chunk = source.read1(_CHUNK) if hasattr(source, "read1") else source.read(_CHUNK)
            if not chunk:
                return
            digest.update(chunk)
            self._output_bytes += len(chunk)
            try:
                sink.write(chunk)
                sink.flush()
            except (OSError, ValueError):
                pass  # our own output went away; keep hashing and draining
            if self._max_output is not None and self._output_bytes > self._max_output:
                self.kill("obligation", f"output exceeded {self._max_output} bytes")

    def _timer(self, seconds: float, reason: str, detail: str) -> None:
        timer = threading.Timer(max(seconds, 0.0), self.kill, (reason, detail))
        timer.daemon = True
        timer.start()

    def _thread(self, target: Callable[..., None], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        return thread

    def _finish(self, body: dict[str, Any], *, execution: str | None = None) -> None:
        # A few quick tries (each through every governor): when they are gone (the
        # lease-lost case) the supervisor must not linger; they see the lapsed lease anyway.
        execution = self._execution if execution is None else execution
        deadline = time.monotonic() + 6.5
        for attempt in range(3):
            try:
                target = f"/v1/executions/{execution}/finish"
                self._governors.request("POST", target, body, timeout=2.0, deadline=deadline)
                return
            except GovernorError as e:
                if e.status and e.status < 500:
                    self.say(f"the governor refused to record the end of {execution}: {e}")
                    return
                time.sleep(0.1 * (attempt + 1))
        self.say(f"could not record the end of {execution}: the governor is unreachable")

    def _write_receipt(self) -> None:
        if not self.options.receipt:
            return
        try:
            target = f"/v1/executions/{self._execution}/receipt"  # signed; all governors in 10 s
            receipt = self._governors.json("GET", target, deadline=time.monotonic() + 10.0)
            with open(self.options.receipt, "wb") as f:
                f.write(orjson.dumps(receipt, option=orjson.OPT_INDENT_2) + b"\n")
        except (ProctorError, OSError) as e:
            self.say(f"could not write the receipt: {e}")


def _prepare_child(containment: Containment, sealed: Prepared, limits: Limits, ttl: float) -> PendingStart:
    """The contained start of the sealed command, its output piped (teed and hashed)."""
    return containment.prepare(
        sealed.argv,
        exec_path=sealed.exec_path,
        pass_fds=sealed.pass_fds,
        limits=limits,
        stdout=-1,
        stderr=-1,
        lease_ttl=ttl,
    )


def _int(value: Any) -> int | None:
    return value if type(value) is int and value > 0 else None


def _usage(contained: Any) -> dict[str, int]:
    try:
        usage = contained.resource_usage()
    except Exception:  # noqa: BLE001 - usage is informative; never fail the run on it
        return {}
    return {str(k): int(v) for k, v in dict(usage).items() if isinstance(v, int)}
