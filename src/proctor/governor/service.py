"""The governor: authenticates principals, decides, issues warrants, records everything.

This module holds the governor's life cycle (keys, log, state, readiness, request
authentication, the lease sweeper); the authorization flow is in
:mod:`proctor.governor.authorize`, admin operations in :mod:`proctor.governor.admin`,
executions and leases in :mod:`proctor.governor.executions`.

Admin operations (principals, policy, revocation) append their event first and then
update the state tables (or commit them with the event), so the log can always
explain the state.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from proctor.authorization.keys import PrincipalKey
from proctor.authorization.minter import MintHelper
from proctor.authorization.requests import verify_request
from proctor.config import load_config, write_default_config
from proctor.datadir import DataDir
from proctor.errors import (
    AuthenticationError,
    ProctorError,
    StoreError,
)
from proctor.governor._events import principal_event, rfc3339
from proctor.governor._fair import PerPrincipal
from proctor.governor.access_log import PRINCIPAL
from proctor.governor.admin import ADMIN, REVOCATION_KINDS
from proctor.governor.authorize import DEFAULT_LEASE_TTL_MS, GovernorAuthorize
from proctor.governor.consistency import StateReport
from proctor.governor.counters import RateCounters
from proctor.governor.executions import Executions
from proctor.governor.nonces import NonceCache
from proctor.governor.state_audit import audit_state
from proctor.governor.stream import Broadcaster
from proctor.lineage.log import Log, Side
from proctor.policy import PolicyEngine
from proctor.store.state import PrincipalRecord, StateStore

__all__ = [
    "ADMIN",
    "DEFAULT_LEASE_TTL_MS",
    "DEFAULT_WARRANT_TTL_S",
    "REVOCATION_KINDS",
    "Governor",
    "initialize",
    "rfc3339",
]

DEFAULT_WARRANT_TTL_S = 900
_SHOWN_DISCREPANCIES = 20
DEFAULT_COMMIT_LINGER_S = 0.002
DELEGATIONS_PER_PRINCIPAL = 2
"""Delegated authorizations (a parent warrant to verify) one principal may have in
verification at once; more wait for their turn, off the event loop."""


def initialize(data_dir: str | os.PathLike[str], *, origin: str | None = None) -> dict[str, str]:
    """``proctor init``: a data directory with the log, the admin key and the warrant key.

    Built whole or not at all (:meth:`DataDir.build`): everything is written into a
    fresh ``0700`` sibling directory and renamed into place only once complete, so a
    failure at any step leaves nothing behind, and nothing planted at the target
    beforehand (such as a symlink at ``keys/admin.key``) is written through — the
    target must be new or an empty directory. Keys are created ``0600`` with
    ``O_EXCL | O_NOFOLLOW``.

    Returns:
        ``{"data", "origin", "log_key", "admin_key", "warrant_key"}`` (public material
        and paths).

    Raises:
        ConfigError: the target is a symlink, not empty or already initialised, the
            origin is invalid, or a file cannot be written; nothing was created.
        StoreError: the database cannot be written; nothing was created.
    """
    root = Path(data_dir)
    with DataDir.build(root, origin=origin) as staged:
        write_default_config(staged.path)  # every setting at its default, documented
        keys = staged.keys_path
        with Log.create(staged) as log:
            admin = PrincipalKey.generate(ADMIN)
            admin.save(keys / "admin.key")
            warrant_root = PrincipalKey.generate("warrant-root")
            warrant_root.save(keys / "warrant.key")
            with (keys / "warrant.pub").open("x") as pub:  # exclusive: never an existing file
                pub.write(warrant_root.public_key_b64 + "\n")
            state = StateStore(staged.db_path)
            try:
                now = time.time()
                # The warrant key is declared in the log, so that a receipt can prove which
                # key signed its warrants with nothing but the log's verifier key.
                declared = log.append_many(
                    [
                        {
                            "v": 1,
                            "type": "key.declared",
                            "time": rfc3339(now),
                            "node": "init",
                            "purpose": "warrant",
                            "algorithm": "ed25519",
                            "public_key": warrant_root.public_key_b64,
                        },
                        principal_event(
                            ADMIN,
                            "added",
                            {"role": ADMIN},
                            "",
                            now,
                            node="init",
                            by="init",
                            public_key=admin.public_key_b64,
                        ),
                    ]
                )
                stamp = rfc3339(now)
                state.put_principal(
                    PrincipalRecord(ADMIN, admin.public_key_b64, {"role": ADMIN}, "", "active", stamp, stamp)
                )
                state.set_meta("warrant_key_index", str(declared[0]))
            finally:
                state.close()
            log_key = log.verifier_key()
    return {
        "data": str(root),
        "origin": staged.origin,
        "log_key": log_key,
        "admin_key": str(root / "keys" / "admin.key"),
        "warrant_key": warrant_root.public_key_b64,
    }


class Governor(GovernorAuthorize):
    """The governor of one data directory (embedded SQLite store).

    Thread-safe: authorizations run concurrently (their log appends are group
    committed); policy pushes swap the engine atomically.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        node: str = "gov-1",
        clock: Any = time.time,
        warrant_ttl_s: int = DEFAULT_WARRANT_TTL_S,
        commit_linger_s: float = DEFAULT_COMMIT_LINGER_S,
        mint_helper: bool = False,
    ) -> None:
        """Open the governor's log, state and keys.

        ``mint_helper``: mint warrants in a helper process (``proctor serve`` does), so
        that the event loop does not hold the GIL for them.

        ``commit_linger_s``: while the log is busy, how long its writer waits after the
        first append of a group commit for more (fewer, larger commits under load; a
        lone request never waits).

        Raises:
            ConfigError: the data directory is not initialised (``proctor init``), or
                its ``config.toml`` is not valid (:mod:`proctor.config`).
            StoreError: the database cannot be opened.
        """
        self.data = DataDir.open(data_dir)
        # The operator's configuration (quotas): an invalid one stops the governor here.
        self.config = load_config(self.data.path)
        self.quotas = self.config.quotas
        self.node = node
        self._clock = clock
        self._warrant_ttl_s = warrant_ttl_s
        self.log = Log.open(self.data.path, linger=commit_linger_s)
        self.state = StateStore(self.data.db_path)
        keys = self.data.path / "keys"
        self._warrant_key = PrincipalKey.load(keys / "warrant.key")
        self._warrant_key_bytes = self._warrant_key.private_bytes()
        self.minter: MintHelper | None = None
        if mint_helper:
            self.minter = MintHelper(self._warrant_key_bytes)
            self.minter.start()
        self.warrant_public_key = self._warrant_key.public_key
        self._lock = threading.Lock()
        self._principals = {}
        self._principals_generation = 0
        self._wakers = {}
        self._stopping = threading.Event()
        self._sweeper: threading.Thread | None = None
        self.broadcaster = Broadcaster()
        self.executions = Executions(self)
        self.counters = RateCounters(self.state)
        self._delegations = PerPrincipal(DELEGATIONS_PER_PRINCIPAL)
        self.nonces = NonceCache(self.state, now=int(self.now()))
        self._engine: PolicyEngine | None = None
        self._bundle_error: str | None = "no policy bundle has been pushed"
        self.state_report: StateReport | None = None
        self._state_problem: str | None = None
        self._check_state()
        self._load_active_bundle()

    # -- lifecycle -------------------------------------------------------------

    def start_sweeper(self, interval_s: float = 0.5) -> None:
        """Close lapsed executions in the background (``Executions.sweep``): a lease
        that lapsed with no renewal or finish is recorded as ``supervisor-lost``."""
        if self._sweeper is not None:
            return

        def run() -> None:
            while not self._stopping.wait(interval_s):
                # Store or log unavailable: try again next round (a sweep allows nothing).
                with contextlib.suppress(ProctorError):
                    self.executions.sweep()
                if self.log.commit_failure is not None:
                    # Leases are not renewed while the log cannot record; a real write
                    # tells when it can again (a commit that succeeds clears the failure).
                    with contextlib.suppress(ProctorError):
                        self.log.submit([], side=[self.state.probe_writer(int(self.now()))]).wait_quietly()

        self._sweeper = threading.Thread(target=run, name="proctor-lease-sweeper", daemon=True)
        self._sweeper.start()

    def close(self) -> None:
        """Stop the sweeper; close the log and the state store."""
        self._stopping.set()
        if self._sweeper is not None:
            self._sweeper.join()
        self.log.close()
        if self.minter is not None:
            self.minter.close()
        self.state.close()

    def __enter__(self) -> Governor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now(self) -> float:
        """The governor's clock (injectable for tests)."""
        return float(self._clock())

    # -- the state, checked against the log -------------------------------------

    def _check_state(self) -> None:
        """Check the state tables against the log before serving anything
        (:func:`~proctor.governor.state_audit.audit_state`). On a discrepancy, or if
        the check cannot run, the governor fails closed until it is restarted on state
        that agrees: not ready, every authorization denied (and recorded), every
        warrant treated as revoked (no execution starts, no lease is renewed), no
        admin change; :attr:`state_problem` says which rows disagree."""
        try:
            report = audit_state(self.data.db_path, self.log.verifier)
        except (ProctorError, ValueError) as e:
            self._state_problem = f"the state could not be checked against the log: {e}"
            return
        self.state_report = report
        if not report.ok:
            found = report.discrepancies
            shown = "; ".join(str(d) for d in found[:_SHOWN_DISCREPANCIES])
            more = f"; and {len(found) - _SHOWN_DISCREPANCIES} more" if found[_SHOWN_DISCREPANCIES:] else ""
            self._state_problem = f"{len(found)} state row(s) disagree with the log: {shown}{more}"

    @property
    def state_problem(self) -> str | None:
        """Why the state is not trusted (the governor then serves nothing), or ``None``."""
        return self._state_problem

    def _untrusted(self) -> StoreError:
        return StoreError(
            "the governance state disagrees with the log (see /readyz or proctor log verify); "
            "nothing is authorized until it is repaired"
        )

    def _decide(self, *args: Any, **kwargs: Any) -> Any:
        # Raising here is a deny that the decision event records (GovernorAuthorize._begin).
        if self._state_problem is not None:
            raise self._untrusted()
        return super()._decide(*args, **kwargs)

    def is_admin(self, principal: str) -> bool:
        """Whether ``principal`` is an active admin; no one is while the state is untrusted."""
        return self._state_problem is None and super().is_admin(principal)

    def warrant_revoked(self, warrant_id: str) -> bool:
        """Whether a warrant is revoked. While the state is untrusted, so is the record
        of revocations: every warrant counts as revoked (no start, no renewal)."""
        return self._state_problem is not None or super().warrant_revoked(warrant_id)

    def _load_active_bundle(self) -> None:
        """Compile the active bundle that the state check matched to the log, after
        verifying its signature again with the key the check used (the signer's as the
        log registered it)."""
        report = self.state_report
        if self._state_problem is not None or report is None:
            self._bundle_error = "the governance state disagrees with the log; nothing is served"
            return
        active = report.active_bundle
        if active is None:
            return
        if self.state.is_revoked("policy", active.digest):
            self._bundle_error = f"the active bundle {active.digest} is revoked"
            return
        try:
            active.signed.verify(Ed25519PublicKey.from_public_bytes(active.public_key))
            self._engine = PolicyEngine.compile(active.signed.bundle)
            self._bundle_error = None
        except (ProctorError, ValueError) as e:  # fail closed: deny all
            self._bundle_error = f"the stored active bundle does not load: {e}"

    @property
    def engine(self) -> PolicyEngine | None:
        """The active policy engine, or ``None`` (deny everything; always while the
        state is untrusted)."""
        return self._engine if self._state_problem is None else None

    def ready(self) -> tuple[bool, dict[str, str]]:
        """Readiness: the store (answering, with state that agreed with the log at
        start), the log and a valid policy bundle."""
        checks: dict[str, str] = {}
        try:
            self.state.ping()
            checks["store"] = "ok" if self._state_problem is None else f"error: {self._state_problem}"
        except StoreError as e:
            checks["store"] = f"error: {e}"
        try:
            self.log.checkpoint()
            failed = self.log.commit_failure
            checks["log"] = "ok" if failed is None else f"error: cannot durably record: {failed}"
        except ProctorError as e:
            checks["log"] = f"error: {e}"
        checks["policy"] = "ok" if self._engine is not None else f"error: {self._bundle_error}"
        return all(v == "ok" for v in checks.values()), checks

    # -- authentication --------------------------------------------------------

    def authenticate(self, method: str, target: str, body: bytes, headers: Mapping[str, str]) -> str:
        """The principal that signed this request (RFC 9421, see
        :func:`proctor.authorization.requests.verify_request`).

        The nonce is checked against the in-memory replay cache and persisted with the
        log writer's next transaction. A rejection is recorded (bounded table, not the
        Merkle log) through the log writer too, so that a flood of bad requests never
        waits on a write.

        Raises:
            AuthenticationError: unsigned, malformed, stale, unknown key, bad signature
                or replayed; nothing else happens.
        """
        # Freshness is judged no earlier than the nonce floor: a clock that stepped back
        # cannot reopen the window of a request whose nonce was forgotten (nonces.py).
        now = self.nonces.effective_now(int(self.now()))
        try:
            name = verify_request(
                method,
                target,
                body,
                headers,
                public_key_for=self.public_key_for,
                now=now,
                remember_nonce=lambda keyid, nonce, expires: self.nonces.remember(
                    keyid, nonce, expires, now=now
                ),
            )
        except AuthenticationError as e:
            keyid = headers.get("signature-input", "")[:128]
            self._side_write(self.state.auth_failure_writer(now, keyid, e.reason, f"{method} {target}: {e}"))
            raise
        PRINCIPAL.set(name)  # for the access log: the verified name, never a claimed one
        return name

    def persist_nonces(self) -> None:
        """Queue the nonces not yet persisted for the log writer's next transaction
        (authorizations carry them in their own commit; other requests call this)."""
        if self.nonces.claim_flush():
            self._side_write(self.nonces.persist)

    def _side_write(self, write: Side) -> None:
        # If the log cannot write, every authorization fails closed on its own; a record
        # of a rejected request or a nonce is not worth failing more for.
        with contextlib.suppress(ProctorError):
            self.log.submit([], side=[write])

    def trust_changes(self, since: int) -> list[dict[str, Any]]:
        """Revocations and policy activations recorded after log index ``since`` (the
        backlog of ``GET /v1/stream``), in log order."""
        messages: list[dict[str, Any]] = [
            {"type": "revocation", "seq": r.log_index, "kind": r.kind, "target": r.target}
            for r in self.state.revocations(since)
        ]
        messages += [{"type": "policy", "seq": i, "bundle": d} for i, d in self.state.activations(since)]
        return sorted(messages, key=lambda m: int(m["seq"]))
