"""The governor over HTTP: `proctor serve` in a child process, driven by the CLI and httpx."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gov_server import GovernorServer, cli
from gov_support import POLICIES
from proctor.authorization.keys import PrincipalKey
from proctor.authorization.requests import sign_request


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    # Admin work (alice) happens directly on the data dir before the server runs.
    gov = GovernorServer(tmp_path_factory.mktemp("gov"), origin="http.example/gov")
    try:
        yield gov.url, gov.data
    finally:
        gov.stop()


def signed(method: str, url: str, path: str, body: Any, key: PrincipalKey, **sign: Any) -> httpx.Response:
    data = b"" if body is None else json.dumps(body).encode()
    headers = sign_request(method, path, data, key, now=sign.pop("now", int(time.time())), **sign)
    return httpx.request(method, url + path, content=data, headers=headers, timeout=10)


def test_readiness_needs_a_policy_then_allow_and_deny_via_cli(server: tuple[str, Path]) -> None:
    url, data = server
    assert httpx.get(f"{url}/readyz").status_code == 503
    cli("policy", "push", str(POLICIES / "basic"), "--server", url, "--data", str(data))
    ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"store": "ok", "log": "ok", "policy": "ok"}
    allow = cli("authorize", "--server", url, "--key", str(data / "alice.key"), "--action", "exec",
                "--resource", "/usr/bin/pg_dump", "--", "pg_dump", "db1")  # fmt: skip
    doc = json.loads(allow.stdout)
    assert doc["allow"] is True
    assert doc["warrant"]["token"]
    assert doc["decision"]["policies"] == ["dev-pg-dump"]
    deny = cli("authorize", "--server", url, "--key", str(data / "alice.key"), "--action", "exec",
               "--resource", "/usr/bin/pg_dump", "--", "pg_dump", "db2", check=False)  # fmt: skip
    assert deny.returncode == 77
    assert json.loads(deny.stdout)["allow"] is False
    assert "denied" in deny.stderr


def test_unauthenticated_requests_get_401_and_nothing_happens(server: tuple[str, Path]) -> None:
    url, data = server
    alice = PrincipalKey.load(data / "alice.key")
    body = {"action": "exec", "resource": "/bin/echo", "argv": ["echo", "hi"]}
    size = int(httpx.get(f"{url}/v1/log/checkpoint").text.split("\n")[1])
    unsigned = httpx.post(f"{url}/v1/authorize", json=body)
    assert unsigned.status_code == 401
    assert unsigned.json()["detail"]["reason"] == "unsigned"
    stale = signed("POST", url, "/v1/authorize", body, alice, now=int(time.time()) - 3600)
    assert stale.status_code == 401
    assert stale.json()["detail"]["reason"] == "stale"
    mallory = PrincipalKey.generate("alice")  # right name, wrong key
    forged = signed("POST", url, "/v1/authorize", body, mallory)
    assert forged.status_code == 401
    assert forged.json()["detail"]["reason"] == "bad-signature"
    # Replay: the same signed request twice.
    raw = json.dumps(body).encode()
    headers = sign_request("POST", "/v1/authorize", raw, alice, now=int(time.time()))
    first = httpx.post(f"{url}/v1/authorize", content=raw, headers=headers)
    assert first.status_code == 200
    again = httpx.post(f"{url}/v1/authorize", content=raw, headers=headers)
    assert again.status_code == 401
    assert again.json()["detail"]["reason"] == "replayed"
    # Only the one good request reached the log (a decision, and a warrant on allow).
    after = int(httpx.get(f"{url}/v1/log/checkpoint").text.split("\n")[1])
    assert after - size in (1, 2)
    metrics = httpx.get(f"{url}/metrics").text
    assert 'proctor_auth_failures_total{reason="unsigned"}' in metrics


def test_admin_endpoints_refuse_non_admins(server: tuple[str, Path]) -> None:
    url, data = server
    alice = PrincipalKey.load(data / "alice.key")
    assert signed("GET", url, "/v1/principals", None, alice).status_code == 403
    assert (
        signed("POST", url, "/v1/revocations", {"kind": "principal", "target": "admin"}, alice).status_code
        == 403
    )
    assert signed("PUT", url, "/v1/policy", {}, alice).status_code == 403


def test_log_endpoints_and_openapi(server: tuple[str, Path]) -> None:
    url, _ = server
    key = httpx.get(f"{url}/v1/log/key").text.strip()
    assert key.startswith("http.example/gov+")
    checkpoint = httpx.get(f"{url}/v1/log/checkpoint")
    assert checkpoint.headers["content-type"].startswith("text/plain")
    size = int(checkpoint.text.split("\n")[1])
    entry = httpx.get(f"{url}/v1/log/entries/0").json()
    assert set(entry) >= {"index", "leaf", "leaf_hash", "event"}
    proof = httpx.get(f"{url}/v1/log/proof/inclusion", params={"index": 0, "size": size}).json()
    assert set(proof) == {"leaf_index", "tree_size", "hashes"}
    consistency = httpx.get(f"{url}/v1/log/proof/consistency", params={"old": 1, "new": size}).json()
    assert set(consistency) == {"old_size", "new_size", "hashes"}
    bad = httpx.get(f"{url}/v1/log/proof/inclusion", params={"index": size + 5})
    assert bad.status_code == 400
    spec = httpx.get(f"{url}/openapi.json").json()
    for path in ("/v1/authorize", "/v1/log/checkpoint", "/v1/policy", "/v1/revocations", "/readyz"):
        assert path in spec["paths"]
    metrics = httpx.get(f"{url}/metrics").text
    for name in ("proctor_decisions_total", "proctor_decision_seconds_bucket", "proctor_log_size"):
        assert name in metrics


def test_admin_cli_against_the_server(server: tuple[str, Path]) -> None:
    url, data = server
    ensure_policy(url, data)
    out = cli("principal", "add", "carol", "--attr", "role=ops", "--zone", "prod",
              "--out", str(data / "carol.key"), "--server", url, "--data", str(data))  # fmt: skip
    assert json.loads(out.stdout)["principal"]["zone"] == "prod"
    assert oct((data / "carol.key").stat().st_mode & 0o777) == "0o600"
    names = [
        p["name"] for p in json.loads(cli("principal", "list", "--server", url, "--data", str(data)).stdout)
    ]
    assert {"admin", "alice", "carol"} <= set(names)
    suspended = json.loads(cli("principal", "suspend", "carol", "--server", url, "--data", str(data)).stdout)
    assert suspended["status"] == "suspended"
    shown = json.loads(cli("policy", "show", "--server", url, "--data", str(data)).stdout)
    assert shown["signer"] == "admin"
    # Direct mode refuses while the server holds the data directory.
    busy = cli("principal", "resume", "carol", "--data", str(data), check=False)
    assert busy.returncode == 3
    assert "use --server" in busy.stderr
    revoked = json.loads(cli("revoke", "--principal", "carol", "--reason", "test",
                             "--server", url, "--data", str(data)).stdout)  # fmt: skip
    assert revoked["kind"] == "principal"


def test_policy_push_with_invalid_policy_shows_diagnostics(server: tuple[str, Path], tmp_path: Path) -> None:
    url, data = server
    ensure_policy(url, data)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "p.cedar").write_text('permit (principal, action, resource) when { principal.nope == "x" };')
    proc = cli("policy", "push", str(bad), "--server", url, "--data", str(data), check=False)
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["diagnostics"]


def ensure_policy(url: str, data: Path) -> None:
    if httpx.get(f"{url}/readyz").status_code != 200:
        cli("policy", "push", str(POLICIES / "basic"), "--server", url, "--data", str(data))


def test_warrant_inspect_and_attenuate_cli(server: tuple[str, Path], tmp_path: Path) -> None:
    url, data = server
    ensure_policy(url, data)
    allow = cli("authorize", "--server", url, "--key", str(data / "alice.key"), "--action", "exec",
                "--resource", "/usr/bin/pg_dump", "--", "pg_dump", "db1")  # fmt: skip
    saved = tmp_path / "allow.json"
    saved.write_text(allow.stdout)
    inspected = json.loads(cli("warrant", "inspect", str(saved), "--server", url).stdout)
    assert inspected["claims"]["principal"] == "alice"
    assert inspected["block_count"] == 1
    narrowed = cli("warrant", "attenuate", str(saved), "--expires-in", "30", "--server", url).stdout.strip()
    again = json.loads(cli("warrant", "inspect", narrowed, "--server", url).stdout)
    assert again["block_count"] == 2
    assert again["claims"] == inspected["claims"]  # attenuation adds checks, never changes claims
    tampered = narrowed[:50] + ("A" if narrowed[50] != "A" else "B") + narrowed[51:]
    assert cli("warrant", "inspect", tampered, "--server", url, check=False).returncode == 1


def test_a_revocations_nonce_is_durable_with_it_and_a_refused_ones_is_spent(tmp_path: Path) -> None:
    # The revocation's nonce commits in the revocation's own transaction: a governor
    # killed right after the answer still refuses the same signed request after restart.
    gov = GovernorServer(tmp_path / "gov", policy=POLICIES / "basic")
    try:
        admin = PrincipalKey.load(gov.data / "keys" / "admin.key")
        body = json.dumps({"kind": "policy", "target": "sha256:" + "ab" * 32, "reason": "test"}).encode()
        headers = sign_request("POST", "/v1/revocations", body, admin, now=int(time.time()))

        def send() -> httpx.Response:
            return httpx.post(gov.url + "/v1/revocations", content=body, headers=headers, timeout=10)

        first = send()
        assert first.status_code == 200, first.text
        gov.kill()  # no goodbye: nothing queued after the answer gets written
        gov.start()
        again = send()
        assert again.status_code == 401, again.text
        assert "already used" in again.json()["message"]
        refused_body = json.dumps({"kind": "execution", "target": "ex_nobody", "reason": "test"}).encode()
        refused_headers = sign_request("POST", "/v1/revocations", refused_body, admin, now=int(time.time()))
        refused = httpx.post(
            gov.url + "/v1/revocations", content=refused_body, headers=refused_headers, timeout=10
        )
        assert refused.status_code == 404, refused.text
        replayed = httpx.post(
            gov.url + "/v1/revocations", content=refused_body, headers=refused_headers, timeout=10
        )
        assert replayed.status_code == 401, replayed.text
    finally:
        gov.stop()
