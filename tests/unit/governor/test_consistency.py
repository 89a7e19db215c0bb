"""The state check (proctor.governor.consistency): every row must be what the log says.

A consistent scenario (events and rows as the governor writes them) checks out; each
single tampering of a row is named by table, key and field, and nothing else is.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gov_support import POLICIES
from proctor.governor._events import principal_event
from proctor.governor.consistency import (
    BundleRow,
    Discrepancy,
    PrincipalRow,
    RevocationRow,
    StateRows,
    WarrantRow,
    check_state,
)
from proctor.policy import PolicyBundle

Event = tuple[int, dict[str, Any]]
T = "2026-01-01T00:00:00.000Z"


def key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def pub(k: Ed25519PrivateKey) -> str:
    return base64.b64encode(k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


ADMIN, ALICE, BOB, MALLORY = key(1), key(2), key(3), key(4)


def signed(
    source: str, version: int, signer_key: Ed25519PrivateKey, signer: str = "admin"
) -> tuple[str, str]:
    bundle = PolicyBundle.from_directory(POLICIES / source, version=version)
    return bundle.digest, orjson.dumps(bundle.signed(signer_key, signer).to_json()).decode()


BASIC, BASIC_DOC = signed("basic", 1, ADMIN)
FREEZE, FREEZE_DOC = signed("freeze", 2, ADMIN)
TOKEN = "En0KEw…a-warrant-token"


def principal(
    name: str, change: str, attrs: dict[str, str], k: Ed25519PrivateKey | None, **kw: Any
) -> dict[str, Any]:
    return principal_event(
        name, change, attrs, "", 0, node="t", by="admin", public_key=None if k is None else pub(k), **kw
    )


def scenario(*, keys: bool = True) -> tuple[list[Event], StateRows]:
    """Events and rows as the governor writes them: three principals, a bundle, a
    warrant and its revocation."""
    events: list[Event] = [
        (0, {"v": 1, "type": "key.declared", "time": T, "purpose": "warrant", "public_key": pub(MALLORY)}),
        (1, principal("admin", "added", {"role": "admin"}, ADMIN if keys else None)),
        (2, principal("alice", "added", {"role": "dev"}, ALICE if keys else None)),
        (3, principal("bob", "added", {"role": "ops"}, BOB if keys else None)),
        (4, {"v": 1, "type": "policy.activated", "time": T, "bundle": BASIC, "version": 1, "signer": "admin", "previous": ""}),
        (5, {"v": 1, "type": "decision", "time": T, "decision": "allow", "principal": "alice"}),
        (6, {"v": 1, "type": "warrant.issued", "time": T, "warrant": "wr_1", "parent_warrant": "", "principal": "alice",
             "decision_index": 5, "expires": 900, "lease_ttl_ms": 3000,
             "token_digest": "sha256:" + hashlib.sha256(TOKEN.encode()).hexdigest()}),
        (7, {"v": 1, "type": "revocation", "time": T, "target": {"kind": "warrant", "id": "wr_1"}, "reason": "leaked", "by": "admin"}),
    ]  # fmt: skip
    rows = StateRows(
        principals=[
            PrincipalRow("admin", pub(ADMIN), '{"role":"admin"}', "", "active"),
            PrincipalRow("alice", pub(ALICE), '{"role":"dev"}', "", "active"),
            PrincipalRow("bob", pub(BOB), '{"role":"ops"}', "", "active"),
        ],
        bundles=[BundleRow(BASIC, 1, BASIC_DOC, 4)],
        active_bundle=BASIC,
        revocations=[RevocationRow("warrant", "wr_1", "leaked", "admin", T, 7)],
        warrants=[WarrantRow("wr_1", "alice", "", 5, 900, 6, TOKEN)],
    )
    return events, rows


def found(events: list[Event], rows: StateRows) -> set[tuple[str, str, str]]:
    return {(d.table, d.key, d.field) for d in check_state(events, rows).discrepancies}


def test_state_written_as_the_log_says_checks_out() -> None:
    events, rows = scenario()
    report = check_state(events, rows)
    assert report.ok, report.discrepancies
    assert report.unverified == ()
    assert report.events == 6
    assert report.active_bundle is not None
    assert report.active_bundle.digest == BASIC
    assert report.active_bundle.key_from_log


def _replace_first(items: Any, **changes: Any) -> list[Any]:
    return [dataclasses.replace(items[0], **changes), *items[1:]]


def _principal(rows: StateRows, name: str, **changes: Any) -> StateRows:
    return dataclasses.replace(
        rows, principals=[dataclasses.replace(p, **changes) if p.name == name else p for p in rows.principals]
    )


TAMPERINGS: dict[str, tuple[Callable[[StateRows], StateRows], set[tuple[str, str, str]]]] = {
    "bob made admin": (lambda r: _principal(r, "bob", attrs='{"role":"admin"}'), {("principals", "bob", "attrs")}),
    "zone moved": (lambda r: _principal(r, "bob", zone="prod"), {("principals", "bob", "zone")}),
    "status changed": (lambda r: _principal(r, "alice", status="suspended"), {("principals", "alice", "status")}),
    "key swapped": (lambda r: _principal(r, "bob", public_key=pub(MALLORY)), {("principals", "bob", "public_key")}),
    "attrs not JSON": (lambda r: _principal(r, "bob", attrs="{role"), {("principals", "bob", "attrs")}),
    "principal planted": (
        lambda r: dataclasses.replace(
            r, principals=[*r.principals, PrincipalRow("mallory", pub(MALLORY), '{"role":"admin"}', "", "active")]
        ),
        {("principals", "mallory", "row")},
    ),
    "principal deleted": (
        lambda r: dataclasses.replace(r, principals=[p for p in r.principals if p.name != "bob"]),
        {("principals", "bob", "row")},
    ),
    "bundle text replaced": (
        lambda r: dataclasses.replace(r, bundles=_replace_first(r.bundles, doc=FREEZE_DOC)),
        {("bundles", BASIC, "doc")},
    ),
    "bundle text not a bundle": (
        lambda r: dataclasses.replace(r, bundles=_replace_first(r.bundles, doc="[]")),
        {("bundles", BASIC, "doc")},
    ),
    "bundle version changed": (
        lambda r: dataclasses.replace(r, bundles=_replace_first(r.bundles, version=9)),
        {("bundles", BASIC, "version")},
    ),
    "bundle index moved": (
        lambda r: dataclasses.replace(r, bundles=_replace_first(r.bundles, log_index=5)),
        {("bundles", BASIC, "log_index")},
    ),
    "bundle planted and made active": (
        lambda r: dataclasses.replace(r, bundles=[*r.bundles, BundleRow(FREEZE, 2, FREEZE_DOC, 8)], active_bundle=FREEZE),
        {("bundles", FREEZE, "row"), ("meta", "active_bundle", "value")},
    ),
    "active bundle deleted": (
        lambda r: dataclasses.replace(r, bundles=[]),
        {("bundles", BASIC, "row")},
    ),
    "no active bundle": (
        lambda r: dataclasses.replace(r, active_bundle=None),
        {("meta", "active_bundle", "value")},
    ),
    "revocation deleted": (
        lambda r: dataclasses.replace(r, revocations=[]),
        {("revocations", "warrant/wr_1", "row")},
    ),
    "revocation moved": (
        lambda r: dataclasses.replace(r, revocations=_replace_first(r.revocations, log_index=5)),
        {("revocations", "warrant/wr_1", "log_index")},
    ),
    "revocation reworded": (
        lambda r: dataclasses.replace(r, revocations=_replace_first(r.revocations, reason="test", by="bob")),
        {("revocations", "warrant/wr_1", "reason"), ("revocations", "warrant/wr_1", "by")},
    ),
    "revocation planted": (
        lambda r: dataclasses.replace(
            r, revocations=[*r.revocations, RevocationRow("principal", "bob", "x", "admin", T, 7)]
        ),
        {("revocations", "principal/bob", "row")},
    ),
    "warrant deleted": (lambda r: dataclasses.replace(r, warrants=[]), {("warrants", "wr_1", "row")}),
    "warrant extended": (
        lambda r: dataclasses.replace(r, warrants=_replace_first(list(r.warrants), expires=10**9)),
        {("warrants", "wr_1", "expires")},
    ),
    "warrant token swapped": (
        lambda r: dataclasses.replace(r, warrants=_replace_first(list(r.warrants), token="forged")),
        {("warrants", "wr_1", "token")},
    ),
    "warrant given away": (
        lambda r: dataclasses.replace(r, warrants=_replace_first(list(r.warrants), principal="bob", parent="wr_0")),
        {("warrants", "wr_1", "principal"), ("warrants", "wr_1", "parent")},
    ),
    "warrant planted": (
        lambda r: dataclasses.replace(
            r, warrants=[WarrantRow("wr_0", "bob", "", 5, 900, 5, "x"), *r.warrants, WarrantRow("wr_9", "bob", "", 5, 900, 99, "x")]
        ),
        {("warrants", "wr_0", "issued_index"), ("warrants", "wr_9", "issued_index")},
    ),
}  # fmt: skip


@pytest.mark.parametrize("tampering", list(TAMPERINGS), ids=list(TAMPERINGS))
def test_each_row_that_disagrees_with_the_log_is_named(tampering: str) -> None:
    change, expected = TAMPERINGS[tampering]
    events, rows = scenario()
    assert found(events, change(rows)) == expected


def test_a_discrepancy_says_what_the_log_says_and_what_the_table_has() -> None:
    events, rows = scenario()
    (d,) = check_state(events, _principal(rows, "bob", attrs='{"role":"admin"}')).discrepancies
    assert d == Discrepancy("principals", "bob", "attrs", '{"role":"ops"}', '{"role":"admin"}', 3)
    assert (
        str(d)
        == 'principals[bob].attrs: the log says {"role":"ops"} (log index 3), the table has {"role":"admin"}'
    )
    assert d.to_json()["index"] == 3


def test_a_row_follows_the_last_event_of_its_principal() -> None:
    events, rows = scenario()
    events.append((8, principal("bob", "suspended", {"role": "ops"}, None)))
    assert found(events, rows) == {("principals", "bob", "status")}
    assert check_state(events, _principal(rows, "bob", status="suspended")).ok  # the key stays bob's


def test_a_key_rotated_in_the_log_is_the_key_expected() -> None:
    events, rows = scenario()
    events.append((8, principal("bob", "resumed", {"role": "ops"}, MALLORY)))
    assert found(events, rows) == {("principals", "bob", "public_key")}
    assert check_state(events, _principal(rows, "bob", public_key=pub(MALLORY))).ok


def test_a_change_with_no_known_status_is_reported() -> None:
    events, rows = scenario()
    events.append((8, principal("bob", "renamed", {"role": "ops"}, None)))
    assert found(events, rows) == {("principals", "bob", "status")}


def test_an_unreadable_state_event_is_reported() -> None:
    events, rows = scenario()
    events.append((8, {"v": 1, "type": "revocation", "time": T, "target": "bob"}))
    events.append((9, {"v": 1, "type": "principal.changed", "time": T}))
    assert found(events, rows) == {("log", "8", "revocation"), ("log", "9", "principal.changed")}


def test_the_active_bundle_must_verify_with_the_key_the_log_registered() -> None:
    # The attacker swaps the admin's key in its row and re-signs a bundle with its own.
    events, rows = scenario()
    digest, doc = signed("basic", 1, MALLORY)
    rows = dataclasses.replace(
        _principal(rows, "admin", public_key=pub(MALLORY)), bundles=[BundleRow(digest, 1, doc, 4)]
    )
    assert found(events, rows) == {("principals", "admin", "public_key"), ("bundles", BASIC, "signature")}


def test_the_active_bundle_signer_must_be_an_active_admin_in_the_log() -> None:
    events, rows = scenario()
    digest, doc = signed("freeze", 2, BOB, signer="bob")
    events.append((8, {"v": 1, "type": "policy.activated", "time": T, "bundle": digest, "version": 2, "signer": "bob", "previous": BASIC}))  # fmt: skip
    rows = dataclasses.replace(
        rows, bundles=[*rows.bundles, BundleRow(digest, 2, doc, 8)], active_bundle=digest
    )
    report = check_state(events, rows)
    assert {(d.table, d.key, d.field) for d in report.discrepancies} == {("bundles", digest, "signer")}
    assert 'attrs {"role":"ops"}' in report.discrepancies[0].expected
    assert report.active_bundle is None


def test_an_admin_revoked_before_the_activation_does_not_sign_it() -> None:
    events, rows = scenario()
    digest, doc = signed("freeze", 2, ADMIN)
    events.append((8, {"v": 1, "type": "revocation", "time": T, "target": {"kind": "principal", "id": "admin"}, "reason": "x", "by": "admin"}))  # fmt: skip
    events.append((9, {"v": 1, "type": "policy.activated", "time": T, "bundle": digest, "version": 2, "signer": "admin", "previous": BASIC}))  # fmt: skip
    rows = dataclasses.replace(
        rows,
        bundles=[*rows.bundles, BundleRow(digest, 2, doc, 9)],
        active_bundle=digest,
        revocations=[*rows.revocations, RevocationRow("principal", "admin", "x", "admin", T, 8)],
    )
    assert found(events, rows) == {("bundles", digest, "signer")}


def test_a_log_without_keys_vouches_for_the_rest_and_lists_the_keys() -> None:
    events, rows = scenario(keys=False)
    for event in (e for _, e in events if e["type"] == "principal.changed"):
        for field in ("attrs", "zone", "status"):
            del event[field]  # the oldest form: a digest of the attributes and a change
    report = check_state(events, rows)
    assert report.ok, report.discrepancies
    # three keys, the signer's admin role (a digest only) and the key the bundle verified with
    assert len(report.unverified) == 5
    assert report.active_bundle is not None
    assert not report.active_bundle.key_from_log
    assert found(events, _principal(rows, "bob", attrs='{"role":"admin"}')) == {
        ("principals", "bob", "attrs")
    }


def test_warrant_rows_must_come_in_log_order() -> None:
    events, rows = scenario()
    rows = dataclasses.replace(
        rows,
        warrants=[
            WarrantRow("wr_2", "bob", "", 5, 900, 9, "x"),
            WarrantRow("wr_1", "alice", "", 5, 900, 6, TOKEN),
        ],
    )
    with pytest.raises(ValueError, match="ascending issued_index"):
        check_state(events, rows)


def test_events_of_other_types_are_skipped() -> None:
    events, rows = scenario()
    noise = [
        (i, {"v": 1, "type": "decision", "time": T, "principal": {"weird": True}}) for i in range(100, 110)
    ]
    assert check_state([*events, *noise], rows).ok
