"""Policy rollback: bundle versions only go forward, as TUF's rollback protection does.

An older signed bundle (even version 0), re-sent with a fresh admin signature, is
refused; so is new content under a version already used. The active bundle re-sent is
idempotent. Activation history is append-only, so receipts of earlier executions keep
building.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gov_support import POLICIES, signed_bundle
from proctor.authorization.keys import PrincipalKey
from proctor.enforcement.measure import measure
from proctor.errors import BundleError, StoreConflictError
from proctor.governor.model import AuthorizeRequest
from proctor.governor.service import Governor


def variant(tmp_path: Path, name: str, extra: str) -> Path:
    """The basic policies with one more forbid, so that the content differs."""
    source = tmp_path / name
    source.mkdir()
    text = (POLICIES / "basic" / "exec.cedar").read_text()
    (source / "exec.cedar").write_text(
        f'{text}\n@id("{extra}")\nforbid (principal, action, resource == Proctor::Executable::"/{extra}");\n'
    )
    return source


def state_of(gov: Governor) -> tuple[int, str | None, list[tuple[int, str]]]:
    return gov.log.size, gov.engine.bundle_digest if gov.engine else None, gov.state.activations()


def test_an_older_bundle_is_refused_even_with_a_fresh_signature(
    governor: Governor, gov_data: Path, tmp_path: Path
) -> None:
    old = signed_bundle(gov_data, POLICIES / "basic", version=1)  # the fixture's bundle
    governor.push_policy(signed_bundle(gov_data, variant(tmp_path, "v2", "two"), version=2), by="admin")
    before = state_of(governor)
    with pytest.raises(BundleError, match=r"rollback.*expected a version above 2"):
        governor.push_policy(old, by="admin")  # signed again just now: still refused
    with pytest.raises(BundleError, match=r"rollback.*expected a version above 2"):
        governor.push_policy(signed_bundle(gov_data, POLICIES / "basic", version=0), by="admin")
    assert state_of(governor) == before  # nothing logged, nothing activated


def test_new_content_under_a_used_version_is_refused(
    governor: Governor, gov_data: Path, tmp_path: Path
) -> None:
    before = state_of(governor)
    with pytest.raises(BundleError, match="reuses version 1"):
        governor.push_policy(
            signed_bundle(gov_data, variant(tmp_path, "v1b", "other"), version=1), by="admin"
        )
    assert state_of(governor) == before


def test_the_active_bundle_pushed_again_is_idempotent(governor: Governor, gov_data: Path) -> None:
    first = governor.state.bundle_index(governor.engine.bundle_digest)  # type: ignore[union-attr]
    before = state_of(governor)
    again = governor.push_policy(signed_bundle(gov_data, POLICIES / "basic", version=1), by="admin")
    assert again["unchanged"] is True
    assert again["log_index"] == first
    assert again["version"] == 1
    assert state_of(governor) == before


def test_activation_history_is_append_only(governor: Governor, gov_data: Path, tmp_path: Path) -> None:
    v1 = governor.engine.bundle_digest  # type: ignore[union-attr]
    v1_index = governor.state.bundle_index(v1)
    governor.push_policy(signed_bundle(gov_data, variant(tmp_path, "v2", "two"), version=2), by="admin")
    with pytest.raises(BundleError):
        governor.push_policy(signed_bundle(gov_data, POLICIES / "basic", version=1), by="admin")
    assert governor.state.bundle_index(v1) == v1_index
    history = governor.state.activations()
    # Below the admin layer, the store itself refuses to move or rewrite an activation.
    doc = governor.state.bundle(v1)
    assert doc is not None
    with pytest.raises(StoreConflictError, match="append-only"):
        governor.state.put_bundle(v1, 1, doc, "2030-01-01T00:00:00.000Z", governor.log.size)
    with pytest.raises(StoreConflictError, match="append-only"):
        governor.state.put_bundle("sha256:" + "0" * 64, 2, doc, "2030-01-01T00:00:00.000Z", governor.log.size)
    assert governor.state.activations() == history


def run_once(gov: Governor) -> str:
    """Authorize, start and finish one real execution of /bin/true under the active policy."""
    measured = measure(["/bin/true"]).to_json()
    result = gov.authorize(
        "alice",
        AuthorizeRequest(
            action="exec",
            resource=measured["executable"],
            argv=("true",),
            executable_digest=measured["executable_digest"],
        ),
    )
    assert result.warrant is not None, result.decision.reason
    body: dict[str, Any] = {
        "warrant": result.warrant,
        "action": "exec",
        "resource": measured["executable"],
        "argv": ["true"],
        "measurement": measured,
    }
    execution = str(gov.executions.start("alice", body)["execution"])
    gov.executions.finish("alice", execution, {"outcome": "completed", "exit_status": 0})
    return execution


def test_receipts_of_earlier_executions_still_build_after_a_refused_rollback(
    gov_data: Path, tmp_path: Path
) -> None:
    every_exec = tmp_path / "all"
    every_exec.mkdir()
    (every_exec / "all.cedar").write_text(
        'permit (principal, action == Proctor::Action::"exec", resource);\n'
    )
    with Governor(gov_data) as gov:
        alice = PrincipalKey.generate("alice")
        gov.add_principal("alice", alice.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
        gov.push_policy(signed_bundle(gov_data, every_exec, version=0), by="admin")
        earlier = run_once(gov)
        gov.push_policy(signed_bundle(gov_data, POLICIES / "basic", version=1), by="admin")
        with pytest.raises(BundleError, match="rollback"):
            gov.push_policy(signed_bundle(gov_data, every_exec, version=0), by="admin")
        receipt = gov.executions.receipt(earlier)
        assert json.dumps(receipt)  # it builds: the bundle's activation still precedes the decision
