"""RFC 9421 request signatures with Ed25519 over an RFC 9530 Content-Digest."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proctor.authorization.keys import PrincipalKey
from proctor.authorization.requests import content_digest, sign_request, signature_base, verify_request
from proctor.errors import AuthenticationError

NOW = 1_700_000_000
ALICE = PrincipalKey.from_private_bytes("alice", bytes(range(32)))
BOB = PrincipalKey.from_private_bytes("bob", bytes(range(1, 33)))
KEYS = {"alice": ALICE.public_key, "bob": BOB.public_key}
BODY = b'{"action":"exec"}'


class NonceCache:
    """A nonce store as the governor keeps one, recording every call."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()
        self.calls: list[tuple[str, str, int]] = []

    def __call__(self, keyid: str, nonce: str, expires_at: int) -> bool:
        self.calls.append((keyid, nonce, expires_at))
        if (keyid, nonce) in self.seen:
            return False
        self.seen.add((keyid, nonce))
        return True


def _verify(
    headers: Mapping[str, str],
    *,
    method: str = "POST",
    target: str = "/v1/authorize?dry=1",
    body: bytes = BODY,
    now: int = NOW,
    keys: Callable[[str], bytes | None] = KEYS.get,
    nonces: NonceCache | None = None,
) -> str:
    return verify_request(
        method,
        target,
        body,
        headers,
        public_key_for=keys,
        now=now,
        remember_nonce=nonces if nonces is not None else NonceCache(),
    )


def _signed(**kw: object) -> dict[str, str]:
    args: dict[str, object] = {"method": "POST", "target": "/v1/authorize?dry=1", "body": BODY}
    args.update(kw)
    return sign_request(
        str(args["method"]),
        str(args["target"]),
        bytes(args["body"]),  # type: ignore[call-overload]
        ALICE,
        now=int(args.get("now", NOW)),  # type: ignore[call-overload]
        nonce=str(args.get("nonce", "nonce-0123456789")),
    )


def _reason(fn: Callable[[], object]) -> str:
    with pytest.raises(AuthenticationError) as info:
        fn()
    return info.value.reason


def test_signed_request_round_trip() -> None:
    nonces = NonceCache()
    assert _verify(_signed(), nonces=nonces) == "alice"
    assert nonces.calls == [("alice", "nonce-0123456789", NOW + 300)]


def test_headers_and_signature_base_are_exactly_rfc_9421() -> None:
    headers = _signed()
    digest = "sha-256=:" + base64.b64encode(hashlib.sha256(BODY).digest()).decode() + ":"
    params = (
        '("@method" "@path" "@query" "content-digest")'
        f';created={NOW};nonce="nonce-0123456789";keyid="alice";alg="ed25519"'
    )
    assert headers["Content-Digest"] == digest == content_digest(BODY)
    assert headers["Signature-Input"] == "sig1=" + params
    base = (
        '"@method": POST\n'
        '"@path": /v1/authorize\n'
        '"@query": ?dry=1\n'
        f'"content-digest": {digest}\n'
        f'"@signature-params": {params}'
    ).encode()
    assert signature_base("POST", "/v1/authorize?dry=1", digest, params) == base
    assert headers["Signature"] == "sig1=:" + base64.b64encode(ALICE.sign(base)).decode() + ":"


def test_empty_query_and_empty_path_follow_rfc_9421() -> None:
    # RFC 9421 §2.2.7: "?" alone without a query; §2.2.6: "/" for an empty path.
    base = signature_base("GET", "", "d", "p").decode()
    assert '"@path": /\n' in base
    assert '"@query": ?\n' in base
    assert '"@query": ?\n' in signature_base("GET", "/x?", "d", "p").decode()


def test_default_nonce_is_random_base64url() -> None:
    a = sign_request("GET", "/", b"", ALICE, now=NOW)["Signature-Input"]
    b = sign_request("GET", "/", b"", ALICE, now=NOW)["Signature-Input"]
    nonce_a = a.split('nonce="')[1].split('"')[0]
    assert a != b
    assert len(nonce_a) == 22
    assert len(base64.urlsafe_b64decode(nonce_a + "==")) == 16
    assert "=" not in nonce_a


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("body", b'{"action":"exec "}'),
        ("method", "PUT"),
        ("target", "/v1/revoke?dry=1"),
        ("target", "/v1/authorize?dry=0"),
        ("target", "/v1/authorize"),
        ("target", "/v1/authorize?dry=1&x=2"),
    ],
    ids=["body", "method", "path", "query", "query-removed", "query-extended"],
)
def test_tampered_request_is_rejected(field: str, value: object) -> None:
    headers = _signed()
    nonces = NonceCache()
    assert _reason(lambda: _verify(headers, nonces=nonces, **{field: value})) == "bad-signature"  # type: ignore[arg-type]
    assert nonces.calls == []


def test_tampered_signature_is_rejected() -> None:
    headers = _signed()
    raw = bytearray(base64.b64decode(headers["Signature"][6:-1]))
    raw[0] ^= 1
    headers["Signature"] = "sig1=:" + base64.b64encode(bytes(raw)).decode() + ":"
    assert _reason(lambda: _verify(headers)) == "bad-signature"


def test_tampered_signature_parameters_are_rejected() -> None:
    headers = _signed()
    headers["Signature-Input"] = headers["Signature-Input"].replace(f"created={NOW}", f"created={NOW + 1}")
    assert _reason(lambda: _verify(headers)) == "bad-signature"


def test_signature_by_the_wrong_key_is_rejected() -> None:
    headers = _signed()
    # Alice's request, but the key directory holds another key for "alice".
    assert _reason(lambda: _verify(headers, keys={"alice": BOB.public_key}.get)) == "bad-signature"


def test_claiming_another_principal_is_rejected() -> None:
    headers = _signed()
    headers["Signature-Input"] = headers["Signature-Input"].replace('keyid="alice"', 'keyid="bob"')
    assert _reason(lambda: _verify(headers)) == "bad-signature"


def test_unknown_key_is_rejected() -> None:
    assert _reason(lambda: _verify(_signed(), keys=lambda _: None)) == "unknown-key"


@pytest.mark.parametrize(
    ("created", "ok"),
    [
        (NOW - 300, True),
        (NOW - 301, False),
        (NOW + 60, True),
        (NOW + 61, False),
        (0, False),
        (NOW + 86400, False),
    ],
    ids=["window-edge", "too-old", "skew-edge", "too-far-ahead", "epoch", "tomorrow"],
)
def test_stale_request_is_rejected(created: int, ok: bool) -> None:
    headers = _signed(now=created)
    if ok:
        assert _verify(headers) == "alice"
    else:
        assert _reason(lambda: _verify(headers)) == "stale"


def test_replayed_nonce_is_rejected_only_after_a_good_signature() -> None:
    nonces = NonceCache()
    genuine = _signed()
    forged = dict(genuine, Signature="sig1=:" + base64.b64encode(bytes(64)).decode() + ":")
    # A forgery carrying the nonce is rejected for its signature and does not burn it.
    assert _reason(lambda: _verify(forged, nonces=nonces)) == "bad-signature"
    assert nonces.calls == []
    assert _verify(genuine, nonces=nonces) == "alice"
    assert _reason(lambda: _verify(genuine, nonces=nonces)) == "replayed"
    assert len(nonces.calls) == 2


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Content-Digest": content_digest(BODY)},
        {"Signature": "sig1=:AAAA:"},
        {"Signature-Input": "sig1=()"},
    ],
    ids=["none", "digest-only", "signature-only", "input-only"],
)
def test_unsigned_request_is_rejected(headers: dict[str, str]) -> None:
    assert _reason(lambda: _verify(headers)) == "unsigned"


@pytest.mark.parametrize(
    "case",
    [str.lower, str.upper, lambda s: s.swapcase(), lambda s: s],
    ids=["lower", "upper", "swapped", "as-sent"],
)
def test_header_names_are_case_insensitive(case: Callable[[str], str]) -> None:
    headers = {case(name): value for name, value in _signed().items()}
    assert _verify(headers) == "alice"


GOOD = _signed()
SIG_INPUT = GOOD["Signature-Input"]
PARAMS = f';created={NOW};nonce="nonce-0123456789";keyid="alice";alg="ed25519"'
COMPONENTS = 'sig1=("@method" "@path" "@query" "content-digest")'


def _with(**changes: str) -> dict[str, str]:
    headers = dict(GOOD)
    headers.update(changes)
    return headers


MALFORMED: dict[str, dict[str, str]] = {
    "other-label": _with(**{"Signature-Input": SIG_INPUT.replace("sig1=", "sig2=", 1)}),
    "two-signatures": _with(**{"Signature-Input": SIG_INPUT + ", " + SIG_INPUT.replace("sig1", "sig2")}),
    "components-reordered": _with(
        **{"Signature-Input": 'sig1=("@path" "@method" "@query" "content-digest")' + PARAMS}
    ),
    "component-missing": _with(**{"Signature-Input": 'sig1=("@method" "@path" "content-digest")' + PARAMS}),
    "component-extra": _with(
        **{"Signature-Input": 'sig1=("@method" "@path" "@query" "content-digest" "date")' + PARAMS}
    ),
    "param-missing": _with(**{"Signature-Input": COMPONENTS + PARAMS.replace(';alg="ed25519"', "")}),
    "param-duplicate": _with(**{"Signature-Input": SIG_INPUT + ";created=" + str(NOW)}),
    "param-unknown": _with(**{"Signature-Input": SIG_INPUT + ';tag="x"'}),
    "param-expires": _with(**{"Signature-Input": SIG_INPUT + f";expires={NOW + 10}"}),
    "alg-other": _with(**{"Signature-Input": SIG_INPUT.replace("ed25519", "hmac-sha256")}),
    "created-string": _with(**{"Signature-Input": SIG_INPUT.replace(f"created={NOW}", f'created="{NOW}"')}),
    "created-leading-zero": _with(
        **{"Signature-Input": SIG_INPUT.replace(f"created={NOW}", f"created=0{NOW}")}
    ),
    "created-negative": _with(**{"Signature-Input": SIG_INPUT.replace(f"created={NOW}", "created=-1")}),
    "nonce-integer": _with(**{"Signature-Input": SIG_INPUT.replace('nonce="nonce-0123456789"', "nonce=5")}),
    "nonce-short": _with(**{"Signature-Input": SIG_INPUT.replace("nonce-0123456789", "abc")}),
    "keyid-invalid": _with(**{"Signature-Input": SIG_INPUT.replace('keyid="alice"', 'keyid="al ice"')}),
    "whitespace": _with(**{"Signature-Input": SIG_INPUT.replace(";nonce", "; nonce")}),
    "control-char": _with(**{"Signature-Input": SIG_INPUT + "\x00"}),
    "non-ascii": _with(**{"Signature-Input": SIG_INPUT.replace("alice", "alicé")}),
    "oversize": _with(**{"Signature-Input": SIG_INPUT + ";" + "a" * 9000}),
    "signature-label": _with(Signature=GOOD["Signature"].replace("sig1", "sig2", 1)),
    "signature-not-b64": _with(Signature="sig1=:!!!!:"),
    "signature-short": _with(Signature="sig1=:" + base64.b64encode(bytes(63)).decode() + ":"),
    "signature-list": _with(Signature=GOOD["Signature"] + ", " + GOOD["Signature"]),
    "signature-noncanonical": _with(Signature=GOOD["Signature"][:-4] + "x==:"),
    "digest-missing": {k: v for k, v in GOOD.items() if k != "Content-Digest"},
    "digest-sha512": _with(**{"Content-Digest": "sha-512=:" + base64.b64encode(bytes(64)).decode() + ":"}),
    "digest-list": _with(**{"Content-Digest": GOOD["Content-Digest"] + ", " + GOOD["Content-Digest"]}),
    "duplicate-header": {**GOOD, "signature": GOOD["Signature"]},
    "value-not-string": _with(Signature=b"sig1=:AAAA:"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("headers", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_signature_headers_are_rejected(headers: dict[str, str]) -> None:
    nonces = NonceCache()
    assert _reason(lambda: _verify(headers, nonces=nonces)) == "malformed"
    assert nonces.calls == []


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET POST", "/"),
        ("", "/"),
        ("GET", "http://host/x"),
        ("GET", "/a b"),
        ("GET", "/x#frag"),
        ("GET", "/é"),
    ],
    ids=["method-space", "method-empty", "absolute-form", "space", "fragment", "non-ascii"],
)
def test_unsignable_requests_are_refused(method: str, target: str) -> None:
    assert _reason(lambda: sign_request(method, target, b"", ALICE, now=NOW)) == "malformed"


@pytest.mark.parametrize("nonce", ["short", "has space xx", "a" * 129, 'quo"te-nonce'])
def test_invalid_nonce_is_refused(nonce: str) -> None:
    assert _reason(lambda: sign_request("GET", "/", b"", ALICE, now=NOW, nonce=nonce)) == "malformed"


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive window"):
        verify_request(
            "GET",
            "/",
            b"",
            _signed(),
            public_key_for=KEYS.get,
            now=NOW,
            window=0,
            remember_nonce=NonceCache(),
        )


def test_malformed_key_from_the_directory_fails_closed() -> None:
    from proctor.errors import KeyFormatError

    with pytest.raises(KeyFormatError):
        _verify(_signed(), keys=lambda _: b"short")


@settings(max_examples=60, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    path=st.text(alphabet="abcxyz0189-._~%/", max_size=30),
    query=st.none() | st.text(alphabet="abc=&%+0189", max_size=30),
    body=st.binary(max_size=200),
)
def test_sign_verify_round_trip_property(method: str, path: str, query: str | None, body: bytes) -> None:
    target = "/" + path + ("" if query is None else "?" + query)
    headers = sign_request(method, target, body, BOB, now=NOW)
    assert (
        verify_request(
            method, target, body, headers, public_key_for=KEYS.get, now=NOW, remember_nonce=NonceCache()
        )
        == "bob"
    )
    other_body = body + b"x"
    assert _reason(lambda: _verify(headers, method=method, target=target, body=other_body)) == "bad-signature"
