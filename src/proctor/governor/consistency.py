"""Does the governance state agree with the lineage log? A pure check: no I/O, no clock.

The state tables (:mod:`proctor.store.state`) are derived from the log for fast
lookups; the log is the only trust root (whoever reads it binds its entries to the
signed checkpoint first: :mod:`proctor.governor.state_audit`). A row the log does not
explain is a :class:`Discrepancy`, and one is enough for the governor to refuse to
serve. :func:`check_state` replays the events that derive rows (:data:`EVENT_TYPES`),
in log order, once, and compares.

Rules (the ``field`` of each discrepancy names what disagrees):

1. Principals. Every principal named by a ``principal.changed`` event has a row, and
   every row has such an event. The row's attributes and zone (so also its admin role,
   ``role=admin``) and its status are what the principal's last event says; its public
   key is the one in the last event that carries a key.
2. Bundles. ``meta.active_bundle`` names the bundle of the last ``policy.activated``
   event. Every stored bundle was activated in the log; its text parses and hashes to
   its digest; its version and log index are those of its last activation.
3. The active bundle's signer is the one its event names; its signature verifies with
   the signer's key as the log registered it; and by the log, the signer was an
   active admin when the bundle was activated.
4. Revocations. Every row is the ``revocation`` event at its log index (same kind,
   target, reason, author, time), and every target the log revoked has its row, at
   its last revocation: a deleted row would bring a revoked principal back.
5. Warrants. Every row is the ``warrant.issued`` event at its ``issued_index`` (same
   id, principal, parent, decision index, expiry, token digest), and every
   ``warrant.issued`` event has its row (the parent chains that revocation walks and
   the rate counters read these rows).

Events written before ``principal.changed`` carried a public key (and before it
carried the attributes themselves) vouch for less: a key the log never registered is
listed in :attr:`StateReport.unverified`, not as a discrepancy, and the active
bundle's signature is then checked with the key of the signer's row.

Values in a discrepancy are rendered as JSON and cut to :data:`MAX_VALUE_CHARS`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from proctor.authorization.keys import load_public_key
from proctor.errors import KeyFormatError, ProctorError
from proctor.governor._consistency_types import (
    ActiveBundle,
    BundleRow,
    Discrepancy,
    PrincipalRow,
    RevocationRow,
    StateReport,
    StateRows,
    WarrantRow,
)
from proctor.governor._events import STATUS_AFTER, attributes_digest
from proctor.policy import SignedBundle

__all__ = [
    "EVENT_TYPES",
    "MAX_VALUE_CHARS",
    "ActiveBundle",
    "BundleRow",
    "Discrepancy",
    "PrincipalRow",
    "RevocationRow",
    "StateReport",
    "StateRows",
    "WarrantRow",
    "check_state",
]

EVENT_TYPES = frozenset({"principal.changed", "policy.activated", "revocation", "warrant.issued"})
"""The event types that derive state rows; :func:`check_state` ignores the others."""

MAX_VALUE_CHARS = 200
ADMIN_ROLE = "admin"


# -- what the log says ----------------------------------------------------------------


@dataclass(frozen=True)
class _Principal:
    """A principal as its events so far describe it (replaced at each event, never changed)."""

    index: int
    change: str
    attributes_digest: str
    attrs: dict[str, Any] | None  # None: an old event with only the digest
    zone: str | None
    status: str | None  # None: a change STATUS_AFTER does not know
    public_key: str | None
    key_index: int | None


@dataclass(frozen=True)
class _Activation:
    index: int
    version: Any
    signer: str
    signer_then: _Principal | None  # the signer's last event before the activation
    signer_revoked: bool  # revoked after that event (then it counts as suspended)


@dataclass(frozen=True)
class _Revocation:
    index: int
    reason: Any
    by: Any
    time: Any


class _Findings:
    """The discrepancies and unverifiable items found so far."""

    def __init__(self) -> None:
        self.items: list[Discrepancy] = []
        self.unverified: list[str] = []

    def add(  # noqa: PLR0917 - a discrepancy's fields, in their order
        self, table: str, key: str, name: str, expected: str, found: str, index: int | None = None
    ) -> None:
        self.items.append(Discrepancy(table, key, name, expected, found, index))

    def compare(self, table: str, key: str, index: int | None, fields: Mapping[str, tuple[Any, Any]]) -> None:
        """One discrepancy per field whose (expected, found) values differ."""
        for name, (expected, found) in fields.items():
            if expected != found:
                self.add(table, key, name, _show(expected), _show(found), index)


class _Replay:
    """Everything the events say about the rows, built in one pass in log order."""

    def __init__(self, out: _Findings, warrants: Iterator[WarrantRow]) -> None:
        self.out = out
        self.principals: dict[str, _Principal] = {}
        self.activations: dict[str, _Activation] = {}
        self.last_activation: tuple[str, int] | None = None
        self.revocations: dict[tuple[str, str], _Revocation] = {}
        self.warrants = _WarrantMatch(warrants, out)
        self.events = 0

    def feed(self, index: int, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if kind not in EVENT_TYPES:
            return
        self.events += 1
        if kind == "principal.changed":
            self._principal_changed(index, event)
        elif kind == "policy.activated":
            self._policy_activated(index, event)
        elif kind == "revocation":
            self._revoked(index, event)
        else:
            self.warrants.issued(index, event)

    def _malformed(self, index: int, kind: str, found: Any) -> None:
        self.out.add("log", str(index), kind, "a well-formed event", _show(found), index)

    def _principal_changed(self, index: int, event: Mapping[str, Any]) -> None:
        name, change, digest = event.get("principal"), event.get("change"), event.get("attributes_digest")
        if type(name) is not str or type(change) is not str or type(digest) is not str:
            self._malformed(index, "principal.changed", {"principal": name, "change": change})
            return
        attrs, zone = event.get("attrs"), event.get("zone")
        status = event.get("status", STATUS_AFTER.get(change))
        key: Any = event.get("public_key")
        key_index: int | None = index
        if type(key) is not str:  # the key stays what the last event with one said
            before = self.principals.get(name)
            key, key_index = (None, None) if before is None else (before.public_key, before.key_index)
        self.principals[name] = _Principal(
            index,
            change,
            digest,
            dict(attrs) if isinstance(attrs, dict) else None,
            zone if type(zone) is str else None,
            status if type(status) is str else None,
            key,
            key_index,
        )

    def _policy_activated(self, index: int, event: Mapping[str, Any]) -> None:
        digest, signer = event.get("bundle"), event.get("signer")
        if type(digest) is not str or type(signer) is not str:
            self._malformed(index, "policy.activated", {"bundle": digest, "signer": signer})
            return
        then = self.principals.get(signer)
        # Revoked after its last change counts as suspended (TrustView.effective).
        revoked = self.revocations.get(("principal", signer))
        after = revoked is not None and (then is None or revoked.index > then.index)
        self.activations[digest] = _Activation(index, event.get("version"), signer, then, after)
        self.last_activation = (digest, index)

    def _revoked(self, index: int, event: Mapping[str, Any]) -> None:
        target = event.get("target")
        kind = target.get("kind") if isinstance(target, dict) else None
        ident = target.get("id") if isinstance(target, dict) else None
        if type(kind) is not str or type(ident) is not str:
            self._malformed(index, "revocation", target)
            return
        self.revocations[(kind, ident)] = _Revocation(
            index, event.get("reason"), event.get("by"), event.get("time")
        )


class _WarrantMatch:
    """Rule 5 as a merge of two streams in log order, the ``warrant.issued`` events and
    the rows by ``issued_index``: constant memory however many warrants there are."""

    def __init__(self, rows: Iterator[WarrantRow], out: _Findings) -> None:
        self._rows = rows
        self._out = out
        self._last: int | None = None
        self._row = self._next()

    def _next(self) -> WarrantRow | None:
        row = next(self._rows, None)
        if row is not None:
            if self._last is not None and row.issued_index < self._last:
                raise ValueError(
                    f"expected warrant rows in ascending issued_index order, found {row.issued_index} "
                    f"after {self._last}"
                )
            self._last = row.issued_index
        return row

    def _skip_to(self, index: int | None) -> None:
        """Report every row before ``index`` (``None``: every row left): no
        ``warrant.issued`` event of the log stands at its ``issued_index``."""
        while self._row is not None and (index is None or self._row.issued_index < index):
            row = self._row
            expected = "a warrant.issued event of this warrant at its issued_index"
            self._out.add("warrants", row.id, "issued_index", expected, _show(row.issued_index))
            self._row = self._next()

    def issued(self, index: int, event: Mapping[str, Any]) -> None:
        self._skip_to(index)
        warrant = event.get("warrant")
        if self._row is None or self._row.issued_index != index:
            self._out.add("warrants", _show_key(warrant), "row", "a row (issued)", "no row", index)
            return
        row, self._row = self._row, self._next()
        token_digest = "sha256:" + hashlib.sha256(row.token.encode()).hexdigest()
        self._out.compare(
            "warrants",
            row.id,
            index,
            {
                "id": (warrant, row.id),
                "principal": (event.get("principal"), row.principal),
                "parent": (event.get("parent_warrant", ""), row.parent),
                "decision_index": (event.get("decision_index"), row.decision_index),
                "expires": (event.get("expires"), row.expires),
                "token": (event.get("token_digest"), token_digest),
            },
        )

    def rest(self) -> None:
        self._skip_to(None)


# -- the check ------------------------------------------------------------------------


def check_state(events: Iterable[tuple[int, Mapping[str, Any]]], rows: StateRows) -> StateReport:
    """Check the state tables against the log's events.

    Args:
        events: ``(index, event)`` in increasing index order; at least every event of
            :data:`EVENT_TYPES` (others are skipped). Exceptions the iterator raises
            (a log that fails its own checks) propagate.
        rows: the tables, read in the same snapshot as the events.

    Returns:
        The report; ``ok`` when every row agrees.

    Raises:
        ValueError: ``rows.warrants`` is not in ascending ``issued_index`` order.
    """
    out = _Findings()
    replay = _Replay(out, iter(rows.warrants))
    for index, event in events:
        replay.feed(index, event)
    replay.warrants.rest()
    _check_principals(replay, rows.principals, out)
    active = _check_bundles(replay, rows, out)
    _check_revocations(replay, rows.revocations, out)
    return StateReport(tuple(out.items), tuple(out.unverified), replay.events, active)


def _check_principals(replay: _Replay, rows: Sequence[PrincipalRow], out: _Findings) -> None:
    """Rule 1."""
    logged = dict(replay.principals)
    for row in rows:
        seen = logged.pop(row.name, None)
        if seen is None:
            found = f"a row (attrs {row.attrs}, zone {_show(row.zone)}, status {_show(row.status)})"
            out.add("principals", row.name, "row", "no such principal", found)
            continue
        attrs = _attrs(row.attrs)
        if seen.attrs is not None and seen.zone is not None:
            out.compare(
                "principals",
                row.name,
                seen.index,
                {"attrs": (seen.attrs, attrs), "zone": (seen.zone, row.zone)},
            )
        elif _digest_of(attrs, row.zone) != seen.attributes_digest:
            expected = f"attributes and zone of digest {seen.attributes_digest}"
            out.add(
                "principals", row.name, "attrs", expected, f"{row.attrs}, zone {_show(row.zone)}", seen.index
            )
        if seen.status is None:
            expected = f"a status (its last change, {_show(seen.change)}, names none)"
            out.add("principals", row.name, "status", expected, _show(row.status), seen.index)
        else:
            out.compare("principals", row.name, seen.index, {"status": (seen.status, row.status)})
        if seen.public_key is None:
            out.unverified.append(f"principals[{row.name}].public_key: the log registered no key for it")
        else:
            out.compare(
                "principals", row.name, seen.key_index, {"public_key": (seen.public_key, row.public_key)}
            )
    for name, seen in sorted(logged.items()):
        out.add("principals", name, "row", f"a row ({seen.change})", "no row", seen.index)


def _check_bundles(replay: _Replay, rows: StateRows, out: _Findings) -> ActiveBundle | None:
    """Rule 2, then rule 3 for the active bundle; the active bundle if it checked out."""
    parsed: dict[str, SignedBundle | None] = {}
    for row in rows.bundles:
        activation = replay.activations.get(row.digest)
        if activation is None:
            found = f"a stored bundle (version {row.version}, log index {row.log_index})"
            out.add("bundles", row.digest, "row", "no policy.activated event for this digest", found)
            parsed[row.digest] = None
            continue
        fields = {
            "version": (activation.version, row.version),
            "log_index": (activation.index, row.log_index),
        }
        out.compare("bundles", row.digest, activation.index, fields)
        signed, problem = _parse_bundle(row.doc)
        if signed is not None and signed.bundle.digest != row.digest:
            problem = f"the text of bundle {signed.bundle.digest}"
            signed = None
        if problem is not None:
            out.add(
                "bundles", row.digest, "doc", f"the text of bundle {row.digest}", problem, activation.index
            )
        parsed[row.digest] = signed
    last = replay.last_activation
    if last is None:
        if rows.active_bundle is not None:
            out.add("meta", "active_bundle", "value", "no active bundle", _show(rows.active_bundle))
        return None
    digest, index = last
    if rows.active_bundle != digest:
        out.add("meta", "active_bundle", "value", _show(digest), _show(rows.active_bundle), index)
        return None
    if digest not in parsed:
        out.add("bundles", digest, "row", "a row (the active bundle)", "no row", index)
        return None
    signed = parsed[digest]
    if signed is None:
        return None  # reported above
    row_keys = {r.name: r.public_key for r in rows.principals}
    return _check_signature(replay.activations[digest], signed, row_keys, out)


def _check_signature(
    activation: _Activation, signed: SignedBundle, row_keys: Mapping[str, str], out: _Findings
) -> ActiveBundle | None:
    """Rule 3: the signer the event names, an active admin by the log, whose key as the
    log registered it verifies the signature."""
    digest, signer, index = signed.bundle.digest, activation.signer, activation.index
    if signed.signer != signer:
        out.add("bundles", digest, "signer", _show(signer), _show(signed.signer), index)
        return None
    then = activation.signer_then
    admin = None if then is None else then.attrs is None or then.attrs.get("role") == ADMIN_ROLE
    ok = then is not None and then.status == "active" and not activation.signer_revoked and admin
    if not ok:
        state = "no principal"
        if then is not None:
            state = f"attrs {_show(then.attrs)}, status {_show(then.status)}"
            state += ", revoked" if activation.signer_revoked else ""
        expected = f"an active admin when activated; the log then shows {signer} with {state}"
        out.add("bundles", digest, "signer", expected, _show(signed.signer), index)
    elif then is not None and then.attrs is None:
        out.unverified.append(f"bundles[{digest}].signer: the log has only a digest of {signer}'s attributes")
    key_text = None if then is None else then.public_key
    if key_text is None:
        key_text = row_keys.get(signer)
        out.unverified.append(
            f"bundles[{digest}].signature: checked with the key of {signer}'s row (the log registered none)"
        )
    try:
        if key_text is None:
            raise KeyFormatError(f"no key for {signer!r}")
        key = load_public_key(key_text)
        signed.verify(Ed25519PublicKey.from_public_bytes(key))
    except (ProctorError, ValueError):
        expected = f"a signature by {signer}'s key {_show(key_text)}"
        out.add("bundles", digest, "signature", expected, "a signature that does not verify with it", index)
        return None
    if not ok:
        return None
    from_log = then is not None and then.public_key is not None
    return ActiveBundle(digest, signed, key, from_log)


def _check_revocations(replay: _Replay, rows: Sequence[RevocationRow], out: _Findings) -> None:
    """Rule 4."""
    logged = dict(replay.revocations)
    for row in rows:
        key = f"{row.kind}/{row.target}"
        seen = logged.pop((row.kind, row.target), None)
        if seen is None:
            out.add(
                "revocations",
                key,
                "row",
                "no revocation of this target",
                f"a row at log index {row.log_index}",
            )
            continue
        fields = {
            "log_index": (seen.index, row.log_index),
            "reason": (seen.reason, row.reason),
            "by": (seen.by, row.by),
            "time": (seen.time, row.time),
        }
        out.compare("revocations", key, seen.index, fields)
    for (kind, target), seen in sorted(logged.items(), key=lambda kv: kv[1].index):
        out.add("revocations", f"{kind}/{target}", "row", "a row (revoked)", "no row", seen.index)


# -- helpers --------------------------------------------------------------------------


def _parse_bundle(doc: str) -> tuple[SignedBundle | None, str | None]:
    try:
        parsed = orjson.loads(doc)
        if not isinstance(parsed, dict):
            return None, f"not a JSON object: {_cut(doc)}"
        return SignedBundle.from_json(parsed), None
    except (ProctorError, ValueError, TypeError) as e:
        return None, f"text that is not a signed bundle ({_cut(str(e))})"


def _attrs(text: str) -> Any:
    """The stored attributes as the governor parses them (unparseable: the text)."""
    try:
        return orjson.loads(text)
    except ValueError:
        return text


def _digest_of(attrs: Any, zone: str) -> str | None:
    if not isinstance(attrs, dict):
        return None
    try:
        return attributes_digest(attrs, zone)
    except ProctorError:
        return None


def _show(value: Any) -> str:
    try:
        text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        text = repr(value)
    return _cut(text)


def _show_key(value: Any) -> str:
    return value if type(value) is str else _show(value)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"
