"""The re-check of a running execution (proctor.verification.recheck): one test per verdict.

The trust view is a fake (the governor's own view is exercised end to end by the
integration and conformance tests); the presented warrants are real Biscuit tokens,
minted, attenuated and verified by proctor.authorization.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from proctor.authorization.keys import PrincipalKey
from proctor.authorization.warrants import (
    VerifiedWarrant,
    WarrantClaims,
    args_digest,
    attenuate_warrant,
    mint_warrant,
    verify_warrant_bounds,
)
from proctor.errors import VerificationError
from proctor.policy import Decision
from proctor.verification.recheck import (
    RECHECK_REASONS,
    ExecutionRecord,
    Reevaluation,
    RenewalReport,
    TrustView,
    Verdict,
    recheck,
)

ROOT = PrincipalKey.from_private_bytes("admin", bytes(range(32)))
OTHER = PrincipalKey.from_private_bytes("admin", bytes(range(1, 33)))
STARTED = 1_700_000_000
EXPIRES = STARTED + 600
NOW = STARTED + 60.25
NOW_MS = int(NOW * 1000)
OLD_BUNDLE = "sha256:" + "01" * 32
NEW_BUNDLE = "sha256:" + "02" * 32
CLAIMS = WarrantClaims(
    warrant_id="wr_0123456789abcdefghijklmnop",
    principal="alice",
    action="exec",
    resource="/usr/bin/true",
    args_digest=args_digest(["true"]),
    zone="",
    executable_digest="sha256:" + "5e" * 32,
    obligations={},
    not_before=STARTED - 5,
    expires=EXPIRES,
    lease_ttl_ms=3000,
    decision_index=7,
    parent="",
)
TOKEN = mint_warrant(CLAIMS, root_private_key=ROOT.private_bytes())
RECORD = ExecutionRecord(
    execution_id="ex_abc",
    principal="alice",
    warrant_id=CLAIMS.warrant_id,
    bundle=OLD_BUNDLE,
    request='{"principal": "alice"}',
    lease_expires_ms=NOW_MS + 2000,
)
OK = RenewalReport()


def _verified(token: str, root: PrincipalKey = ROOT) -> VerifiedWarrant:
    return verify_warrant_bounds(token, root_public_key=root.public_key, now=STARTED, request=None)


class StateView:
    """A trust view over plain sets, as the governor's state would answer.

    ``presented`` is verified (really) each time it is asked for, under ``root``.
    """

    def __init__(self, *, presented: str = TOKEN, root: PrincipalKey = ROOT) -> None:
        self.presented = presented
        self.root = root
        self.revoked: set[tuple[str, str]] = set()
        self.revoked_chains: set[str] = set()
        self.active: set[str] = {"alice"}
        self.bundle: str | None = OLD_BUNDLE
        self.decisions: dict[str, Decision] = {}
        self.decided: list[tuple[str, int]] = []

    def is_revoked(self, kind: str, target: str) -> bool:
        return (kind, target) in self.revoked

    def warrant_revoked(self, warrant_id: str) -> bool:
        return warrant_id in self.revoked_chains

    def principal_active(self, name: str) -> bool:
        return name in self.active

    def presented_warrant(self) -> VerifiedWarrant:
        return _verified(self.presented, self.root)

    def active_bundle(self) -> str | None:
        return self.bundle

    def decide(self, request: str, now: int) -> Decision:
        self.decided.append((request, now))
        return self.decisions[self.bundle or ""]


def _view(**kw: Any) -> StateView:
    view = StateView(**kw)
    _: TrustView = view  # the fake implements the Protocol (mypy checks this line)
    return view


def test_the_view_protocol_is_implemented_by_the_fake() -> None:
    assert recheck(RECORD, _view(), NOW, OK) == Verdict()


# -- each verdict --------------------------------------------------------------------


def test_step_1_a_revoked_execution_is_revoked() -> None:
    view = _view()
    view.revoked.add(("execution", "ex_abc"))
    assert recheck(RECORD, view, NOW, OK) == Verdict("revoked", "the execution was revoked")


def test_step_2_a_presented_warrant_that_no_longer_verifies_is_revoked() -> None:
    view = _view(root=OTHER)  # the key it verifies under is not the one that signed it
    verdict = recheck(RECORD, view, NOW, OK)
    assert verdict.terminate == "revoked"
    assert verdict.detail.startswith("the presented warrant no longer verifies: ")
    assert len(verdict.detail) > len("the presented warrant no longer verifies: ")


def test_step_2_a_revoked_warrant_chain_is_revoked() -> None:
    view = _view()
    view.revoked_chains.add(CLAIMS.warrant_id)  # itself, an ancestor, or its principal since issue
    assert recheck(RECORD, view, NOW, OK) == Verdict(
        "revoked", "its warrant (a copy, an ancestor, or its principal) was revoked"
    )


def test_step_2_a_revoked_block_of_the_presented_copy_is_revoked() -> None:
    copy = attenuate_warrant(TOKEN, root_public_key=ROOT.public_key, resource="/usr/bin/true")
    view = _view(presented=copy)
    assert recheck(RECORD, view, NOW, OK).ok  # the copy alone is fine
    block = _verified(copy).revocation_ids[-1]
    assert block not in _verified(TOKEN).revocation_ids  # the attenuation's own id
    view.revoked.add(("warrant", block))
    assert recheck(RECORD, view, NOW, OK) == Verdict(
        "revoked", "its warrant (a copy, an ancestor, or its principal) was revoked"
    )


def test_step_2_an_expired_warrant_is_expired() -> None:
    record = dataclasses.replace(RECORD, lease_expires_ms=(EXPIRES + 10) * 1000)
    assert recheck(record, _view(), EXPIRES - 0.5, OK).ok
    assert recheck(record, _view(), EXPIRES, OK) == Verdict("expired", f"the warrant expired at {EXPIRES}")


def test_step_2_an_attenuated_expiry_counts() -> None:
    sooner = STARTED + 120
    copy = attenuate_warrant(TOKEN, root_public_key=ROOT.public_key, expires=sooner)
    record = dataclasses.replace(RECORD, lease_expires_ms=(sooner + 10) * 1000)
    assert recheck(record, _view(presented=copy), sooner, OK) == Verdict(
        "expired", f"the warrant expired at {sooner}"
    )


def test_step_3_an_inactive_principal_is_revoked() -> None:
    view = _view()
    view.active.clear()
    assert recheck(RECORD, view, NOW, OK) == Verdict("revoked", "principal 'alice' is not active")


def test_step_4_a_lapsed_lease_is_lost() -> None:
    lapsed = dataclasses.replace(RECORD, lease_expires_ms=NOW_MS - 1)
    assert recheck(lapsed, _view(), NOW, OK) == Verdict("lease-lost", "the lease expired before this renewal")


def test_step_4_a_renewal_in_the_last_millisecond_of_the_lease_counts() -> None:
    last = dataclasses.replace(RECORD, lease_expires_ms=NOW_MS)
    assert recheck(last, _view(), NOW, OK).ok


def test_step_5_an_integrity_violation_terminates_with_the_enforcers_words() -> None:
    report = RenewalReport.from_json({"integrity": "violated", "integrity_detail": "/usr/bin/true changed"})
    assert recheck(RECORD, _view(), NOW, report) == Verdict("integrity", "/usr/bin/true changed")


def test_step_6_no_valid_bundle_is_a_policy_termination() -> None:
    view = _view()
    view.bundle = None
    assert recheck(RECORD, view, NOW, OK) == Verdict("policy", "no valid policy bundle is active")
    assert view.decided == []


def test_step_6_the_same_bundle_is_not_re_evaluated() -> None:
    view = _view()
    verdict = recheck(RECORD, view, NOW, OK)
    assert verdict == Verdict()
    assert verdict.ok
    assert verdict.reevaluation is None
    assert view.decided == []


def test_step_6_a_new_bundle_that_allows_keeps_it_running_and_is_reported() -> None:
    view = _view()
    view.bundle = NEW_BUNDLE
    view.decisions[NEW_BUNDLE] = Decision(allow=True, policies=("p",), errors=(), reason="permitted")
    verdict = recheck(RECORD, view, NOW, OK)
    assert verdict.ok
    assert verdict.reevaluation == Reevaluation(NEW_BUNDLE, allowed=True, reason="permitted")
    assert view.decided == [(RECORD.request, int(NOW))]  # the logged request, at whole seconds


def test_step_6_a_new_bundle_that_denies_is_a_policy_termination_and_is_reported() -> None:
    view = _view()
    view.bundle = NEW_BUNDLE
    view.decisions[NEW_BUNDLE] = Decision(allow=False, policies=(), errors=(), reason="no permit matched")
    verdict = recheck(RECORD, view, NOW, OK)
    assert verdict == Verdict(
        "policy",
        f"re-evaluated under {NEW_BUNDLE}: no permit matched",
        Reevaluation(NEW_BUNDLE, allowed=False, reason="no permit matched"),
    )
    assert not verdict.ok


# -- order and failing closed --------------------------------------------------------


def _break(
    step: int, view: StateView, record: ExecutionRecord, report: RenewalReport
) -> tuple[ExecutionRecord, RenewalReport]:
    """Make step ``step`` fail in ``view``, or in the record or report it returns."""
    if step == 1:
        view.revoked.add(("execution", "ex_abc"))
    elif step == 2:
        view.revoked_chains.add(CLAIMS.warrant_id)
    elif step == 3:
        view.active.clear()
    elif step == 4:
        record = dataclasses.replace(record, lease_expires_ms=0)
    elif step == 5:
        report = RenewalReport(violated=True, detail="changed")
    else:
        view.bundle = None
    return record, report


_REASON = {1: "revoked", 2: "revoked", 3: "revoked", 4: "lease-lost", 5: "integrity", 6: "policy"}


@pytest.mark.parametrize("first", range(1, 7), ids=[f"step-{i}" for i in range(1, 7)])
def test_the_first_failing_step_decides(first: int) -> None:
    """With every step from ``first`` on failing, the verdict is ``first``'s alone."""
    view, record, report = _view(), RECORD, OK
    for step in range(first, 7):
        record, report = _break(step, view, record, report)
    only = _view()
    record_alone, report_alone = _break(first, only, RECORD, OK)
    alone = recheck(record_alone, only, NOW, report_alone)
    verdict = recheck(record, view, NOW, report)
    assert verdict.terminate == _REASON[first]
    assert verdict == alone


def test_an_error_in_the_view_is_not_an_ok() -> None:
    """Only the presented warrant's WarrantError is a verdict; anything else propagates,
    so the renewal fails and the lease is not extended."""

    class Broken(StateView):
        def principal_active(self, name: str) -> bool:
            raise RuntimeError("state unreadable")

    with pytest.raises(RuntimeError, match="state unreadable"):
        recheck(RECORD, Broken(), NOW, OK)


def test_a_policy_error_while_re_evaluating_is_not_an_ok() -> None:
    view = _view()
    view.bundle = NEW_BUNDLE  # no decision for it: decide raises KeyError
    with pytest.raises(KeyError):
        recheck(RECORD, view, NOW, OK)


# -- the report, the record and the verdict ------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"integrity": "ok"}, RenewalReport()),
        ({}, RenewalReport()),
        ({"integrity": None}, RenewalReport()),
        (None, RenewalReport()),
        ("violated", RenewalReport()),
        ({"integrity": "violated"}, RenewalReport(True, "integrity violated")),
        ({"integrity": "OK"}, RenewalReport(True, "integrity violated")),
        ({"integrity": []}, RenewalReport(True, "integrity violated")),
        ({"integrity": False, "integrity_detail": 3}, RenewalReport(True, "3")),
        ({"integrity": "bad", "integrity_detail": "x" * 5000}, RenewalReport(True, "x" * 1000)),
    ],
    ids=["ok", "absent", "null", "no-body", "not-an-object", "violated", "case-matters", "a-list",
         "false-detail-as-text", "detail-truncated"],
)  # fmt: skip
def test_a_renewal_report_is_ok_only_when_it_says_ok_or_nothing(body: Any, expected: RenewalReport) -> None:
    assert RenewalReport.from_json(body) == expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("execution_id", None),
        ("principal", 1),
        ("warrant_id", b"wr"),
        ("bundle", None),
        ("request", {"principal": "alice"}),
        ("lease_expires_ms", "1"),
        ("lease_expires_ms", 1.5),
    ],
    ids=["id", "principal", "warrant", "bundle", "request", "lease-text", "lease-float"],
)
def test_a_malformed_execution_record_is_refused(field: str, value: Any) -> None:
    with pytest.raises(VerificationError, match=f"execution record {field}: expected"):
        dataclasses.replace(RECORD, **{field: value})


def test_a_verdict_names_a_known_reason() -> None:
    assert set(RECHECK_REASONS) == {"revoked", "expired", "policy", "integrity", "lease-lost"}
    with pytest.raises(VerificationError, match="expected a reason"):
        Verdict("supervisor-lost", "not a re-check's reason")


def test_a_denied_re_evaluation_must_terminate_for_policy() -> None:
    denied = Reevaluation(NEW_BUNDLE, allowed=False, reason="no")
    with pytest.raises(VerificationError, match="must terminate for policy"):
        Verdict(reevaluation=denied)
    with pytest.raises(VerificationError, match="must terminate for policy"):
        Verdict("integrity", "x", denied)
