"""The SDK's pure parts: definition digests, argument binding, result digests, and the
fail-closed reading of the governor's answers (proctor.integrations.sdk.protocol, .results,
.definition)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from proctor.errors import DeniedError, VerificationError
from proctor.integrations.sdk.definition import definition_digest, function_definition, named_definition
from proctor.integrations.sdk.protocol import (
    bind_arguments,
    check_renewal,
    finish_body,
    raw_warrant_key,
    result_digest,
)
from proctor.integrations.sdk.results import Authorization, Lease
from proctor.verification.lease_answer import LeaseAnswer, sign_lease_answer


def add(a: int, b: int = 1) -> int:
    """Add."""
    return a + b


def add_v2(a: int, b: int = 1) -> int:
    """Add."""
    return a + b + 0


def many(*items: int, scale: int = 1, **options: str) -> int:
    return sum(items) * scale


def test_definition_digest_binds_name_code_and_docstring() -> None:
    one = definition_digest(function_definition(add, "add"))
    assert one == definition_digest(function_definition(add, "add"))  # stable
    assert one != definition_digest(function_definition(add, "plus"))  # the tool's name
    assert one != definition_digest(function_definition(add_v2, "add"))  # the body
    definition = function_definition(add, "add")
    assert definition["inputSchema"] == {
        "type": "object",
        "properties": {"a": {}, "b": {}},
        "required": ["a"],
    }
    assert definition["description"] == "Add."
    assert definition["python"]["qualname"].endswith(".add")


def test_definition_of_a_wrapper_is_the_wrapped_function() -> None:
    @functools.wraps(add)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return add(*args, **kwargs)

    assert definition_digest(function_definition(wrapper, "add")) == definition_digest(
        function_definition(add, "add")
    )


def test_definition_of_a_function_without_source_is_its_code() -> None:
    namespace: dict[str, Any] = {}
    exec("def made(x):\n    return x\n", namespace)
    assert definition_digest(function_definition(namespace["made"], "made")).startswith("sha256:")


def test_named_definition_binds_the_name_only() -> None:
    assert definition_digest(named_definition("x")) != definition_digest(named_definition("y"))


def test_bound_arguments_apply_defaults_and_varargs() -> None:
    assert bind_arguments(add, (2,), {}) == {"a": 2, "b": 1}
    assert bind_arguments(many, (1, 2), {"mode": "x"}) == {
        "items": [1, 2],
        "scale": 1,
        "options": {"mode": "x"},
    }
    with pytest.raises(TypeError):
        bind_arguments(add, (), {"c": 1})


@pytest.mark.parametrize(
    "value", [object(), b"bytes", {1, 2}, float("nan")], ids=["object", "bytes", "set", "nan"]
)
def test_arguments_that_are_not_json_are_a_denial(value: Any) -> None:
    with pytest.raises(DeniedError) as denied:
        bind_arguments(add, (value,), {})
    assert denied.value.reason == "arguments"


def test_result_digest_is_canonical_json_or_repr() -> None:
    assert result_digest({"b": 1, "a": [True, None]}) == result_digest({"a": [True, None], "b": 1})
    assert result_digest(object()).startswith("sha256:")
    assert result_digest(b"x") != result_digest("x")


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ({"allow": True, "decision": {"allow": True}}, "no warrant token"),
        ({"allow": True, "decision": {"allow": False}, "warrant": {"token": "t"}}, "decision says deny"),
        ({"allow": False, "decision": {"allow": True}, "warrant": {"token": "t"}}, "answer says deny"),
        ({"allow": True, "decision": {"allow": "yes"}, "warrant": {"token": "t"}}, "not a boolean"),
        ({"allow": True, "warrant": {"token": "t"}}, "no decision"),
        ("allow", "not an object"),
        (None, "nothing"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_an_answer_that_is_not_a_clear_allow_is_a_denial(answer: Any, why: str) -> None:
    auth = Authorization.from_json(answer)
    assert not auth.allowed, why
    assert auth.warrant is None


def test_a_pending_approval_is_read_and_is_no_allow() -> None:
    auth = Authorization.from_json(
        {
            "allow": False,
            "decision": {"allow": True, "policies": ["p"], "reason": "needs approval"},
            "approval": {"id": "ap_1", "status": "pending", "expires_at": 5, "args_digest": "sha256:0"},
        }
    )
    assert not auth.allowed
    assert auth.approval is not None
    assert auth.approval.id == "ap_1"
    assert auth.denial("t").policies == ("p",)


def _signed_renewal(key: Ed25519PrivateKey, **change: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "execution": "ex_1",
        "kind": "renew",
        "nonce": "nonce-123",
        "ok": True,
        "terminate": "",
        "lease_expires_ms": 10_000,
        "lease_ttl_ms": 3000,
        "warrant": "wr_1",
    }
    signed = LeaseAnswer(**fields)
    body: dict[str, Any] = {k: v for k, v in fields.items() if k not in ("execution", "kind", "nonce")}
    body["lease_sig"] = sign_lease_answer(signed, key.sign)
    body.update(change)
    return body


LEASE = Lease(execution="ex_1", warrant="t", warrant_id="wr_1", lease_ttl_ms=3000, lease_expires_ms=0)


def test_a_renewal_is_held_only_on_a_signed_answer_for_this_request() -> None:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    good = check_renewal(_signed_renewal(key), nonce="nonce-123", lease=LEASE, warrant_key=public)
    assert good.ok
    assert good.lease_expires_ms == 10_000
    for answer, nonce in (
        ({"ok": True, "lease_expires_ms": 10_000, "lease_ttl_ms": 3000, "warrant": "wr_1"}, "nonce-123"),
        (_signed_renewal(key), "nonce-456"),  # a replayed answer to another request
        (_signed_renewal(key, lease_expires_ms=99_000), "nonce-123"),  # its expiry pushed out
    ):
        with pytest.raises(VerificationError):
            check_renewal(answer, nonce=nonce, lease=LEASE, warrant_key=public)
    refused = check_renewal({"ok": False, "terminate": "revoked"}, nonce="x", lease=LEASE, warrant_key=public)
    assert not refused.ok  # a refusal is acted upon, signed or not
    assert refused.terminate == "revoked"


def test_finish_bodies() -> None:
    assert finish_body("completed", result_digest="sha256:1", reason="", detail="") == {
        "outcome": "completed",
        "exit_status": 0,
        "stdout_digest": "sha256:1",
    }
    assert finish_body("failed", result_digest="", reason="exception", detail="x")["reason"] == "exception"
    with pytest.raises(ValueError, match="outcome"):
        finish_body("ok", result_digest="", reason="", detail="")


def test_warrant_key_must_be_32_bytes() -> None:
    with pytest.raises(Exception, match="32 bytes"):
        raw_warrant_key(b"short")
    with pytest.raises(Exception, match="base64"):
        raw_warrant_key("not base64!")


def test_import_proctor_loads_the_sdk_only_when_asked() -> None:
    code = (
        "import json, sys, proctor\n"
        "before = [m for m in sys.modules if m.startswith('proctor.integrations')]\n"
        "proctor.Client\n"
        "after = [m for m in sys.modules if m.startswith('proctor.integrations')]\n"
        "gov = [m for m in sys.modules if m.startswith(('proctor.governor', 'cedarpy', 'fastapi'))]\n"
        "print(json.dumps([before, 'proctor.integrations.sdk' in after, gov]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    before, loaded, governor_side = json.loads(done.stdout.strip().splitlines()[-1])
    assert before == []
    assert loaded
    assert governor_side == []


class Notes:
    def __init__(self) -> None:
        self.secret = object()  # not JSON: must not be bound

    def write(self, name: str, text: str = "") -> int:
        return len(text)


def test_a_methods_object_is_not_an_argument() -> None:
    notes = Notes()
    assert bind_arguments(Notes.write, (notes, "a"), {}) == {"name": "a", "text": ""}
    assert bind_arguments(notes.write, ("a",), {}) == {"name": "a", "text": ""}
    assert list(function_definition(Notes.write, "write")["inputSchema"]["properties"]) == ["name", "text"]
