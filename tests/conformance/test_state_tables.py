"""State tables are checked against the log, never trusted blindly.

Each test edits the governor's SQLite tables directly, as an attacker with access to
the database would, and restarts the governor: it must not serve (not ready, every
authorization denied, no warrant counts as valid), it must say which row disagrees,
and ``proctor log verify`` must exit 1 naming it.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gov_server import GovernorServer, cli
from gov_support import EXE, POLICIES, signed_bundle
from proctor.authorization.keys import PrincipalKey
from proctor.errors import PrincipalError
from proctor.governor.model import AuthorizeRequest
from proctor.governor.service import Governor
from proctor.policy import PolicyBundle

ECHO = AuthorizeRequest(action="exec", resource="/bin/echo", argv=("echo", "hi"), executable_digest=EXE)
LS = AuthorizeRequest(action="exec", resource="/usr/bin/ls", argv=("ls",), executable_digest=EXE)
MEASURED = {
    "executable": "/bin/echo",
    "executable_digest": EXE,
    "files": [{"path": "/bin/echo", "digest": EXE, "role": "executable"}],
    "script_index": None,
}


def setup(data: Path) -> None:
    """alice (dev) and bob (ops), the basic policy: /bin/echo for anyone."""
    with Governor(data) as gov:
        for name, role in (("alice", "dev"), ("bob", "ops")):
            key = PrincipalKey.generate(name)
            key.save(data / f"{name}.key")
            gov.add_principal(name, key.public_key_b64, attrs={"role": role}, zone="", by="admin")
        gov.push_policy(signed_bundle(data, POLICIES / "basic"), by="admin")
        assert gov.ready()[0]


def tamper(data: Path, *statements: str) -> None:
    conn = sqlite3.connect(data / "proctor.db")
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def make_bob_admin(data: Path) -> None:
    tamper(data, """UPDATE principals SET attrs = '{"role":"admin"}' WHERE name = 'bob'""")


def replace_active_bundle_text(data: Path) -> str:
    """Put a permissive bundle (anything for developers), not signed by the admin, in
    place of the active one's text; the active bundle's digest."""
    forged = PolicyBundle.from_directory(POLICIES / "run", version=1)
    doc = orjson.dumps(forged.signed(Ed25519PrivateKey.generate(), "admin").to_json()).decode()
    conn = sqlite3.connect(data / "proctor.db")
    try:
        (active,) = conn.execute("SELECT value FROM meta WHERE key = 'active_bundle'").fetchone()
        conn.execute("DROP TRIGGER IF EXISTS bundles_no_update")  # the attacker owns the file
        conn.execute("UPDATE bundles SET doc = ? WHERE digest = ?", (doc, active))
        conn.commit()
    finally:
        conn.close()
    return str(active)


def revoke_a_warrant_and_delete_the_row(data: Path) -> str:
    """alice's warrant for /bin/echo, revoked; then its revocation row deleted."""
    with Governor(data) as gov:
        result = gov.authorize("alice", ECHO)
        assert result.warrant_id is not None, result.decision.reason
        gov.revoke("warrant", result.warrant_id, reason="leaked", by="admin")
    tamper(data, "DELETE FROM revocations")
    return result.warrant_id


def assert_not_serving(gov: Governor, *names: str) -> None:
    ready, checks = gov.ready()
    assert not ready
    for name in names:
        assert name in checks["store"], checks
    denied = gov.authorize("alice", ECHO)
    assert not denied.allowed
    assert denied.warrant is None
    assert "disagrees with the log" in denied.decision.reason


def test_a_principal_edited_to_admin_in_the_table_is_not_served(gov_data: Path) -> None:
    setup(gov_data)
    make_bob_admin(gov_data)
    with Governor(gov_data) as gov:
        assert_not_serving(gov, "principals[bob].attrs", '"role":"ops"')
        assert not gov.is_admin("bob")
        try:
            gov.push_policy(signed_bundle(gov_data, POLICIES / "freeze", version=2), by="admin")
            raise AssertionError("an admin change was accepted on untrusted state")
        except PrincipalError:
            pass
        assert gov.engine is None


def test_a_replaced_active_bundle_text_is_not_served(gov_data: Path) -> None:
    setup(gov_data)
    digest = replace_active_bundle_text(gov_data)
    with Governor(gov_data) as gov:
        assert_not_serving(gov, f"bundles[{digest}].doc")
        assert not gov.authorize("alice", LS).allowed  # what the forged text would allow


def test_a_deleted_revocation_row_is_not_served(gov_data: Path) -> None:
    setup(gov_data)
    warrant = revoke_a_warrant_and_delete_the_row(gov_data)
    with Governor(gov_data) as gov:
        assert_not_serving(gov, f"revocations[warrant/{warrant}].row")
        assert gov.warrant_revoked(warrant)


def test_a_lease_is_not_renewed_on_untrusted_state(gov_data: Path) -> None:
    setup(gov_data)
    with Governor(gov_data) as gov:
        result = gov.authorize("alice", ECHO)
        body = {"warrant": result.warrant, "action": "exec", "resource": "/bin/echo", "argv": ["echo", "hi"],
                "measurement": MEASURED}  # fmt: skip
        execution = gov.executions.start("alice", body)["execution"]
        assert gov.executions.renew("alice", execution, {"integrity": "ok"})["ok"] is True
    make_bob_admin(gov_data)
    with Governor(gov_data) as gov:
        renewed = gov.executions.renew("alice", execution, {"integrity": "ok"})
        assert renewed["ok"] is False
        assert renewed["terminate"]


def test_log_verify_names_each_row_that_disagrees_with_the_log(gov_data: Path) -> None:
    setup(gov_data)
    clean = cli("log", "verify", "--data", str(gov_data), check=False)
    assert clean.returncode == 0, clean.stderr
    assert "the state tables agree with the log" in clean.stderr
    warrant = revoke_a_warrant_and_delete_the_row(gov_data)
    make_bob_admin(gov_data)
    digest = replace_active_bundle_text(gov_data)
    verify = cli("log", "verify", "--data", str(gov_data), check=False)
    assert verify.returncode == 1, verify.stderr
    for row in ("principals[bob].attrs", f"bundles[{digest}].doc", f"revocations[warrant/{warrant}].row"):
        assert f"state disagrees with the log: {row}" in verify.stderr, verify.stderr
    report = json.loads(verify.stdout)
    assert report["ok"] is False
    named = {(d["table"], d["key"], d["field"]) for d in report["state"]["discrepancies"]}
    assert named == {
        ("principals", "bob", "attrs"),
        ("bundles", digest, "doc"),
        ("revocations", f"warrant/{warrant}", "row"),
    }


def test_readyz_is_503_naming_the_row_and_authorize_is_denied(tmp_path: Path) -> None:
    """/readyz is 503 naming the row, and authorize is denied."""
    server = GovernorServer(tmp_path, policy=POLICIES / "basic")
    try:
        assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
        assert server.proc is not None
        server.proc.terminate()
        server.proc.wait(timeout=30)
        tamper(server.data, """UPDATE principals SET attrs = '{"role":"admin"}' WHERE name = 'alice'""")
        server.start()
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert "principals[alice].attrs" in ready.json()["checks"]["store"]
        denied = cli(
            "authorize", "--server", server.url, "--key", str(server.key),
            "--action", "exec", "--resource", "/bin/echo", "--", "echo", "hi",
            check=False,
        )  # fmt: skip
        assert denied.returncode == 77, denied.stderr
    finally:
        server.stop()
