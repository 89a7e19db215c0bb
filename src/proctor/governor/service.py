"""The governor: authenticates principals, decides, issues warrants, records everything.

:class:`Governor` is the composition root (ADR 0012): it opens the data directory's
log, state and keys, builds its collaborators, hands each the others it uses, and
exposes one public API by delegation. This module also holds the governor's life cycle
(readiness, request authentication, the lease sweeper) and ``proctor init``
(:func:`initialize`). The parts:

- :mod:`proctor.governor.startup` checks the state against the log and builds the
  :class:`~proctor.governor.trust.TrustView` (what the governor trusts);
- :mod:`proctor.governor.recorder` appends events with their state writes;
- :mod:`proctor.governor.admin` (principals, policy, revocation) and :mod:`proctor.governor.authorize`
  (decisions; warrants from :mod:`proctor.governor.issuance`);
- :mod:`proctor.governor.executions` (executions, leases; receipts: :mod:`proctor.governor.receipts`),
  given the state, log, recorder, trust (read only), clock and the one governance response it triggers.

No part imports this module, and no part reads another's private members.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proctor.authorization.keys import PrincipalKey
from proctor.authorization.minter import MintHelper
from proctor.config import load_config, write_default_config
from proctor.datadir import DataDir
from proctor.errors import ProctorError, StoreError
from proctor.governor._events import principal_event, rfc3339
from proctor.governor.admin import ADMIN, REVOCATION_KINDS, Administration
from proctor.governor.authentication import Authenticator
from proctor.governor.authorize import DEFAULT_LEASE_TTL_MS, DELEGATIONS_PER_PRINCIPAL, Authorizer
from proctor.governor.counters import RateCounters
from proctor.governor.executions import Executions
from proctor.governor.follower import FollowedBroadcaster, TrustFollower, change_signal
from proctor.governor.issuance import WarrantIssuer
from proctor.governor.model import AuthorizeRequest, AuthorizeResult
from proctor.governor.nonces import NonceCache
from proctor.governor.recorder import Recorder
from proctor.governor.registry import transition_lock
from proctor.governor.startup import open_trust
from proctor.governor.stream import Broadcaster
from proctor.lineage.log import Log
from proctor.policy import PolicyEngine
from proctor.store.open import describe, open_stores
from proctor.store.state import PrincipalRecord

if TYPE_CHECKING:
    from proctor.governor.cosigner import Cosigner
    from proctor.governor.node_witness import NodeWitness

__all__ = [
    "ADMIN",
    "DEFAULT_COMMIT_LINGER_S",
    "DEFAULT_LEASE_TTL_MS",
    "DEFAULT_WARRANT_TTL_S",
    "DELEGATIONS_PER_PRINCIPAL",
    "REVOCATION_KINDS",
    "Governor",
    "initialize",
    "rfc3339",
]

DEFAULT_WARRANT_TTL_S = 900
DEFAULT_COMMIT_LINGER_S = 0.002


def initialize(
    data_dir: str | os.PathLike[str], *, origin: str | None = None, store: str | None = None
) -> dict[str, str]:
    """``proctor init``: a data directory with the log, the admin key and the warrant key.

    ``store``: a ``postgresql://`` URL (:mod:`proctor.store.open`): the log and the
    state go into that database, which must hold no log yet, and the data directory
    holds only keys and configuration. (The directory is built whole or not at all; a
    database written before a later step failed keeps what was written: drop it, or
    use another, before trying again.)

    Built whole or not at all (:meth:`DataDir.build`): everything is written into a
    fresh ``0700`` sibling directory and renamed into place only once complete, so a
    failure at any step leaves nothing behind, and nothing planted at the target
    beforehand (such as a symlink at ``keys/admin.key``) is written through — the
    target must be new or an empty directory. Keys are created ``0600`` with
    ``O_EXCL | O_NOFOLLOW``.

    Returns:
        ``{"data", "origin", "log_key", "admin_key", "warrant_key"}`` (public material
        and paths), and ``"store"`` (without its password) with ``store``.

    Raises:
        ConfigError: the target is a symlink, not empty or already initialised, the
            origin is invalid, or a file cannot be written; nothing was created.
        StoreError: the database cannot be written; nothing was created.
    """
    root = Path(data_dir)
    with DataDir.build(root, origin=origin) as staged:
        write_default_config(staged.path)  # every setting at its default, documented
        keys = staged.keys_path
        stores = open_stores(
            store, db_path=staged.db_path, lock_path=staged.lock_path, create=True, empty=True
        )
        with Log(stores.log, staged.log_signer(), sequencer=stores.sequencer) as log:
            log.start_writing()  # the append lock; the empty tree signed
            admin = PrincipalKey.generate(ADMIN)
            admin.save(keys / "admin.key")
            warrant_root = PrincipalKey.generate("warrant-root")
            warrant_root.save(keys / "warrant.key")
            with (keys / "warrant.pub").open("x") as pub:  # exclusive: never an existing file
                pub.write(warrant_root.public_key_b64 + "\n")
            state = stores.state
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
    done = {
        "data": str(root),
        "origin": staged.origin,
        "log_key": log_key,
        "admin_key": str(root / "keys" / "admin.key"),
        "warrant_key": warrant_root.public_key_b64,
    }
    if store is not None:
        done["store"] = describe(store, staged.db_path)
    return done


class Governor:
    """The governor of one data directory (embedded SQLite store): the composition root
    of its collaborators, each built here and handed what it uses.

    - :attr:`trust` (:class:`~proctor.governor.trust.TrustView`): principals, admins,
      public keys, revocations and the active engine, read-only to its readers;
    - :attr:`recorder` (:class:`~proctor.governor.recorder.Recorder`): appends events
      with their state writes; the admin lock and the event loops' wakers;
    - :attr:`admin` (:class:`~proctor.governor.admin.Administration`): principals, policy pushes, revocations;
    - :attr:`authorizer` (:class:`~proctor.governor.authorize.Authorizer`): decisions
      and warrants (minted by a :class:`~proctor.governor.issuance.WarrantIssuer`);
    - :attr:`executions` (:class:`~proctor.governor.executions.Executions`, with its
      execution registry): starts, leases, finishes.

    The public methods below delegate to them; the governor itself keeps the life
    cycle, readiness and request authentication.

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
        shared: bool = False,
        store: str | None = None,
    ) -> None:
        """Open the governor's log, state and keys.

        ``store``: a ``postgresql://`` URL, where the log and the state are
        (:mod:`proctor.store.open`); ``None``: the data directory's own file.

        ``shared``: other governor processes serve the same store (``proctor serve
        --shared``, ADR 0016; the parts below say what changes).

        ``mint_helper``: mint warrants in a helper process while the log is busy
        (``proctor serve`` does), off the event loop; a lone request mints here (ADR 0006).

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
        self.shared = shared
        self._offload = ThreadPoolExecutor(64, thread_name_prefix="proctor-authorize") if shared else None
        transitions = transition_lock(self.data.path, store) if shared else None  # before anything opens
        self.store_url = store
        stores = open_stores(store, db_path=self.data.db_path, lock_path=self.data.lock_path, shared=shared)
        self.log = Log(stores.log, self.data.log_signer(), sequencer=stores.sequencer, linger=commit_linger_s)
        self.state = stores.state
        warrant_key = PrincipalKey.load(self.data.path / "keys" / "warrant.key")
        self.minter: MintHelper | None = None
        if mint_helper:
            self.minter = MintHelper(warrant_key.private_bytes())
            self.minter.start()
        self.warrant_public_key = warrant_key.public_key
        self._stopping = threading.Event()
        self._sweeper: threading.Thread | None = None
        # Shared: the follower publishes recorded changes (woken by polls; NOTIFY on PostgreSQL).
        self.broadcaster = FollowedBroadcaster(change_signal(store)) if shared else Broadcaster()
        self.counters = RateCounters(self.state, followed=shared)
        self.nonces = NonceCache(self.state, now=int(self.now()), shared=shared)
        followed_from = stores.log.tree_size() if shared else 0  # shared: changes after it are followed
        # The collaborators, each given what it uses (no one reaches into another).
        self.trust, self.state_report = open_trust(self.data, self.log, self.state, store=store)
        self.recorder = Recorder(self.log, self.state, self.trust)
        self.authenticator = Authenticator(
            trust=self.trust, nonces=self.nonces, recorder=self.recorder, state=self.state, clock=self.now
        )
        self.executions = Executions(
            state=self.state,
            log=self.log,
            recorder=self.recorder,
            trust=self.trust,
            clock=self.now,
            node=node,
            quotas=self.quotas,
            warrant_public_key=self.warrant_public_key,
            # The governance response to a violation; the administration is built next.
            suspend=lambda name: self.admin.set_principal_status(name, "suspended", by="governance-response"),
            log_signer=self.data.log_signer,
            transitions=transitions,
            lease_signer=warrant_key.sign,  # start and renew answers (ADR 0017)
        )
        self.admin = Administration(
            trust=self.trust,
            recorder=self.recorder,
            state=self.state,
            log=self.log,
            broadcaster=self.broadcaster,
            executions=self.executions,
            node=node,
            clock=self.now,
            carry=self.nonces.persist,
        )
        issuer = WarrantIssuer(
            self.state,
            node=node,
            warrant_key=warrant_key.private_bytes(),
            warrant_ttl_s=warrant_ttl_s,
            minter=self.minter,
            minted=self.executions.minted,  # a start knows these by their bytes (ADR 0026)
        )
        self.authorizer = Authorizer(
            trust=self.trust,
            recorder=self.recorder,
            issuer=issuer,
            registry=self.executions.registry,
            counters=self.counters,
            nonces=self.nonces,
            state=self.state,
            quotas=self.quotas,
            node=node,
            clock=self.now,
            warrant_public_key=self.warrant_public_key,
        )
        # Shared: the trust changes the other processes record reach this one (follower.py).
        self.follower: TrustFollower | None = None
        if isinstance(self.broadcaster, FollowedBroadcaster):
            parts = (self.trust, self.state, self.executions.revoked, self.recorder.admin_lock)
            self.follower = self.broadcaster.follow(
                *parts, log_store=stores.log, start=followed_from, issued=self.counters.observed
            )
        # Witnesses (ADR 0014): checkpoints cosigned in the background once serving
        # (start_sweeper); an invalid [witnesses] table or policy file stops the governor here.
        self.cosigner: Cosigner | None = None
        self.witness: NodeWitness | None = None  # this node as a witness: proctor serve --witness DIR
        if self.config.witnesses is not None:
            from proctor.governor.cosigner import Cosigner  # noqa: PLC0415 - only with [witnesses]

            self.cosigner = Cosigner.open(self.data, self.log, self.config.witnesses, store=store)

    # -- lifecycle -------------------------------------------------------------

    def start_sweeper(self, interval_s: float = 0.5) -> None:
        """Close lapsed executions in the background (``Executions.sweep``): a lease
        that lapsed with no renewal or finish is recorded as ``supervisor-lost``. With
        witnesses, start the cosigner too (:mod:`proctor.governor.cosigner`)."""
        if self.cosigner is not None:
            self.cosigner.start()
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
        if self.cosigner is not None:
            self.cosigner.close()
        if self.follower is not None:
            self.follower.close()
        self.authenticator.close()
        self.nonces.close()
        if self._offload is not None:
            self._offload.shutdown(wait=False, cancel_futures=True)
        self.executions.close()
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

    def ready(self) -> tuple[bool, dict[str, str]]:
        """Readiness: the store (answering, with state that agreed with the log at
        start), the log and a valid policy bundle."""
        checks: dict[str, str] = {}
        problem = self.trust.state_problem
        try:
            self.state.ping()
            checks["store"] = "ok" if problem is None else f"error: {problem}"
        except StoreError as e:
            checks["store"] = f"error: {e}"
        try:
            self.log.checkpoint()
            failed = self.log.commit_failure
            checks["log"] = "ok" if failed is None else f"error: cannot durably record: {failed}"
        except ProctorError as e:
            checks["log"] = f"error: {e}"
        checks["policy"] = "ok" if self.trust.engine is not None else f"error: {self.trust.bundle_error}"
        parts = {"witnesses": self.cosigner, "witness": self.witness}  # a fork seen stops the node
        checks |= {name: part.readiness() for name, part in parts.items() if part is not None}
        return all(v == "ok" for v in checks.values()), checks

    # -- authentication --------------------------------------------------------

    def authenticate(self, method: str, target: str, body: bytes, headers: Mapping[str, str]) -> str:
        """The principal that signed this request (:meth:`Authenticator.authenticate
        <proctor.governor.authentication.Authenticator.authenticate>`, which lists what it raises)."""
        return self.authenticator.authenticate(method, target, body, headers)

    async def authenticate_async(
        self, method: str, target: str, body: bytes, headers: Mapping[str, str]
    ) -> str:
        """:meth:`authenticate` for an event loop (:meth:`Authenticator.authenticate_async
        <proctor.governor.authentication.Authenticator.authenticate_async>`)."""
        return await self.authenticator.authenticate_async(method, target, body, headers)

    def persist_nonces(self) -> None:
        """Queue the nonces not yet persisted for the log writer's next transaction
        (authorizations carry them in their own commit; other requests call this)."""
        if self.nonces.claim_flush():
            self.recorder.side_write(self.nonces.persist)

    # -- authorization (Authorizer) ----------------------------------------------

    def authorize(self, principal: str, request: AuthorizeRequest) -> AuthorizeResult:
        """:meth:`Authorizer.authorize <proctor.governor.authorize.Authorizer.authorize>`:
        decide, record, issue; a failure of policy, state or log is a deny."""
        return self.authorizer.authorize(principal, request)

    async def authorize_async(self, principal: str, request: AuthorizeRequest) -> AuthorizeResult:
        """:meth:`authorize` for an event loop (:meth:`Authorizer.authorize_async
        <proctor.governor.authorize.Authorizer.authorize_async>`)."""
        if self._offload is not None:
            # Shared: an append waits while another process has the log's turn: off the loop.
            call = functools.partial(self.authorizer.authorize, principal, request)
            return await asyncio.get_running_loop().run_in_executor(self._offload, call)
        return await self.authorizer.authorize_async(principal, request)

    # -- administration (Administration) -----------------------------------------

    def add_principal(
        self, name: str, public_key_b64: str, *, attrs: Mapping[str, str], zone: str, by: str
    ) -> PrincipalRecord:
        """Register a principal (:meth:`Administration.add_principal
        <proctor.governor.admin.Administration.add_principal>`, which lists what it raises)."""
        return self.admin.add_principal(name, public_key_b64, attrs=attrs, zone=zone, by=by)

    def set_principal_status(self, name: str, status: str, *, by: str) -> PrincipalRecord:
        """Suspend or resume a principal (:meth:`Administration.set_principal_status
        <proctor.governor.admin.Administration.set_principal_status>`)."""
        return self.admin.set_principal_status(name, status, by=by)

    def push_policy(self, signed_doc: Mapping[str, Any], *, by: str) -> dict[str, Any]:
        """Validate, verify and activate a signed policy bundle
        (:meth:`Administration.push_policy <proctor.governor.admin.Administration.push_policy>`)."""
        return self.admin.push_policy(signed_doc, by=by)

    def revoke(self, kind: str, target: str, *, reason: str, by: str, successor: str = "") -> dict[str, Any]:
        """Revoke a warrant, an execution, a principal or a policy bundle
        (:meth:`Administration.revoke <proctor.governor.admin.Administration.revoke>`)."""
        return self.admin.revoke(kind, target, reason=reason, by=by, successor=successor)

    async def revoke_async(
        self, kind: str, target: str, *, reason: str, by: str, successor: str = ""
    ) -> dict[str, Any]:
        """:meth:`revoke` for the event loop (:meth:`Administration.revoke_async
        <proctor.governor.admin.Administration.revoke_async>`)."""
        if self._offload is not None:  # shared: as authorize_async
            call = functools.partial(
                self.admin.revoke, kind, target, reason=reason, by=by, successor=successor
            )
            return await asyncio.get_running_loop().run_in_executor(self._offload, call)
        return await self.admin.revoke_async(kind, target, reason=reason, by=by, successor=successor)

    # -- what the governor trusts (TrustView) ------------------------------------

    @property
    def state_problem(self) -> str | None:
        """Why the state is not trusted (the governor then serves nothing), or ``None``."""
        return self.trust.state_problem

    @property
    def engine(self) -> PolicyEngine | None:
        """The active policy engine, or ``None`` (deny everything; always while the
        state is untrusted)."""
        return self.trust.engine

    def principal(self, name: str) -> PrincipalRecord | None:
        """The principal's record as governance sees it (:meth:`TrustView.principal
        <proctor.governor.trust.TrustView.principal>`)."""
        return self.trust.principal(name)

    def is_admin(self, principal: str) -> bool:
        """Whether ``principal`` is an active admin; no one is while the state is untrusted."""
        return self.trust.is_admin(principal)

    def public_key_for(self, name: str) -> bytes | None:
        """The public key of principal ``name`` (for request authentication)."""
        return self.trust.public_key_for(name)

    def warrant_revoked(self, warrant_id: str) -> bool:
        """Whether a warrant, an ancestor or its principal since issue is revoked; every
        warrant is while the state is untrusted (no start, no renewal)."""
        return self.trust.warrant_revoked(warrant_id)

    def active_policy(self) -> dict[str, Any] | None:
        """The active signed bundle as JSON, or ``None``."""
        return self.trust.active_policy()

    def trust_changes(self, since: int) -> list[dict[str, Any]]:
        """Revocations and policy activations recorded after log index ``since`` (the
        backlog of ``GET /v1/stream``), in log order."""
        return self.trust.trust_changes(since)
