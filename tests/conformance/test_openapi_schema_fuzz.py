"""schemathesis against the governor's ``/openapi.json``: requests generated from the
document for every operation it lists (a new route is covered when it is declared),
sent to the application ``proctor serve`` runs (the API with the pages mounted, in
process over ASGI, its path decoded as uvicorn decodes it), each one signed after it
was generated and serialised, as an enrolled principal and as the admin.

Rules: no generated request gets a 5xx; every response is documented (its status, its
content type, its body against the schema); a request the schema forbids is refused; a
correctly signed request is never refused as unauthenticated; and an unsigned or
mis-signed one (another key, an unknown principal, a tampered target, a stale, replayed
or malformed signature) is refused with 401 on every operation that is not public.

``PROCTOR_SCHEMATHESIS_EXAMPLES`` (default 6) is the number of requests generated per
operation, principal and mode; ``PROCTOR_SCHEMATHESIS_SEED`` repeats a run.
"""

from __future__ import annotations

import collections
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from figures import record
from hostile_support import World, build_world, seeded
from proctor.authorization.keys import PrincipalKey
from proctor.authorization.requests import sign_request

EXAMPLES = int(os.environ.get("PROCTOR_SCHEMATHESIS_EXAMPLES") or 6)
SEED, _ = seeded("PROCTOR_SCHEMATHESIS_SEED")
STREAM_TIMEOUT = 0.3
"""An event stream never ends: read it this long (seconds), then disconnect."""

PUBLIC = frozenset(
    {
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/warrant-key",
        "/v1/log/key",
        "/v1/log/checkpoint",
        "/v1/log/entries/{index}",
        "/v1/log/proof/inclusion",
        "/v1/log/proof/consistency",
    }
)
"""The operations anyone may call (app.py's docstring); every other one is signed, so a
route added later is expected to refuse an unsigned request until it is named here."""

CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]


class Signed(requests.auth.AuthBase):
    """Sign the request as it goes on the wire: its method, its target as sent (path
    percent-encoded, query) and its serialised body (RFC 9421, proctor's profile)."""

    def __init__(self, key: PrincipalKey, *, mangle: str = "") -> None:
        self.key = key
        self.mangle = mangle
        self.sent: dict[str, str] | None = None

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        body = r.body or b""
        raw = body.encode() if isinstance(body, str) else body
        if not isinstance(raw, bytes):
            raise TypeError(f"expected a serialised body, found {type(body)}")
        if self.mangle == "replayed" and self.sent is not None:
            r.headers.update(self.sent)  # the same signature, nonce and all, a second time
            return r
        method, target, created = r.method or "GET", r.path_url, int(time.time())
        if self.mangle == "tampered":
            target = target + ("&" if "?" in target else "?") + "x=1"  # signed for another target
        if self.mangle == "stale":
            created -= 3600
        headers = sign_request(method, target, raw, self.key, now=created)
        if self.mangle == "wrong-alg":
            headers["Signature-Input"] = headers["Signature-Input"].replace('"ed25519"', '"hmac-sha256"')
        if self.mangle == "malformed":
            headers["Signature"] = "sig1=:" + "A" * 86 + "==:"
        r.headers.update(headers)
        self.sent = headers
        return r


@dataclass
class Outcome:
    """What one operation got: how many requests, their statuses, and what failed."""

    requests: int = 0
    checked: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)


@dataclass
class Run:
    """Every operation's outcome, by "METHOD /path"."""

    operations: dict[str, Outcome] = field(default_factory=lambda: collections.defaultdict(Outcome))

    def failed(self, kind: str) -> list[str]:
        return [f"{op}: {f}" for op, o in self.operations.items() for f in o.failures if f.startswith(kind)]


def _failure_text(error: BaseException) -> str:
    return " | ".join(line.strip() for line in str(error).splitlines() if line.strip())[:400]


def _exercise(
    world: World,
    run: Run,
    *,
    send: Callable[..., None],
    modes: tuple[schemathesis.GenerationMode, ...],
    examples: int,
    real_parameters: bool,
) -> None:
    """Generate ``examples`` requests per operation and mode (and as many again with real
    path parameters, when asked), and ``send`` each."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", world.app)
    real = {
        "execution_id": [world.running, world.ended],
        "approval_id": [world.approval],
        "name": ["bob", "alice"],
        "verdict": ["approve", "deny"],
        "index": ["0", "1"],
    }
    for number, result in enumerate(schema.get_all_operations()):
        operation = result.ok()  # type: ignore[union-attr]  # an invalid operation raises here
        label = f"{operation.method.upper()} {operation.path}"
        outcome = run.operations[label]
        variants: list[tuple[schemathesis.GenerationMode, dict[str, Any] | None]] = [
            (m, None) for m in modes if m.is_positive or _negatable(operation)
        ]
        names = [p.name for p in operation.path_parameters]
        if real_parameters and names:
            variants += [
                (schemathesis.GenerationMode.POSITIVE, {n: real[n][i % len(real[n])] for n in names})
                for i in range(2)
            ]
        for index, (mode, path) in enumerate(variants):
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=path)
            try:
                _given(
                    strategy, examples, SEED + 1000 * number + index, functools.partial(send, outcome=outcome)
                )
            except hypothesis.errors.Unsatisfiable:
                pass  # negative mode: none of the generated ways to break the schema applied


def _given(strategy: Any, examples: int, seed: int, test: Callable[[Any], None]) -> None:
    """Run ``test`` on ``examples`` cases drawn from ``strategy`` (no shrinking: every
    failure is collected, not raised)."""

    @hypothesis.seed(seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def one(case: Any) -> None:
        test(case)

    one()


def _negatable(operation: Any) -> bool:
    """Whether a request can break the operation's schema: it takes a body or a query, or
    a path parameter that is more than any string (a path segment is always a string)."""
    if len(operation.body) or len(operation.query):
        return True
    return any(
        set(p.definition.get("schema", {})) - {"type", "title"}
        or p.definition["schema"].get("type") != "string"
        for p in operation.path_parameters
    )


def _documented(case: Any, status: int) -> bool:
    """Whether the operation documents this status itself (readiness's 503: not ready),
    not only as the ``default`` error answer."""
    return str(status) in case.operation.responses.status_codes


def _timeout(case: Any) -> float:
    return STREAM_TIMEOUT if case.operation.path == "/v1/stream" else 30.0


@pytest.fixture(scope="module")
def signed_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Generated requests, each signed by the admin and by an enrolled principal, against
    a governor with history and against one with no policy (not ready)."""
    run = Run()
    for policy in (True, False):
        world = build_world(tmp_path_factory.mktemp("openapi"), policy=policy)

        def send(case: Any, outcome: Outcome, world: World = world) -> None:
            negative = case.meta is not None and case.meta.generation.mode.is_negative
            checks = [*CONFORMANCE, *([negative_data_rejection] if negative else [])]
            for signer in ("admin", "alice"):
                response = case.call(auth=Signed(world.keys[signer]), timeout=_timeout(case))
                outcome.requests += 1
                outcome.statuses[response.status_code] += 1
                try:
                    case.validate_response(response, checks=checks)
                except BaseException as e:  # schemathesis's FailureGroup: collect, report
                    outcome.failures.append(f"schema {response.status_code}: {_failure_text(e)}")
                outcome.checked += 1
                if response.status_code >= 500 and not _documented(case, response.status_code):
                    outcome.failures.append(f"5xx {response.status_code}: {response.text[:200]}")
                if response.status_code == 401:
                    outcome.failures.append(
                        f"401 {case.method} {response.request.url}: {response.text[:300]}"
                    )

        try:
            _exercise(
                world,
                run,
                send=send,
                modes=(schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE),
                examples=EXAMPLES if policy else max(1, EXAMPLES // 3),
                real_parameters=policy,
            )
        finally:
            world.close()
    return run


def test_no_generated_request_gets_a_5xx(signed_run: Run) -> None:
    """No request generated from /openapi.json gets a 5xx (but readiness's documented 503),
    signed by the admin or by a principal."""
    assert not signed_run.failed("5xx"), (f"seed {SEED}", signed_run.failed("5xx")[:5])
    assert sum(o.requests for o in signed_run.operations.values()) > 0


def test_every_response_conforms_to_the_documented_schema(signed_run: Run) -> None:
    """Every answer to a generated request is as /openapi.json documents it (its status,
    its content type, its body's schema), and a request the schema forbids is refused."""
    failed = signed_run.failed("schema")
    assert not failed, (f"seed {SEED}", failed[:5])
    operations = signed_run.operations
    assert len(operations) >= 28, sorted(operations)
    assert all(o.requests > 0 for o in operations.values()), [
        k for k, o in operations.items() if not o.requests
    ]
    # Not only refusals: the fuzz reached the operations' own answers.
    succeeded = {op for op, o in operations.items() if any(200 <= s < 300 for s in o.statuses)}
    assert {
        "POST /v1/authorize",
        "GET /v1/executions/{execution_id}",
        "GET /v1/approvals/{approval_id}",
    } <= succeeded
    requests_sent = sum(o.requests for o in operations.values())
    record(
        "inputs-openapi",
        section="Inputs tried",
        summary=[
            f"{len(operations)} operations of /openapi.json, {requests_sent} generated requests signed by the "
            f"admin and an enrolled principal (positive and negative generation, {EXAMPLES} per operation, "
            "principal and mode, plus real path parameters), "
            f"{sum(o.checked for o in operations.values())} responses checked against the document: "
            "no 5xx, every status, content type and body as documented, schema-invalid requests refused",
        ],
        columns=["operation", "requests", "statuses seen"],
        rows=[
            [op, o.requests, " ".join(f"{s}x{n}" for s, n in sorted(o.statuses.items()))]
            for op, o in sorted(operations.items())
        ],
    )


def test_a_correctly_signed_request_is_never_refused_as_unauthenticated(
    signed_run: Run, tmp_path: Path
) -> None:
    """A request signed by an enrolled principal over its target as sent (percent-encoded
    path parameters included) is authenticated, whatever else is wrong with it."""
    failed = signed_run.failed("401")
    assert not failed, (f"seed {SEED}", failed[:5])
    # And always (not only when the generator chose such a parameter): a path parameter a
    # client escaped, as `proctor executions show` does with quote(), is not an unknown key.
    world = build_world(tmp_path, policy=False)
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", world.app)
        for parameter in ("ex 1", "ex%3A1", "é", 'ex"1', "ex<1>"):
            case = schema["/v1/executions/{execution_id}"]["GET"].Case(
                path_parameters={"execution_id": parameter}
            )
            answer = case.call(auth=Signed(world.keys["alice"]))
            assert "%" in answer.request.path_url, answer.request.path_url
            assert answer.status_code == 404, (parameter, answer.status_code, answer.text[:200])
    finally:
        world.close()


MANGLES = (
    "unsigned",
    "unknown-principal",
    "another-key",
    "tampered",
    "stale",
    "replayed",
    "wrong-alg",
    "malformed",
)


def test_unsigned_or_mis_signed_requests_are_refused_on_every_signed_operation(tmp_path: Path) -> None:
    """Generated requests unsigned, or signed wrongly (another key under the principal's
    name, an unknown principal, for another target, stale, replayed, an unknown algorithm,
    a garbled signature), are refused with 401 on every operation that is not public, and
    never get a 5xx; none writes to the log or the governance state."""
    world = build_world(tmp_path)
    mallory = PrincipalKey.generate("mallory")
    impostor = PrincipalKey.generate("alice")  # alice's name, not alice's key
    run = Run()
    tried: collections.Counter[tuple[str, str]] = collections.Counter()
    turn = iter(range(1 << 30))

    def send(case: Any, outcome: Outcome) -> None:
        mangle = MANGLES[next(turn) % len(MANGLES)]
        key = {"unknown-principal": mallory, "another-key": impostor}.get(mangle, world.keys["alice"])
        auth = Signed(key, mangle=mangle) if mangle != "unsigned" else None
        if mangle == "replayed":  # sent once, genuinely signed (it may act), then again as it was
            first = case.call(auth=auth, timeout=_timeout(case))
            if first.status_code >= 500:
                outcome.failures.append(f"5xx replayed-first {first.status_code}: {first.text[:200]}")
        public = case.operation.path in PUBLIC
        before = world.snapshot()
        response = case.call(auth=auth, timeout=_timeout(case))
        after = world.snapshot()
        outcome.requests += 1
        outcome.statuses[response.status_code] += 1
        tried[(mangle, "public" if public else "signed")] += 1
        if response.status_code >= 500:
            outcome.failures.append(f"5xx {mangle} {response.status_code}: {response.text[:200]}")
        elif not public and response.status_code != 401:
            outcome.failures.append(f"admitted {mangle} {response.status_code} {response.request.url}")
        if after != before:
            changed = sorted(k for k in before if before[k] != after.get(k))
            outcome.failures.append(f"wrote {mangle} {response.request.url}: {changed}")

    try:
        _exercise(
            world,
            run,
            send=send,
            modes=(schemathesis.GenerationMode.POSITIVE,),
            examples=max(len(MANGLES), EXAMPLES),
            real_parameters=True,
        )
    finally:
        world.close()
    for kind in ("5xx", "admitted", "wrote"):
        assert not run.failed(kind), (f"seed {SEED}", run.failed(kind)[:5])
    signed_ops = [op for op in run.operations if op.split(" ", 1)[1] not in PUBLIC]
    assert len(signed_ops) >= 19, signed_ops
    assert all(tried[(m, "signed")] > 0 for m in MANGLES), tried
    record(
        "inputs-openapi-unsigned",
        section="Inputs tried",
        summary=[
            f"{sum(tried.values())} generated requests unsigned or mis-signed over "
            f"{len(run.operations)} operations ({len(signed_ops)} signed): every one on a signed "
            "operation refused with 401, none a 5xx, none wrote to the log or the governance state",
        ],
        columns=["signature", "requests to signed operations", "requests to public operations"],
        rows=[[m, tried[(m, "signed")], tried[(m, "public")]] for m in MANGLES],
    )
