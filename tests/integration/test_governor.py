"""The governor in process, on real parts: SQLite, Cedar (cedarpy), Biscuit warrants.

The fail-closed table of the issue: one named test per rule. Each denies and leaves a
record in the lineage log where a record is possible.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gov_support import EXE, POLICIES, held_commits, signed_bundle
from proctor.authorization.warrants import WarrantRequest, args_digest, attenuate_warrant, verify_warrant
from proctor.errors import (
    BundleError,
    LogAppendError,
    PolicyError,
    PolicyValidationError,
    PrincipalError,
    StoreError,
    WarrantError,
)
from proctor.governor.model import AuthorizeRequest
from proctor.governor.service import Governor
from proctor.lineage.checkpoint import open_checkpoint
from proctor.lineage.merkle import leaf_hash
from proctor.lineage.proofs import InclusionProof


def exec_request(*argv: str, resource: str | None = None, **extra: Any) -> AuthorizeRequest:
    extra.setdefault("executable_digest", EXE)
    return AuthorizeRequest(action="exec", resource=resource or f"/usr/bin/{argv[0]}", argv=argv, **extra)


def last_event(gov: Governor, kind: str) -> dict[str, Any]:
    for index in range(gov.log.size - 1, -1, -1):
        event = json.loads(gov.log.leaf(index))
        if event["type"] == kind:
            return {"index": index, **event}
    raise AssertionError(f"no {kind} event")


def test_allow_issues_a_warrant_bound_to_the_decision(governor: Governor) -> None:
    result = governor.authorize("alice", exec_request("pg_dump", "db1"))
    assert result.allowed
    assert result.decision.policies == ("dev-pg-dump",)
    assert result.decision.obligations["max_duration_s"] == 60
    assert result.lease_ttl_ms == 3000
    decision = json.loads(governor.log.leaf(result.log_index or 0))
    issued = json.loads(governor.log.leaf(result.warrant_index or 0))
    assert decision["type"] == "decision"
    assert decision["decision"] == "allow"
    assert issued["type"] == "warrant.issued"
    assert issued["parent"]["index"] == result.log_index
    assert result.warrant_index is not None
    assert result.log_index is not None
    assert result.warrant_index > result.log_index
    claims = verify_warrant(
        result.warrant or "",
        root_public_key=governor.warrant_public_key,
        now=int(governor.now()),
        request=WarrantRequest("exec", "/usr/bin/pg_dump", args_digest(["pg_dump", "db1"]), "", EXE),
    )
    assert claims.decision_index == result.log_index
    assert claims.principal == "alice"
    # Both events are provable under the current checkpoint.
    cp = open_checkpoint(governor.log.checkpoint(), governor.log.verifier)
    for index in (result.log_index, result.warrant_index):
        assert index is not None
        proof = InclusionProof.from_json(governor.log.inclusion_proof(index))
        proof.verify(leaf_hash(governor.log.leaf(index)), cp.root_hash)


def test_argument_binding(governor: Governor) -> None:
    result = governor.authorize("alice", exec_request("pg_dump", "db1"))
    assert result.warrant is not None
    with pytest.raises(WarrantError) as err:
        verify_warrant(
            result.warrant,
            root_public_key=governor.warrant_public_key,
            now=int(governor.now()),
            request=WarrantRequest("exec", "/usr/bin/pg_dump", args_digest(["pg_dump", "db2"]), "", EXE),
        )
    assert err.value.reason == "scope"
    # And the policy itself denies db2.
    assert not governor.authorize("alice", exec_request("pg_dump", "db2")).allowed


def test_deny_is_recorded_with_its_reason(governor: Governor) -> None:
    result = governor.authorize("bob", exec_request("pg_dump", "db1"))
    assert not result.allowed
    assert result.warrant is None
    event = last_event(governor, "decision")
    assert event["index"] == result.log_index
    assert event["decision"] == "deny"
    assert event["principal"] == "bob"
    forbid = governor.authorize("alice", exec_request("rm", "-rf", "/"))
    assert not forbid.allowed
    assert "no-rm" in forbid.decision.policies


# -- the fail-closed table -------------------------------------------------------------


def test_fail_closed_schema_invalid_policy(governor: Governor, gov_data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "p.cedar").write_text(
        'permit (principal, action, resource) when { principal.no_such_attr == "x" };'
    )
    before = governor.engine.bundle_digest if governor.engine else None
    with pytest.raises(PolicyValidationError) as err:
        governor.push_policy(signed_bundle(gov_data, bad, version=2), by="admin")
    assert err.value.diagnostics
    assert governor.engine is not None
    assert governor.engine.bundle_digest == before  # the previous good policy stays active
    assert governor.authorize("alice", exec_request("pg_dump", "db1")).allowed


def test_fail_closed_empty_bundle(governor: Governor, gov_data: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "nothing.cedar").write_text("// no policies\n")
    with pytest.raises((PolicyError, BundleError)):
        governor.push_policy(signed_bundle(gov_data, empty, version=2), by="admin")
    assert governor.authorize("alice", exec_request("pg_dump", "db1")).allowed


def test_fail_closed_no_bundle_denies_everything(gov_data: Path) -> None:
    with Governor(gov_data) as gov:
        ready, checks = gov.ready()
        assert not ready
        assert checks["policy"].startswith("error")
        result = gov.authorize("admin", exec_request("echo", "hi", resource="/bin/echo"))
        assert not result.allowed
        assert "no valid policy bundle" in result.decision.reason
        assert last_event(gov, "decision")["decision"] == "deny"


def test_fail_closed_evaluation_error(governor: Governor, gov_data: Path, tmp_path: Path) -> None:
    src = tmp_path / "err"
    shutil.copytree(POLICIES / "basic", src)
    # A forbid that errors at run time (integer overflow; it validates) must not turn
    # into an allow: Cedar skips an erroring policy, which would leave only the permit.
    (src / "erroring.cedar").write_text(
        '@id("erroring-forbid")\n'
        'forbid (principal, action, resource == Proctor::Executable::"/bin/echo") '
        "when { context.argc + 9223372036854775807 > 0 };\n"
    )
    governor.push_policy(signed_bundle(gov_data, src, version=2), by="admin")
    result = governor.authorize("alice", exec_request("echo", "hi", resource="/bin/echo"))
    assert not result.allowed
    assert result.decision.errors
    event = last_event(governor, "decision")
    assert event["decision"] == "deny"
    assert event["errors"]


def test_fail_closed_suspended_principal(governor: Governor) -> None:
    governor.set_principal_status("alice", "suspended", by="admin")
    result = governor.authorize("alice", exec_request("pg_dump", "db1"))
    assert not result.allowed
    assert "suspended" in result.decision.reason
    assert last_event(governor, "decision")["decision"] == "deny"
    governor.set_principal_status("alice", "active", by="admin")
    assert governor.authorize("alice", exec_request("pg_dump", "db1")).allowed


def test_fail_closed_unknown_principal(governor: Governor) -> None:
    result = governor.authorize("mallory", exec_request("echo", "x", resource="/bin/echo"))
    assert not result.allowed
    assert last_event(governor, "decision")["principal"] == "mallory"


def test_fail_closed_revoked_parent(governor: Governor) -> None:
    parent = governor.authorize("alice", exec_request("echo", "hi", resource="/bin/echo"))
    assert parent.warrant is not None
    child = governor.authorize(
        "alice", exec_request("echo", "hi", resource="/bin/echo", parent_warrant=parent.warrant)
    )
    assert child.allowed
    governor.revoke("warrant", parent.warrant_id or "", reason="test", by="admin")
    again = governor.authorize(
        "alice", exec_request("echo", "hi", resource="/bin/echo", parent_warrant=parent.warrant)
    )
    assert not again.allowed
    assert "revoked" in again.decision.reason
    assert governor.warrant_revoked(child.warrant_id or "")  # the child dies with its parent


def test_fail_closed_parent_cannot_be_widened(governor: Governor) -> None:
    parent = governor.authorize("alice", exec_request("echo", "hi", resource="/bin/echo"))
    assert parent.warrant is not None
    wider = governor.authorize(
        "alice", exec_request("echo", "other", resource="/bin/echo", parent_warrant=parent.warrant)
    )
    assert not wider.allowed
    assert "parent warrant rejected (scope)" in wider.decision.reason


def test_fail_closed_widened_attenuation(governor: Governor) -> None:
    result = governor.authorize("alice", exec_request("echo", "hi", resource="/bin/echo"))
    assert result.warrant is not None
    narrowed = attenuate_warrant(
        result.warrant, root_public_key=governor.warrant_public_key, resource="/bin/true"
    )
    with pytest.raises(WarrantError):
        verify_warrant(
            narrowed,
            root_public_key=governor.warrant_public_key,
            now=int(governor.now()),
            request=WarrantRequest("exec", "/bin/echo", args_digest(["echo", "hi"]), "", EXE),
        )


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda t: t[: len(t) // 2], {"malformed", "truncated", "forged"}),
        (lambda t: t[:40] + ("A" if t[40] != "A" else "B") + t[41:], {"malformed", "forged", "truncated"}),
    ],
    ids=["truncated", "forged-byte"],
)
def test_fail_closed_damaged_warrant(governor: Governor, mutate: Any, reason: set[str]) -> None:
    result = governor.authorize("alice", exec_request("echo", "hi", resource="/bin/echo"))
    assert result.warrant is not None
    with pytest.raises(WarrantError) as err:
        verify_warrant(
            mutate(result.warrant),
            root_public_key=governor.warrant_public_key,
            now=int(governor.now()),
            request=None,
        )
    assert err.value.reason in reason


def test_fail_closed_expired_and_not_yet_valid_warrant(governor: Governor) -> None:
    result = governor.authorize("alice", exec_request("pg_dump", "db1"))
    assert result.warrant is not None
    assert result.expires is not None
    for now, reason in ((result.expires + 1, "expired"), (int(governor.now()) - 120, "not-yet-valid")):
        with pytest.raises(WarrantError) as err:
            verify_warrant(result.warrant, root_public_key=governor.warrant_public_key, now=now, request=None)
        assert err.value.reason == reason


def test_fail_closed_wrong_key_warrant(governor: Governor) -> None:
    from proctor.authorization.keys import PrincipalKey

    result = governor.authorize("alice", exec_request("echo", "hi", resource="/bin/echo"))
    other = PrincipalKey.generate("other").public_key
    with pytest.raises(WarrantError) as err:
        verify_warrant(result.warrant or "", root_public_key=other, now=int(governor.now()), request=None)
    assert err.value.reason == "forged"


def test_fail_closed_revoked_principal_kills_its_warrants(governor: Governor) -> None:
    result = governor.authorize("alice", exec_request("echo", "hi", resource="/bin/echo"))
    governor.revoke("principal", "alice", reason="compromised", by="admin")
    assert governor.warrant_revoked(result.warrant_id or "")
    assert not governor.authorize("alice", exec_request("echo", "hi", resource="/bin/echo")).allowed
    assert last_event(governor, "revocation")["target"] == {"kind": "principal", "id": "alice"}


def test_fail_closed_log_append_failure(governor: Governor, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise LogAppendError("disk full (simulated)")

    size = governor.log.size
    monkeypatch.setattr(governor.log, "append", broken)
    monkeypatch.setattr(governor.log, "append_chain", broken)
    monkeypatch.setattr(governor.log, "submit", broken)
    for argv in (("pg_dump", "db1"), ("pg_dump", "db2")):  # an allow and a deny
        result = governor.authorize("alice", exec_request(*argv))
        assert not result.allowed
        assert result.warrant is None
        assert "nothing is authorized unrecorded" in result.decision.reason
    monkeypatch.undo()
    assert governor.log.size == size


def test_fail_closed_warrant_minting_failure(governor: Governor, monkeypatch: pytest.MonkeyPatch) -> None:
    import proctor.governor.issuance as service

    def broken(*args: Any, **kwargs: Any) -> str:
        raise WarrantError("signing key unavailable (simulated)")

    monkeypatch.setattr(service, "mint_warrant", broken)
    result = governor.authorize("alice", exec_request("pg_dump", "db1"))
    assert not result.allowed
    assert result.warrant is None
    assert "signing key unavailable" in result.decision.reason
    # The allow decision is recorded, and warrant.failed (not warrant.issued) follows it.
    decision = last_event(governor, "decision")
    assert decision["index"] == governor.log.size - 2
    assert last_event(governor, "warrant.failed")["index"] == governor.log.size - 1


def test_fail_closed_warrant_index_failure(governor: Governor, gov_data: Path) -> None:
    """The warrant's row commits in the same transaction as its events: if the row
    cannot be written (here the table is gone), neither the decision nor the warrant
    is acknowledged, the answer is deny, and the log is as it was."""
    assert governor.authorize("alice", exec_request("pg_dump", "db1")).allowed  # counters loaded
    size, note = governor.log.size, governor.log.checkpoint()
    with sqlite3.connect(gov_data / "proctor.db") as conn:
        conn.execute("ALTER TABLE warrants RENAME TO warrants_gone")
    result = governor.authorize("alice", exec_request("pg_dump", "db1"))
    assert not result.allowed
    assert result.warrant is None
    assert "nothing is authorized unrecorded" in result.decision.reason
    assert (governor.log.size, governor.log.checkpoint()) == (size, note)
    with sqlite3.connect(gov_data / "proctor.db") as conn:
        conn.execute("ALTER TABLE warrants_gone RENAME TO warrants")
    assert governor.authorize("alice", exec_request("pg_dump", "db1")).allowed
    assert governor.log.check_all().ok


def test_fail_closed_store_unavailable(governor: Governor, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(name: str) -> Any:
        raise StoreError("database unreachable (simulated)")

    monkeypatch.setattr(governor.state, "principal", down)
    result = governor.authorize("alice", exec_request("pg_dump", "db1"))
    assert not result.allowed
    assert "database unreachable" in result.decision.reason
    monkeypatch.undo()
    assert last_event(governor, "decision")["decision"] == "deny"


def test_only_admins_change_policy_or_principals(governor: Governor, gov_data: Path) -> None:
    with pytest.raises(PrincipalError):
        governor.push_policy(signed_bundle(gov_data, POLICIES / "basic", version=3), by="alice")
    with pytest.raises(PrincipalError, match="last active admin"):
        governor.set_principal_status("admin", "suspended", by="admin")


def test_revoking_the_active_policy_denies_everything(governor: Governor) -> None:
    assert governor.engine is not None
    governor.revoke("policy", governor.engine.bundle_digest, reason="bad rollout", by="admin")
    assert governor.engine is None
    assert not governor.authorize("alice", exec_request("pg_dump", "db1")).allowed


def test_state_survives_restart(governor: Governor, gov_data: Path) -> None:
    digest = governor.engine.bundle_digest if governor.engine else ""
    governor.close()
    with Governor(gov_data) as again:
        assert again.engine is not None
        assert again.engine.bundle_digest == digest
        assert again.authorize("alice", exec_request("pg_dump", "db1")).allowed
        assert again.log.verify_all().ok


def test_decisions_replay_to_the_same_answer(governor: Governor) -> None:
    from proctor.canonical import canonicalize
    from proctor.governor._events import digest
    from proctor.policy import PolicyRequest
    from proctor.policy.commitment import ArgumentOpening, reveal

    for argv in (("pg_dump", "db1"), ("pg_dump", "db2"), ("rm", "-rf", "/")):
        governor.authorize("alice", exec_request(*argv))
    engine = governor.engine
    assert engine is not None
    replayed = 0
    for index in range(governor.log.size):
        event = json.loads(governor.log.leaf(index))
        if event["type"] != "decision" or "request" not in event:
            continue
        # The log carries the arguments as a commitment; the governor keeps the opening.
        logged = event["request"]
        assert logged["argv"] == []
        # "db1" is three hex digits: look for it outside the digests the request carries.
        shown = re.sub(r"sha256:[0-9a-f]{64}", "sha256:…", json.dumps(logged))
        assert all(a not in shown for a in ("db1", "db2", "-rf"))
        opening = governor.state.opening(index)
        assert opening is not None
        request = reveal(logged, ArgumentOpening.from_json(opening))
        again = engine.decide(PolicyRequest.from_json(request), now=event["now"])
        assert ("allow" if again.allow else "deny") == event["decision"]
        assert list(again.policies) == event["policies"]
        assert digest(canonicalize(logged)) == event["request_digest"]
        replayed += 1
    assert replayed >= 3


def _adversary_append(gov: Governor, token: str, source: str) -> str:
    # Attenuate with raw biscuit-python, as a holder of the token could.
    from biscuit_auth import Biscuit, BlockBuilder, PublicKey

    root = PublicKey("ed25519/" + gov.warrant_public_key.hex())
    return Biscuit.from_base64(token, root).append(BlockBuilder(source)).to_base64()


PARENT_CASES: dict[str, Any] = {
    "truncated": lambda gov, t, clock: t[: len(t) // 2],
    "forged-byte": lambda gov, t, clock: t[:60] + ("A" if t[60] != "A" else "B") + t[61:],
    "datalog-limit": lambda gov, t, clock: _adversary_append(
        gov, t, " ".join(f"n({i});" for i in range(40)) + " pair($x, $y) <- n($x), n($y);"
    ),
    "expired": lambda gov, t, clock: (clock.advance(10_000), t)[1],
    "not-yet-valid": lambda gov, t, clock: (clock.advance(-600), t)[1],
}


class Clock:
    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize("case", sorted(PARENT_CASES), ids=sorted(PARENT_CASES))
def test_fail_closed_bad_parent_warrant_is_denied_and_recorded(gov_data: Path, case: str) -> None:
    from proctor.authorization.keys import PrincipalKey

    clock = Clock()
    with Governor(gov_data, clock=clock) as gov:
        alice = PrincipalKey.generate("alice")
        gov.add_principal("alice", alice.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
        gov.push_policy(signed_bundle(gov_data, POLICIES / "basic"), by="admin")
        request = exec_request("echo", "hi", resource="/bin/echo")
        parent = gov.authorize("alice", request)
        assert parent.warrant is not None
        bad = PARENT_CASES[case](gov, parent.warrant, clock)
        size = gov.log.size
        child = gov.authorize("alice", exec_request("echo", "hi", resource="/bin/echo", parent_warrant=bad))
        assert not child.allowed
        assert "parent warrant rejected" in child.decision.reason
        assert gov.log.size == size + 1
        recorded = last_event(gov, "decision")
        assert recorded["decision"] == "deny"
        assert "parent warrant rejected" in recorded["reason"]


def test_fail_closed_parent_from_another_governor(gov_data: Path, tmp_path: Path, governor: Governor) -> None:
    from proctor.governor.service import initialize

    other_data = tmp_path / "other"
    initialize(other_data, origin="other.example/gov")
    with Governor(other_data) as other:
        from proctor.authorization.keys import PrincipalKey

        key = PrincipalKey.generate("alice")
        other.add_principal("alice", key.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
        other.push_policy(signed_bundle(other_data, POLICIES / "basic"), by="admin")
        foreign = other.authorize("alice", exec_request("echo", "hi", resource="/bin/echo"))
    assert foreign.warrant is not None
    child = governor.authorize(
        "alice", exec_request("echo", "hi", resource="/bin/echo", parent_warrant=foreign.warrant)
    )
    assert not child.allowed
    assert "(forged)" in child.decision.reason


def test_policy_replay_cli_reports_what_would_change(
    governor: Governor, gov_data: Path, tmp_path: Path
) -> None:
    import subprocess
    import sys

    for argv in (("pg_dump", "db1"), ("pg_dump", "db2")):
        governor.authorize("alice", exec_request(*argv))
    governor.close()
    stricter = tmp_path / "stricter"
    shutil.copytree(POLICIES / "basic", stricter)
    (stricter / "freeze.cedar").write_text(
        '@id("freeze")\nforbid (principal, action, resource == Proctor::Executable::"/usr/bin/pg_dump");\n'
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "proctor",
            "policy",
            "replay",
            "--bundle",
            str(stricter),
            "--data",
            str(gov_data),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(run.stdout)
    assert report["changed"] == 1
    change = report["changes"][0]
    assert (change["before"], change["after"]) == ("allow", "deny")
    assert "freeze" in change["policies"]
    same = subprocess.run(
        [
            sys.executable,
            "-m",
            "proctor",
            "policy",
            "replay",
            "--bundle",
            str(POLICIES / "basic"),
            "--data",
            str(gov_data),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(same.stdout)["changed"] == 0


def test_rate_counter_reaches_policy(governor: Governor, gov_data: Path, tmp_path: Path) -> None:
    src = tmp_path / "rate"
    shutil.copytree(POLICIES / "basic", src)
    (src / "rate.cedar").write_text(
        '@id("rate-limit")\nforbid (principal, action, resource) when { context.counters.rate_1m >= 3 };\n'
    )
    governor.push_policy(signed_bundle(gov_data, src, version=2), by="admin")
    results = [governor.authorize("alice", exec_request("echo", "x", resource="/bin/echo")) for _ in range(5)]
    assert [r.allowed for r in results] == [True, True, True, False, False]
    assert "rate-limit" in results[3].decision.policies


def test_principal_revoked_resumed_and_revoked_again(governor: Governor) -> None:
    first = governor.authorize("alice", exec_request("echo", "1", resource="/bin/echo"))
    governor.revoke("principal", "alice", reason="one", by="admin")
    governor.set_principal_status("alice", "active", by="admin")
    between = governor.authorize("alice", exec_request("echo", "2", resource="/bin/echo"))
    assert between.allowed
    assert governor.warrant_revoked(first.warrant_id or "")
    assert not governor.warrant_revoked(between.warrant_id or "")
    governor.revoke("principal", "alice", reason="two", by="admin")
    assert governor.warrant_revoked(between.warrant_id or "")  # the second revocation counts too


def test_principal_changes_apply_at_once_despite_the_principal_cache(governor: Governor) -> None:
    assert governor.authorize("alice", exec_request("pg_dump", "db1")).allowed  # alice is cached now
    governor.set_principal_status("alice", "suspended", by="admin")
    denied = governor.authorize("alice", exec_request("pg_dump", "db1"))
    assert not denied.allowed
    assert "suspended" in denied.decision.reason
    governor.set_principal_status("alice", "active", by="admin")
    assert governor.authorize("alice", exec_request("pg_dump", "db1")).allowed
    governor.revoke("principal", "alice", reason="compromised", by="admin")
    assert not governor.authorize("alice", exec_request("pg_dump", "db1")).allowed


def test_the_warrant_row_points_at_its_decision_and_issuance_events(governor: Governor) -> None:
    result = governor.authorize("alice", exec_request("pg_dump", "db1"))
    assert result.warrant_id is not None
    row = governor.state.warrant(result.warrant_id)
    assert row is not None
    assert (row["decision_index"], row["issued_index"]) == (result.log_index, result.warrant_index)
    assert last_event(governor, "warrant.issued")["index"] == result.warrant_index
    assert row["token"] == result.warrant


def test_rejected_requests_are_recorded_and_nonces_survive_a_restart(
    governor: Governor, gov_data: Path
) -> None:
    import time

    from proctor.authorization.keys import PrincipalKey
    from proctor.authorization.requests import sign_request
    from proctor.errors import AuthenticationError

    alice = PrincipalKey.load(gov_data / "alice.key")
    body = b'{"action": "exec", "resource": "/bin/echo"}'
    headers = {
        k.lower(): v
        for k, v in sign_request("POST", "/v1/authorize", body, alice, now=int(time.time())).items()
    }
    assert governor.authenticate("POST", "/v1/authorize", body, headers) == "alice"
    with pytest.raises(AuthenticationError) as replayed:
        governor.authenticate("POST", "/v1/authorize", body, headers)
    assert replayed.value.reason == "replayed"
    governor.persist_nonces()
    governor.log.submit([]).wait()  # the queued side writes have committed by now
    (failure,) = governor.state.auth_failures()
    assert failure["reason"] == "replayed"
    governor.close()
    with Governor(gov_data) as again:  # the nonce was persisted: still a replay
        with pytest.raises(AuthenticationError) as after_restart:
            again.authenticate("POST", "/v1/authorize", body, headers)
        assert after_restart.value.reason == "replayed"


def test_a_revocation_reaches_the_streams_before_its_commit(governor: Governor) -> None:
    """A revoked execution must not run on for the disk's flush: the revocation is pushed
    once it is queued (``seq`` -1, not yet recorded), and again with its log index once
    committed (ADR 0021)."""
    import asyncio

    result = governor.authorize("alice", exec_request("pg_dump", "db1"))
    warrant = result.warrant_id or ""
    store = governor.log._store  # the real SQLite store, its commit held back below

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], int]:
        queue = governor.broadcaster.subscribe()
        size = store.tree_size()  # what is durable (the log's size counts what is queued)
        try:
            with held_commits(store) as (holding, release):
                revoking = asyncio.ensure_future(
                    asyncio.to_thread(governor.revoke, "warrant", warrant, reason="test", by="admin")
                )
                early = await asyncio.wait_for(queue.get(), 10)
                # Pushed while its commit is held back: nothing of it is durable yet.
                assert await asyncio.to_thread(holding.wait, 10)
                assert not revoking.done()
                assert store.tree_size() == size
                release.set()
                done = await asyncio.wait_for(revoking, 10)
            recorded = await asyncio.wait_for(queue.get(), 10)
            return early, recorded, int(done["log_index"])
        finally:
            governor.broadcaster.unsubscribe(queue)

    early, recorded, index = asyncio.run(scenario())
    assert early == {"type": "revocation", "seq": -1, "kind": "warrant", "target": warrant, "recorded": False}
    assert recorded == {"type": "revocation", "seq": index, "kind": "warrant", "target": warrant}
    assert last_event(governor, "revocation")["target"] == {"kind": "warrant", "id": warrant}
