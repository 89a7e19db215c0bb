"""Admin changes that must keep working under the admin-plane rules: revoking what
exists, a revoked principal suspended in the revocation's own commit, and `proctor
policy push` choosing a version that goes forward."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from gov_server import cli
from gov_support import POLICIES
from proctor.governor.model import AuthorizeRequest
from proctor.governor.service import Governor


def test_revoking_a_known_warrant_still_works(governor: Governor) -> None:
    request = AuthorizeRequest(
        action="exec",
        resource="/usr/bin/pg_dump",
        argv=("pg_dump", "db1"),
        executable_digest="sha256:" + "ab" * 32,
    )
    result = governor.authorize("alice", request)
    assert result.warrant_id is not None, result.decision.reason
    governor.revoke("warrant", result.warrant_id, reason="x", by="admin")
    assert governor.state.is_revoked("warrant", result.warrant_id)


def test_a_revoked_principal_is_suspended_in_the_revocations_commit(governor: Governor) -> None:
    first = governor.log.size
    result = governor.revoke("principal", "alice", reason="compromised", by="admin")
    assert result == {"kind": "principal", "target": "alice", "log_index": first}
    assert governor.log.size == first + 2
    suspended = json.loads(governor.log.leaf(first + 1))
    assert (suspended["principal"], suspended["change"]) == ("alice", "suspended")
    assert governor.principal("alice").status == "suspended"  # type: ignore[union-attr]
    # Revoking it again records the revocation; there is nothing left to suspend.
    again = governor.revoke("principal", "alice", reason="again", by="admin")
    assert governor.log.size == again["log_index"] + 1


def test_policy_push_without_a_version_goes_forward(gov_data: Path, tmp_path: Path) -> None:
    data = ["--data", str(gov_data)]
    other = tmp_path / "other"
    shutil.copytree(POLICIES / "basic", other)
    (other / "extra.cedar").write_text(
        '@id("x")\nforbid (principal, action, resource == Proctor::Executable::"/x");\n'
    )
    first = json.loads(cli("policy", "push", str(POLICIES / "basic"), *data).stdout)
    second = json.loads(cli("policy", "push", str(other), *data).stdout)  # within the same second, likely
    assert second["version"] > first["version"]
    same = json.loads(cli("policy", "push", str(other), "--version", str(second["version"]), *data).stdout)
    assert same["unchanged"] is True
    assert same["log_index"] == second["log_index"]
    old = cli("policy", "push", str(POLICIES / "basic"), "--version", "1", *data, check=False)
    assert old.returncode == 2
    assert "rollback" in old.stderr
