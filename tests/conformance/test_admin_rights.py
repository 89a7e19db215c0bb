"""The admin plane against a revoked or hostile principal: revocation removes every
right, admin included; the last admin hands over to a named successor in one logged
change; revoking what does not exist is refused and records nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gov_server import cli
from proctor.authorization.keys import PrincipalKey
from proctor.authorization.requests import sign_request
from proctor.errors import PrincipalError
from proctor.governor.admin import NoSuchTargetError
from proctor.governor.app import create_app
from proctor.governor.model import AuthorizeRequest, RequestShapeError
from proctor.governor.service import Governor
from proctor.store.state import RevocationRecord


@pytest.fixture
def client(governor: Governor) -> Iterator[TestClient]:
    with TestClient(create_app(governor), raise_server_exceptions=False) as c:
        yield c


def post(client: TestClient, key: PrincipalKey, path: str, body: Any) -> Any:
    raw = json.dumps(body).encode()
    return client.post(path, content=raw, headers=sign_request("POST", path, raw, key, now=int(time.time())))


def add_admin(gov: Governor, data: Path, name: str) -> PrincipalKey:
    key = PrincipalKey.generate(name)
    key.save(data / f"{name}.key")
    gov.add_principal(name, key.public_key_b64, attrs={"role": "admin"}, zone="", by="admin")
    return key


def events(gov: Governor, first: int) -> list[dict[str, Any]]:
    return [json.loads(gov.log.leaf(i)) for i in range(first, gov.log.size)]


def test_a_revoked_admin_keeps_no_admin_right(governor: Governor, gov_data: Path, client: TestClient) -> None:
    rogue = add_admin(governor, gov_data, "rogue")
    assert governor.is_admin("rogue")
    governor.revoke("principal", "rogue", reason="compromised", by="admin")
    assert not governor.is_admin("rogue")
    assert governor.principal("rogue").status == "suspended"  # type: ignore[union-attr]
    size = governor.log.size
    carol = PrincipalKey.generate("carol")
    added = post(client, rogue, "/v1/principals", {"name": "carol", "public_key": carol.public_key_b64})
    assert added.status_code == 403, added.text
    revoked = post(client, rogue, "/v1/revocations", {"kind": "principal", "target": "alice"})
    assert revoked.status_code == 403, revoked.text
    assert governor.log.size == size
    assert governor.principal("alice").status == "active"  # type: ignore[union-attr]
    assert governor.state.principal("carol") is None


def test_an_admin_revoked_before_revocations_suspended_keeps_no_admin_right(
    governor: Governor, gov_data: Path
) -> None:
    # A data directory from before the fix: the revocation is recorded, the admin's row
    # was never suspended. It is revoked all the same.
    add_admin(governor, gov_data, "rogue")
    stamp = "2999-01-01T00:00:00.000Z"  # after the row's last change
    governor.state.put_revocation(RevocationRecord("principal", "rogue", "old", "admin", stamp, 3))
    governor.trust.forget_principal("rogue")
    assert not governor.is_admin("rogue")
    request = AuthorizeRequest(action="exec", resource="/usr/bin/pg_dump", argv=("pg_dump", "db1"))
    assert not governor.authorize("rogue", request).allowed


def test_the_last_admin_cannot_be_revoked_without_a_successor(governor: Governor) -> None:
    size = governor.log.size
    with pytest.raises(PrincipalError, match=r"last active admin.*successor"):
        governor.revoke("principal", "admin", reason="leaving", by="admin")
    assert governor.log.size == size  # nothing recorded
    assert governor.is_admin("admin")
    assert not governor.state.is_revoked("principal", "admin")


def test_a_successor_becomes_admin_in_the_same_logged_change(governor: Governor) -> None:
    first = governor.log.size
    result = governor.revoke("principal", "admin", reason="handover", by="admin", successor="bob")
    assert result["successor"] == "bob"
    assert governor.is_admin("bob")
    assert not governor.is_admin("admin")
    assert governor.principal("bob").attrs["role"] == "admin"  # type: ignore[union-attr]
    revocation, suspended, promoted = events(governor, first)
    assert result["log_index"] == first
    assert revocation["type"] == "revocation"
    assert revocation["target"] == {"kind": "principal", "id": "admin"}
    assert (suspended["principal"], suspended["change"]) == ("admin", "suspended")
    assert (promoted["principal"], promoted["change"], promoted["successor_of"]) == (
        "bob",
        "promoted",
        "admin",
    )


def test_a_successor_must_be_another_active_principal(governor: Governor, client: TestClient) -> None:
    governor.set_principal_status("alice", "suspended", by="admin")
    size = governor.log.size
    with pytest.raises(NoSuchTargetError, match="no such principal 'nobody'"):
        governor.revoke("principal", "admin", reason="x", by="admin", successor="nobody")
    with pytest.raises(PrincipalError, match="successor 'alice' is suspended"):
        governor.revoke("principal", "admin", reason="x", by="admin", successor="alice")
    with pytest.raises(RequestShapeError, match="other than 'admin'"):
        governor.revoke("principal", "admin", reason="x", by="admin", successor="admin")
    with pytest.raises(RequestShapeError, match="only when revoking an admin, found 'bob'"):
        governor.revoke("principal", "bob", reason="x", by="admin", successor="alice")
    with pytest.raises(RequestShapeError, match="only when revoking a principal"):
        governor.revoke("warrant", "wr_x", reason="x", by="admin", successor="bob")
    assert governor.log.size == size
    assert governor.is_admin("admin")


def test_a_successor_is_named_over_http(governor: Governor, gov_data: Path, client: TestClient) -> None:
    """A successor is named over HTTP."""
    admin = PrincipalKey.load(gov_data / "keys" / "admin.key")
    refused = post(client, admin, "/v1/revocations", {"kind": "principal", "target": "admin"})
    assert refused.status_code == 403
    assert "successor" in refused.json()["message"]
    body = {"kind": "principal", "target": "admin", "reason": "handover", "successor": "bob"}
    done = post(client, admin, "/v1/revocations", body)
    assert done.status_code == 200, done.text
    assert done.json()["successor"] == "bob"
    assert governor.is_admin("bob")
    assert not governor.is_admin("admin")


def test_a_successor_is_named_on_the_command_line(gov_data: Path) -> None:
    with Governor(gov_data) as gov:
        bob = PrincipalKey.generate("bob")
        bob.save(gov_data / "bob.key")
        gov.add_principal("bob", bob.public_key_b64, attrs={"role": "ops"}, zone="", by="admin")
    data = ["--data", str(gov_data)]
    refused = cli("revoke", "--principal", "admin", *data, check=False)
    assert refused.returncode == 2
    assert "--successor" in refused.stderr
    done = cli("revoke", "--principal", "admin", "--successor", "bob", "--reason", "handover", *data)
    assert json.loads(done.stdout)["successor"] == "bob"
    again = cli("principal", "list", *data, check=False)  # the old admin key has no right left
    assert again.returncode == 2
    assert "'admin' is not an active admin" in again.stderr
    cli("principal", "list", *data, "--key", str(gov_data / "bob.key"))
    with Governor(gov_data) as gov:
        assert gov.is_admin("bob")
        assert not gov.is_admin("admin")


@pytest.mark.parametrize("kind", ["execution", "warrant", "principal"])
def test_revoking_an_unknown_target_is_refused_and_records_nothing(
    governor: Governor, gov_data: Path, client: TestClient, kind: str
) -> None:
    size = governor.log.size
    with pytest.raises(NoSuchTargetError, match=f"no such {kind} 'ghost'"):
        governor.revoke(kind, "ghost", reason="x", by="admin")
    admin = PrincipalKey.load(gov_data / "keys" / "admin.key")
    answer = post(client, admin, "/v1/revocations", {"kind": kind, "target": "ghost"})
    assert answer.status_code == 404
    assert answer.json()["message"].startswith(f"no such {kind} 'ghost'")
    assert governor.log.size == size
    assert not governor.state.is_revoked(kind, "ghost")


def test_revoking_an_unknown_target_on_the_command_line_exits_non_zero(gov_data: Path) -> None:
    proc = cli("revoke", "--execution", "ex_ghost", "--data", str(gov_data), check=False)
    assert proc.returncode == 2
    assert "no such execution 'ex_ghost'" in proc.stderr
    with Governor(gov_data) as gov:
        assert not gov.state.is_revoked("execution", "ex_ghost")
        assert all(json.loads(gov.log.leaf(i))["type"] != "revocation" for i in range(gov.log.size))
