"""Running executions are visible to whom they concern, and to no one else.

``GET /v1/executions`` lists an admin everyone's executions and anyone else only its
own; ``GET /v1/executions/{id}`` shows one to its principal or an admin, and to anyone
else answers exactly as for an id that does not exist (no existence oracle). Neither
carries the execution's arguments or its warrant token, and a list is bounded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from asgi_support import Answer, call, signed
from gov_exec import allow, start_body
from proctor.authorization.keys import PrincipalKey
from proctor.governor.app import GovernorApp, create_app
from proctor.governor.service import Governor


def keys(data: Path) -> dict[str, PrincipalKey]:
    return {name: PrincipalKey.load(data / path) for name, path in _KEYS.items()}


_KEYS = {"admin": "keys/admin.key", "alice": "alice.key", "bob": "bob.key"}


def start(gov: Governor, principal: str, *argv: str) -> str:
    token = allow(gov, *argv, principal=principal)
    return str(gov.executions.start(principal, start_body(token, *argv))["execution"])


def get(app: GovernorApp, key: PrincipalKey, target: str) -> Answer:
    return call(app, "GET", target, headers=signed(key, "GET", target))


def ids(answer: Answer) -> list[str]:
    assert answer.status == 200, answer.body
    return [e["id"] for e in answer.json()["executions"]]


def without_id(body: dict[str, Any], execution_id: str) -> str:
    return str(body).replace(execution_id, "ID")


def test_a_principal_cannot_list_or_show_another_principals_executions(
    governor: Governor, gov_data: Path
) -> None:
    """A principal cannot list or show another principal's executions."""
    k = keys(gov_data)
    app = create_app(governor)
    alices = start(governor, "alice", "one")
    bobs = start(governor, "bob", "two")

    # Each sees its own, and only its own; the admin sees both, newest first.
    assert ids(get(app, k["alice"], "/v1/executions")) == [alices]
    assert ids(get(app, k["bob"], "/v1/executions")) == [bobs]
    assert set(ids(get(app, k["admin"], "/v1/executions"))) == {alices, bobs}
    assert ids(get(app, k["admin"], "/v1/executions?principal=alice")) == [alices]
    # Asking for someone else's list is refused, before anything is looked up.
    refused = get(app, k["bob"], "/v1/executions?principal=alice")
    assert refused.status == 403, refused.body
    assert alices not in refused.body.decode()

    shown = get(app, k["alice"], f"/v1/executions/{alices}")
    assert shown.status == 200, shown.body
    assert shown.json()["id"] == alices
    assert get(app, k["admin"], f"/v1/executions/{alices}").status == 200

    # Bob asking for Alice's execution gets what he gets for an id that does not exist.
    foreign = get(app, k["bob"], f"/v1/executions/{alices}")
    unknown_id = "ex_" + "a" * 24
    unknown = get(app, k["bob"], f"/v1/executions/{unknown_id}")
    assert foreign.status == unknown.status == 404
    assert foreign.json()["error"] == "not-found"
    assert without_id(foreign.json(), alices) == without_id(unknown.json(), unknown_id)
    assert "alice" not in foreign.body.decode()


def test_a_suspended_principal_cannot_list_or_show_its_executions(governor: Governor, gov_data: Path) -> None:
    k = keys(gov_data)
    app = create_app(governor)
    alices = start(governor, "alice", "one")
    governor.set_principal_status("alice", "suspended", by="admin")
    assert get(app, k["alice"], "/v1/executions").status == 403
    assert get(app, k["alice"], f"/v1/executions/{alices}").status == 403


def test_execution_summaries_carry_no_arguments_and_no_token(governor: Governor, gov_data: Path) -> None:
    k = keys(gov_data)
    app = create_app(governor)
    secret = "--password=hunter2-visibility"
    alices = start(governor, "alice", secret)
    token = str(governor.state.execution(alices)["presented"])  # type: ignore[index]
    for target in ("/v1/executions", f"/v1/executions/{alices}", "/v1/executions?status=all"):
        for who in ("alice", "admin"):
            answer = get(app, k[who], target)
            assert answer.status == 200, answer.body
            assert secret not in answer.body.decode()
            assert token[:40] not in answer.body.decode()


def test_an_execution_shows_its_lease_times_and_log_indices(governor: Governor, gov_data: Path) -> None:
    k = keys(gov_data)
    app = create_app(governor)
    alices = start(governor, "alice", "one")
    body = get(app, k["alice"], f"/v1/executions/{alices}").json()
    record = governor.state.execution(alices)
    assert record is not None
    assert body["principal"] == "alice"
    assert (body["action"], body["resource"], body["zone"]) == ("exec", "/bin/echo", "")
    assert (body["status"], body["reason"]) == ("running", "")
    assert body["warrant"] == record["warrant"]
    assert body["bundle"] == record["bundle"]
    assert body["log_indices"] == record["indices"]
    assert body["started_unix"] == record["started"]
    assert body["started"].endswith("Z")
    assert body["ended"] is None
    assert body["lease_ttl_ms"] == record["ttl_ms"]
    assert body["lease_remaining_ms"] + body["lease_age_ms"] == body["lease_ttl_ms"]


@pytest.mark.parametrize(
    ("query", "status"),
    [("limit=0", 422), ("limit=1001", 422), ("limit=x", 422), ("status=done", 422), ("limit=1000", 200)],
    ids=["zero", "over-max", "not-a-number", "unknown-status", "max"],
)
def test_execution_lists_are_bounded(governor: Governor, gov_data: Path, query: str, status: int) -> None:
    app = create_app(governor)
    answer = get(app, keys(gov_data)["admin"], f"/v1/executions?{query}")
    assert answer.status == status, answer.body
    if status != 200:
        assert answer.json()["error"] == "bad-request"


def test_an_execution_list_is_newest_first_and_says_when_it_is_cut(
    governor: Governor, gov_data: Path
) -> None:
    k = keys(gov_data)
    app = create_app(governor)
    started = [start(governor, "alice", str(n)) for n in range(3)]
    governor.executions.finish("alice", started[0], {"outcome": "completed", "exit_status": 0})
    running = get(app, k["alice"], "/v1/executions").json()
    assert {e["id"] for e in running["executions"]} == set(started[1:])
    every = get(app, k["alice"], "/v1/executions?status=all&limit=2").json()
    assert every["truncated"] is True
    assert len(every["executions"]) == 2
    full = get(app, k["alice"], "/v1/executions?status=all").json()
    assert full["truncated"] is False
    assert {e["id"] for e in full["executions"]} == set(started)
    ended = next(e for e in full["executions"] if e["id"] == started[0])
    assert (ended["status"], ended["lease_remaining_ms"]) == ("completed", None)
