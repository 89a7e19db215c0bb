"""Hostile warrants everywhere a warrant is presented: a matrix of the places (a start,
a delegated authorization, the one-request authorize-and-start, a lease renewal, a
receipt checked offline, an offline attenuation) by the ways a warrant is made hostile
(a forged signature, replayed, expired, another principal's, widened, truncated, signed
under another key id, signed with another algorithm). Each is refused with the right
answer, and nothing is executed or recorded as allowed: the log and the governance state
are unchanged by a refused start or renewal, and a refused delegation adds only its
recorded deny.

The hostile tokens are built as an attacker would: the genuine authority block's claims
re-signed with an Ed25519 key of one's own (forged), with a root key id set (another key
id), with a P-256 key (another algorithm); a block appended to a genuine token stating
wider facts (widened: no private key is needed to append); the token cut in half.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from biscuit_auth import Biscuit, BiscuitBuilder, BlockBuilder, PrivateKey

from asgi_support import Answer, call
from figures import record
from gov_exec import Clock, allow, echo_request, measured, start_body
from hostile_support import World, build_world
from proctor.authorization.requests import sign_request
from proctor.authorization.tokens import root_public_key_of
from proctor.authorization.warrants import attenuate_warrant, verify_warrant
from proctor.errors import WarrantError
from proctor.receipts.check import check_receipt

PLACES = ("start", "delegated-authorize", "authorize-start", "renew", "receipt", "attenuate")
KINDS = (
    "forged-signature",
    "replayed",
    "expired",
    "another-principal",
    "widened",
    "truncated",
    "wrong-key-id",
    "alg-confusion",
)
LATER = 3600
"""How far the clock moves for an expired warrant (its lifetime is minutes)."""
WIDENING = 'resource("/usr/bin/rm"); principal("bob"); expires(2100-01-01T00:00:00Z); check if true;'


@dataclass
class Matrix:
    """What each (place, kind) got, and what was wrong."""

    outcomes: dict[tuple[str, str], str]
    failures: list[str]

    def expect(self, place: str, kind: str, outcome: str, ok: bool, why: object = "") -> None:
        self.outcomes[(place, kind)] = outcome
        if not ok:
            self.failures.append(f"{place} x {kind}: {outcome} {why}")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def world(tmp_path: Path, clock: Clock) -> Iterator[World]:
    made = build_world(tmp_path, clock=clock)
    yield made
    made.close()


def _resigned(token: str, root: bytes, key: PrivateKey, *, key_id: int | None = None) -> str:
    """The genuine authority block's claims and checks, signed with ``key``."""
    source = Biscuit.from_base64(token, root_public_key_of(root)).block_source(0)
    builder = BiscuitBuilder(source)
    if key_id is not None:
        builder.set_root_key_id(key_id)
    return str(builder.build(key).to_base64())


def hostile(token: str, root: bytes, kind: str) -> str:
    """``token`` made hostile in the ways that change the token itself."""
    mine = PrivateKey("ed25519-private/" + bytes(range(32)).hex())
    if kind == "forged-signature":
        return _resigned(token, root, mine)
    if kind == "wrong-key-id":
        return _resigned(token, root, mine, key_id=1)
    if kind == "alg-confusion":
        return _resigned(token, root, PrivateKey("secp256r1-private/" + bytes(range(1, 33)).hex()))
    if kind == "widened":
        genuine = Biscuit.from_base64(token, root_public_key_of(root))
        return str(genuine.append(BlockBuilder(WIDENING)).to_base64())
    if kind == "truncated":
        return token[: len(token) // 2]
    return token


def send(world: World, who: str, method: str, target: str, body: Any = None, *, now: float) -> Answer:
    raw = b"" if body is None else orjson.dumps(body)
    headers = list(sign_request(method, target, raw, world.keys[who], now=int(now)).items())
    return call(world.app, method, target, headers=headers, body=raw)


def twice(world: World, who: str, target: str, raw: bytes, now: float) -> tuple[Answer, Answer]:
    """The same signed POST twice (the second a replay of the first, nonce and all)."""
    headers = list(sign_request("POST", target, raw, world.keys[who], now=int(now)).items())
    first = call(world.app, "POST", target, headers=headers, body=raw)
    return first, call(world.app, "POST", target, headers=headers, body=raw)


def reason_of(answer: Answer) -> str:
    body = answer.json()
    return str(body.get("reason") or body.get("error") or "")


def new_events(world: World, since: int) -> list[dict[str, Any]]:
    return [orjson.loads(world.gov.log.leaf(i)) for i in range(since, world.gov.log.size)]


def only_denies(events: list[dict[str, Any]]) -> bool:
    """Nothing recorded as allowed: every new event is a decision, and a deny."""
    return bool(events) and all(e.get("type") == "decision" and e.get("decision") == "deny" for e in events)


def decision_reason(answer: Answer) -> str:
    body = answer.json()
    authorization = body.get("authorization", body)
    return str(authorization["decision"]["reason"])


# -- the places -------------------------------------------------------------------------


def at_start(world: World, clock: Clock, m: Matrix, kind: str) -> None:
    root = world.gov.warrant_public_key
    genuine = allow(world.gov, f"start-{kind}")
    token = hostile(genuine, root, kind)
    who = "bob" if kind == "another-principal" else "alice"
    body = start_body(token, f"start-{kind}")
    if kind == "replayed":
        raw = orjson.dumps(body)
        first, again = twice(world, who, "/v1/executions", raw, clock.now)
        before = world.snapshot()
        fresh = send(world, who, "POST", "/v1/executions", body, now=clock.now)
        ok = first.status == 201 and again.status == 401 and reason_of(again) == "replayed"
        ok = ok and fresh.status == 409 and world.snapshot() == before
        outcome = f"{again.status} {reason_of(again)}; fresh request {fresh.status} {reason_of(fresh)}"
        m.expect("start", kind, outcome, ok, fresh.body[:200])
        return
    if kind == "expired":
        clock.now += LATER
    before = world.snapshot()
    answer = send(world, who, "POST", "/v1/executions", body, now=clock.now)
    unchanged = world.snapshot() == before
    expected = {
        "forged-signature": (403, "forged"),
        "expired": (403, "expired"),
        "another-principal": (403, "forbidden"),
        "widened": (403, "shape"),
        "truncated": (403, "truncated"),
        "wrong-key-id": (403, "forged"),
        "alg-confusion": (403, "forged"),
    }[kind]
    got = (answer.status, reason_of(answer))
    m.expect(
        "start", kind, f"{got[0]} {got[1]}", got == expected and unchanged, (answer.body[:200], unchanged)
    )


def _delegated(world: World, clock: Clock, m: Matrix, kind: str, place: str) -> None:
    """A delegation under a hostile parent (``POST /v1/authorize`` or ``/v1/authorize/start``)."""
    root = world.gov.warrant_public_key
    parent = allow(world.gov, "parent")
    target = "/v1/authorize" if place == "delegated-authorize" else "/v1/authorize/start"

    def body_for(parent_token: str, *argv: str) -> dict[str, Any]:
        asked = {**echo_request(*(argv or ("parent",))), "parent_warrant": parent_token}
        return (
            asked
            if place == "delegated-authorize"
            else {"authorize": asked, "start": {"measurement": measured()}}
        )

    if kind == "replayed":
        raw = orjson.dumps(body_for(parent))
        first, again = twice(world, "bob", target, raw, clock.now)
        ok = first.status == 200 and again.status == 401 and reason_of(again) == "replayed"
        m.expect(
            place, kind, f"{again.status} {reason_of(again)} (a parent may be delegated again: by design)", ok
        )
        return
    if kind == "another-principal":
        # Delegation is this: the parent's holder hands it to a sub-agent, another principal,
        # who gets its own warrant, never the parent's principal's (docs/sdk.md).
        since = world.gov.log.size
        answer = send(world, "bob", "POST", target, body_for(parent), now=clock.now)
        issued = [e for e in new_events(world, since) if e.get("type") == "warrant.issued"]
        parent_claims = verify_warrant(parent, root_public_key=root, now=int(clock.now), request=None)
        ok = answer.status == 200 and len(issued) == 1
        ok = (
            ok and issued[0]["principal"] == "bob" and issued[0]["parent_warrant"] == parent_claims.warrant_id
        )
        ok = ok and issued[0]["expires"] <= parent_claims.expires
        m.expect(place, kind, "by design: bob's own warrant, under the parent's expiry", ok, issued)
        return
    if kind == "expired":
        clock.now += LATER
    cases = [(hostile(parent, root, kind), "parent")]
    if kind == "widened":
        cases.append((parent, "more"))  # asking for more than the (genuine) parent covers
    outcomes = []
    for parent_token, arg in cases:
        since = world.gov.log.size
        before = world.snapshot()
        answer = send(world, "bob", "POST", target, body_for(parent_token, arg), now=clock.now)
        events = new_events(world, since)
        why = decision_reason(answer) if answer.status == 200 else reason_of(answer)
        wanted = {"widened": "shape" if arg == "parent" else "scope"}.get(
            kind,
            {"wrong-key-id": "forged", "alg-confusion": "forged", "forged-signature": "forged"}.get(
                kind, kind
            ),
        )
        ok = answer.status == 200 and f"parent warrant rejected ({wanted})" in why and only_denies(events)
        ok = ok and {k for k in before if before[k] != world.snapshot().get(k)} <= DENY_WRITES
        outcomes.append((f"deny ({wanted})", ok, why))
    m.expect(place, kind, "; ".join(o for o, _, _ in outcomes), all(ok for _, ok, _ in outcomes), outcomes)


DENY_WRITES = {"entries", "tiles", "checkpoints", "meta", "log-size", "openings"}
"""What a recorded deny writes: the log (its entries, tiles, checkpoint, size) and the
opening of its argument commitment; never a warrant, an execution or a principal."""


def at_delegated_authorize(world: World, clock: Clock, m: Matrix, kind: str) -> None:
    _delegated(world, clock, m, kind, "delegated-authorize")


def at_authorize_start(world: World, clock: Clock, m: Matrix, kind: str) -> None:
    _delegated(world, clock, m, kind, "authorize-start")


def at_renew(world: World, clock: Clock, m: Matrix, kind: str) -> None:
    if kind not in ("replayed", "expired", "another-principal"):
        m.expect(
            "renew", kind, "n/a: a renewal presents no token (the one accepted at start is re-verified)", True
        )
        return
    token = allow(world.gov, f"renew-{kind}")
    execution = world.gov.executions.start("alice", start_body(token, f"renew-{kind}"))["execution"]
    target = f"/v1/executions/{execution}/renew"
    if kind == "replayed":
        raw = orjson.dumps({"integrity": "ok"})
        first, again = twice(world, "alice", target, raw, clock.now)
        ok = first.status == 200 and again.status == 401 and reason_of(again) == "replayed"
        m.expect("renew", kind, f"{again.status} {reason_of(again)}", ok, again.body[:200])
    elif kind == "another-principal":
        before = world.snapshot()
        answer = send(world, "bob", "POST", target, {"integrity": "ok"}, now=clock.now)
        ok = answer.status == 403 and world.snapshot() == before
        m.expect("renew", kind, f"{answer.status} {reason_of(answer)}", ok, answer.body[:200])
    else:
        clock.now += LATER
        since = world.gov.log.size
        answer = send(world, "alice", "POST", target, {"integrity": "ok"}, now=clock.now)
        events = new_events(world, since)
        record = world.gov.state.execution(execution)
        ok = answer.status == 200 and answer.json().get("terminate") == "expired"
        ok = ok and record is not None and record["status"] in ("terminating", "terminated")
        ok = ok and not [
            e for e in events if e.get("type") in ("execution.started", "warrant.issued", "decision")
        ]
        m.expect(
            "renew",
            kind,
            f"{answer.status} terminate={answer.json().get('terminate')}",
            ok,
            answer.body[:200],
        )
        return
    # Ended, so that the principal's running executions stay under its quota.
    world.gov.executions.finish("alice", execution, {"outcome": "completed", "exit_status": 0})


def at_receipt(world: World, clock: Clock, m: Matrix, kind: str) -> None:
    if kind in ("replayed", "expired"):
        why = (
            "verifying a receipt again is its purpose"
            if kind == "replayed"
            else "a receipt proves a past run"
        )
        m.expect("receipt", kind, f"n/a: {why}", True)
        return
    receipt = world.gov.executions.receipt(world.ended)
    log_key = world.gov.log.verifier_key()
    assert check_receipt(receipt, log_key=log_key).ok
    if kind == "another-principal":
        swapped = allow(world.gov, "bob's", principal="bob")
    else:
        swapped = hostile(receipt["warrant_chain"][0], world.gov.warrant_public_key, kind)
    doc = {**receipt, "warrant_chain": [swapped, *receipt["warrant_chain"][1:]]}
    report = check_receipt(doc, log_key=log_key)
    failed = report.failed.name if report.failed is not None else ""
    m.expect("receipt", kind, f"fails at {failed}", not report.ok and failed == "warrant-chain", report)


def at_attenuate(world: World, clock: Clock, m: Matrix, kind: str) -> None:
    root = world.gov.warrant_public_key
    if kind in ("replayed", "another-principal"):
        m.expect("attenuate", kind, "n/a: offline, by whoever holds the token, for itself", True)
        return
    token = allow(world.gov, f"attenuate-{kind}")
    if kind == "expired":
        clock.now += LATER
        narrowed = attenuate_warrant(token, root_public_key=root, zone="z")
        try:
            verify_warrant(narrowed, root_public_key=root, now=int(clock.now), request=None)
        except WarrantError as e:
            m.expect("attenuate", kind, f"narrowed; the child refused ({e.reason})", e.reason == "expired")
            return
        m.expect("attenuate", kind, "the expired child verified", False)
        return
    try:
        attenuate_warrant(hostile(token, root, kind), root_public_key=root, zone="z")
    except WarrantError as e:
        wanted = {"widened": "shape", "truncated": "truncated"}.get(kind, "forged")
        m.expect("attenuate", kind, f"refused ({e.reason})", e.reason == wanted, e)
        return
    m.expect("attenuate", kind, "attenuated", False)


AT: dict[str, Callable[[World, Clock, Matrix, str], None]] = {
    "start": at_start,
    "delegated-authorize": at_delegated_authorize,
    "authorize-start": at_authorize_start,
    "renew": at_renew,
    "receipt": at_receipt,
    "attenuate": at_attenuate,
}


def test_a_hostile_warrant_is_refused_everywhere_it_is_presented(world: World, clock: Clock) -> None:
    """A forged, replayed, expired, another principal's, widened, truncated, re-keyed or
    re-algorithmed warrant is refused wherever it is presented, and nothing runs or is
    recorded as allowed for it."""
    matrix = Matrix({}, [])
    for place in PLACES:
        for kind in KINDS:
            # An expired cell moves the governor's clock on (it never goes back: every
            # later cell mints, signs and presents at the clock's new time).
            AT[place](world, clock, matrix, kind)
    assert not matrix.failures, "\n".join(str(f)[:600] for f in matrix.failures)
    assert len(matrix.outcomes) == len(PLACES) * len(KINDS)
    tested = [k for k, v in matrix.outcomes.items() if not v.startswith("n/a")]
    record(
        "inputs-warrants",
        section="Inputs tried",
        summary=[
            f"{len(PLACES)} places a warrant is presented x {len(KINDS)} kinds of hostile warrant: "
            f"{len(tested)} cells tried (the others do not apply, and say why), each refused as shown, "
            "no execution started and nothing recorded as allowed (a refused delegation is a recorded deny)",
        ],
        columns=["place", *KINDS],
        rows=[[place, *(matrix.outcomes[(place, kind)] for kind in KINDS)] for place in PLACES],
    )
