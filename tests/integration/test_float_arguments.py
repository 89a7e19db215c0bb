"""Tool calls whose arguments hold floats (``temperature: 0.7``), end to end through a
real governor (``proctor serve``) and the real CLI.

Rules, each a test named after it: a float argument is authorizable, startable and
finishable, its stored request is re-evaluated at a renewal under a new bundle, and
a float where the governor takes an integer (``exit_status: 0.0``) is refused, not
taken for the integer it equals, and its receipt verifies offline (``proctor verify --replay``); the logged
decision commits to the arguments with the float and the receipt's opening reveals it;
``proctor log verify`` passes over such a log, and an event holding floats is stored as
its RFC 8785 bytes (the reference's leaf hash) and verifies; policy decides on the float's canonical
text; a float and the equal integer are one request (same warrant args digest); a
number that a double does not hold as written is refused at the boundary (422) and by
``proctor authorize --context`` before anything is sent, as are NaN and Infinity, which
JSON encoders would otherwise send as null.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import rfc8785

from gov_server import GovernorServer, cli, client_of
from proctor.authorization.keys import PrincipalKey
from proctor.authorization.requests import sign_request
from proctor.authorization.warrants import inspect_warrant
from proctor.cli_run import receipt_timeline
from proctor.client import GovernorError
from proctor.lineage.merkle import leaf_hash
from proctor.policy.commitment import ArgumentOpening
from proctor.verification.measurement import tool_definition_digest, tool_measurement

pytestmark = pytest.mark.slow

POLICY = """
@id("temperature-0.7")
permit (
    principal,
    action == Proctor::Action::"mcp.call",
    resource == Proctor::Tool::"llm/complete"
) when { context.arguments.contains("temperature=0.7") };

@id("count-one")
permit (
    principal,
    action == Proctor::Action::"mcp.call",
    resource == Proctor::Tool::"llm/count"
) when { context.arguments.contains("n=1") };
"""

# A tool definition with floats in its input schema: the warrant binds its digest.
DEFINITION = {
    "name": "complete",
    "description": "Complete a prompt.",
    "inputSchema": {
        "type": "object",
        "properties": {
            "prompt": {"type": "string"},
            "temperature": {"type": "number", "minimum": 0.0, "maximum": 2.0, "default": 0.7},
            "top_p": {"type": "number", "default": 1.0},
        },
        "required": ["prompt"],
    },
}
DIGEST = tool_definition_digest(DEFINITION)
ARGUMENTS = {"prompt": "hi", "temperature": 0.7, "top_p": 0.95, "scale": 1e-7, "big": 1e21}


@pytest.fixture(scope="module")
def gov(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    root = tmp_path_factory.mktemp("floats")
    (root / "policy").mkdir()
    (root / "policy" / "tools.cedar").write_text(POLICY)
    server = GovernorServer(root / "gov", policy=root / "policy")
    try:
        yield server
    finally:
        server.stop()


def authorize(gov: GovernorServer, arguments: dict[str, Any], tool: str = "llm/complete") -> dict[str, Any]:
    body = {"action": "mcp.call", "resource": tool, "arguments": arguments, "executable_digest": DIGEST}
    with client_of(gov) as alice:
        return alice.authorize(body)


def claims_of(gov: GovernorServer, token: str) -> dict[str, Any]:
    """The claims a warrant token carries (its signature checked under the warrant key)."""
    root = base64.b64decode((gov.data / "keys" / "warrant.pub").read_text().strip())
    claims: dict[str, Any] = inspect_warrant(token, root_public_key=root)["claims"]
    return claims


def test_float_arguments_are_authorized_run_and_receipted_end_to_end(
    gov: GovernorServer, tmp_path: Path
) -> None:
    answer = authorize(gov, ARGUMENTS)
    assert answer["allow"] is True, answer
    assert answer["decision"]["policies"] == ["temperature-0.7"]
    token = answer["warrant"]["token"]
    with client_of(gov) as alice:
        started = alice.json(
            "POST",
            "/v1/executions",
            {
                "warrant": token,
                "action": "mcp.call",
                "resource": "llm/complete",
                "arguments": ARGUMENTS,
                "measurement": tool_measurement("llm/complete", DIGEST),
            },
        )
        execution = started["execution"]
        # A new bundle: the renewal re-evaluates the stored request, floats included.
        newer = tmp_path / "policy"
        newer.mkdir()
        (newer / "tools.cedar").write_text(POLICY + "\n// the same rules, pushed again\n")
        gov.admin("policy", "push", str(newer))
        renewed = alice.json("POST", f"/v1/executions/{execution}/renew", {})
        assert renewed["ok"] is True, renewed
        result = {"text": "hello", "logprob": -0.25}
        # A float where an integer is taken is refused, never taken for the integer it equals.
        with pytest.raises(GovernorError) as refused:
            alice.json(
                "POST", f"/v1/executions/{execution}/finish", {"outcome": "completed", "exit_status": 0.0}
            )
        assert refused.value.status == 422
        assert "exit_status: expected int, found float" in str(refused.value)
        alice.json(
            "POST",
            f"/v1/executions/{execution}/finish",
            {
                "outcome": "completed",
                "exit_status": 0,
                "stdout_digest": "sha256:" + hashlib.sha256(orjson.dumps(result)).hexdigest(),
                "resource_usage": {"cpu_ms": 2.5, "rss_kb": 3},
            },
        )
        receipt = alice.json("GET", f"/v1/executions/{execution}/receipt")
        decision = alice.json("GET", f"/v1/log/entries/{answer['log_index']}")["event"]
    # The log's decision commits to the arguments, float included; the receipt opens it.
    commitment = decision["request"]["args_commitment"]
    openings = {item["index"]: ArgumentOpening.from_json(item["opening"]) for item in receipt["openings"]}
    opened = openings[answer["log_index"]]
    assert opened.commitment() == commitment
    assert opened.arguments == ARGUMENTS
    assert opened.arguments is not None
    assert type(opened.arguments["temperature"]) is float
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt))
    log_key = str(gov.data / "keys" / "log.pub")
    verified = cli("verify", str(path), "--log-key", log_key, "--replay", "--json", check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    audited = cli("log", "verify", "--data", str(gov.data), check=False)
    assert audited.returncode == 0, audited.stdout + audited.stderr
    events = {e["type"]: e["event"] for e in receipt_timeline(receipt)["events"]}
    assert events["execution.verified"]["result"] == "allowed"  # re-evaluated at the renewal
    assert events["execution.completed"]["resource_usage"] == {"rss_kb": 3}  # integers only


def test_float_arguments_policy_decides_on_the_canonical_text(gov: GovernorServer) -> None:
    denied = authorize(gov, {**ARGUMENTS, "temperature": 0.75})
    assert denied["allow"] is False
    assert "no permit policy matched" in denied["decision"]["reason"]
    # 0.70 on the wire is the number 0.7: the same canonical text, allowed.
    key = PrincipalKey.load(gov.key)
    body = (
        b'{"action":"mcp.call","resource":"llm/complete","executable_digest":"'
        + DIGEST.encode()
        + b'","arguments":{"prompt":"hi","temperature":0.70}}'
    )
    headers = {
        "content-type": "application/json",
        **sign_request("POST", "/v1/authorize", body, key, now=int(time.time())),
    }
    answer = httpx.post(gov.url + "/v1/authorize", content=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["allow"] is True


def test_float_arguments_a_float_and_the_equal_integer_are_one_request(gov: GovernorServer) -> None:
    as_float = authorize(gov, {"n": 1.0}, tool="llm/count")
    as_int = authorize(gov, {"n": 1}, tool="llm/count")
    assert as_float["allow"] is True
    assert as_int["allow"] is True
    assert as_float["decision"]["request_digest"] != ""
    float_claims, int_claims = (
        claims_of(gov, as_float["warrant"]["token"]),
        claims_of(gov, as_int["warrant"]["token"]),
    )
    assert float_claims["args_digest"] == int_claims["args_digest"]
    assert float_claims["args_digest"] == "sha256:" + hashlib.sha256(b'{"n":1}').hexdigest()


@pytest.mark.parametrize(
    "number",
    [b"9007199254740993", b"0.30000000000000000001", b"1e-400"],
    ids=["int-2^53+1", "too-many-digits", "underflow"],
)
def test_float_arguments_a_number_a_double_does_not_hold_is_refused(
    gov: GovernorServer, number: bytes
) -> None:
    key = PrincipalKey.load(gov.key)
    body = b'{"action":"mcp.call","resource":"llm/count","arguments":{"n":' + number + b"}}"
    headers = {
        "content-type": "application/json",
        **sign_request("POST", "/v1/authorize", body, key, now=int(time.time())),
    }
    answer = httpx.post(gov.url + "/v1/authorize", content=body, headers=headers, timeout=30)
    assert answer.status_code == 422, answer.text
    assert "IEEE 754 double" in answer.text


def test_float_arguments_cli_sends_floats_and_refuses_nan_before_sending(gov: GovernorServer) -> None:
    def run(context: str) -> Any:
        return cli(
            "authorize",
            "--action",
            "mcp.call",
            "--resource",
            "llm/complete",
            "--key",
            str(gov.key),
            "--server",
            gov.url,
            "--context",
            context,
            "--json",
            check=False,
        )

    allowed = run(
        json.dumps({"arguments": {"prompt": "hi", "temperature": 0.7}, "executable_digest": DIGEST})
    )
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["allow"] is True
    with client_of(gov) as alice:
        before = alice.text("/v1/log/checkpoint").splitlines()[1]  # the tree size
    for bad in ('{"arguments": {"temperature": NaN}}', '{"arguments": {"temperature": Infinity}}'):
        refused = run(bad)
        assert refused.returncode == 2, (bad, refused.returncode, refused.stdout, refused.stderr)
        assert "--context: expected JSON" in refused.stderr
    with client_of(gov) as alice:
        assert alice.text("/v1/log/checkpoint").splitlines()[1] == before  # nothing was asked


def test_float_arguments_events_with_floats_are_logged_canonically_and_the_log_verifies(
    tmp_path: Path,
) -> None:
    data = str(tmp_path / "data")
    cli("init", "--data", data, "--origin", "floats.example/log")
    event: dict[str, Any] = {
        "v": 1,
        "type": "decision",
        "time": "2026-12-03T20:00:00Z",
        "x": [0.7, 1.0, -0.0, 1e21, 1e-7, 2.0**60, 5e-324, 1.7976931348623157e308],
    }
    # Written by Python's json (1e+21, 1e-07, 1.152921504606847e+18): not canonical, lossless.
    appended = cli("log", "append", "--data", data, input=json.dumps(event) + "\n")
    index = json.loads(appended.stdout)["indices"][0]
    entry = json.loads(cli("log", "entry", str(index), "--data", data, "--json").stdout)
    expected = rfc8785.dumps(event)
    assert expected == (
        b'{"time":"2026-12-03T20:00:00Z","type":"decision","v":1,'
        b'"x":[0.7,1,0,1e+21,1e-7,1152921504606847000,5e-324,1.7976931348623157e+308]}'
    )
    assert entry["leaf_hash"] == base64.b64encode(leaf_hash(expected)).decode()
    audited = cli("log", "verify", "--data", data, check=False)
    assert audited.returncode == 0, audited.stdout + audited.stderr
