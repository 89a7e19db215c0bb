"""Policy bundles: content-addressed digests, directory loading, JSON, Ed25519 signatures."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from proctor.canonical import canonicalize
from proctor.errors import BundleError
from proctor.policy import DEFAULT_SCHEMA, PolicyBundle, PolicyEngine, SignedBundle
from proctor.policy.bundle import BUNDLE_SIGNATURE_CONTEXT

FILES = {
    "exec.cedar": 'permit(principal, action, resource == Proctor::Executable::"/bin/true");\n',
    "tools.cedar": 'permit(principal, action == Proctor::Action::"tool.call", resource);\n',
}
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def test_bundle_digest_is_sha256_of_the_canonical_json() -> None:
    bundle = PolicyBundle(FILES, version=7)
    expected = {"files": FILES, "schema": DEFAULT_SCHEMA, "version": 7}
    assert bundle.to_json() == expected
    assert bundle.digest == "sha256:" + hashlib.sha256(canonicalize(expected)).hexdigest()


def test_bundle_digest_is_stable_and_content_addressed() -> None:
    one = PolicyBundle(FILES, version=1)
    reordered = PolicyBundle(dict(reversed(list(FILES.items()))), version=1)
    assert one.digest == reordered.digest
    assert one == reordered
    assert list(reordered.files) == sorted(FILES)
    assert PolicyBundle(FILES, version=2).digest != one.digest
    assert PolicyBundle({**FILES, "exec.cedar": FILES["exec.cedar"] + " "}, version=1).digest != one.digest
    assert PolicyBundle(FILES, DEFAULT_SCHEMA + " ", version=1).digest != one.digest
    # A pinned value: if this changes, every logged bundle digest changes with it.
    pinned = PolicyBundle({"a.cedar": "permit(principal, action, resource);"}, "{}", 1)
    assert (
        pinned.digest
        == "sha256:"
        + hashlib.sha256(
            b'{"files":{"a.cedar":"permit(principal, action, resource);"},"schema":"{}","version":1}'
        ).hexdigest()
    )


@given(
    st.dictionaries(st.from_regex(r"[a-z][a-z0-9_-]{0,8}\.cedar", fullmatch=True), st.text(), max_size=4),
    st.integers(0, 2**53 - 1),
)
def test_bundle_json_round_trip_keeps_the_digest(files: dict[str, str], version: int) -> None:
    try:
        bundle = PolicyBundle(files, version=version)
    except BundleError:
        return  # text with lone surrogates is not valid Unicode; rejected, as it should be
    again = PolicyBundle.from_json(json.loads(json.dumps(bundle.to_json())))
    assert again == bundle
    assert again.digest == bundle.digest


def test_bundle_from_directory_reads_cedar_files_and_schema(tmp_path: Path) -> None:
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "README.md").write_text("ignored")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.cedar").write_text("ignored too")
    bundle = PolicyBundle.from_directory(tmp_path, version=3)
    assert bundle == PolicyBundle(FILES, version=3)
    (tmp_path / "schema.json").write_text(DEFAULT_SCHEMA.replace("tenant", "team"))
    custom = PolicyBundle.from_directory(str(tmp_path), version=3)
    assert "team" in custom.schema
    assert custom.digest != bundle.digest
    PolicyEngine.compile(custom)


def test_bundle_from_directory_fails_closed(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="readable directory"):
        PolicyBundle.from_directory(tmp_path / "missing", version=1)
    with pytest.raises(BundleError, match="at least one"):
        PolicyBundle.from_directory(tmp_path, version=1)
    (tmp_path / "bad.cedar").write_bytes(b"\xff\xfe")
    with pytest.raises(BundleError, match="cannot read"):
        PolicyBundle.from_directory(tmp_path, version=1)
    (tmp_path / "bad.cedar").unlink()
    (tmp_path / "with space.cedar").write_text("permit(principal, action, resource);")
    with pytest.raises(BundleError, match="file names"):
        PolicyBundle.from_directory(tmp_path, version=1)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "expected the fields"),
        ({"files": {}, "schema": "{}"}, "expected the fields"),
        ({"files": {}, "schema": "{}", "version": 1, "extra": 1}, "expected the fields"),
        ({"files": [], "schema": "{}", "version": 1}, "expected an object"),
        ({"files": {"../x.cedar": ""}, "schema": "{}", "version": 1}, "file names"),
        ({"files": {"x.txt": ""}, "schema": "{}", "version": 1}, "file names"),
        ({"files": {"x.cedar": 1}, "schema": "{}", "version": 1}, "policy text"),
        ({"files": {}, "schema": "", "version": 1}, "schema"),
        ({"files": {}, "schema": "{}", "version": -1}, "version"),
        ({"files": {}, "schema": "{}", "version": True}, "version"),
        ({"files": {}, "schema": "{}", "version": 2**53}, "version"),
        ({"files": {"x.cedar": "\ud800"}, "schema": "{}", "version": 1}, "Unicode"),
    ],
    ids=[
        "not-an-object",
        "missing-field",
        "unknown-field",
        "files-not-object",
        "path-in-name",
        "not-cedar",
        "text-not-string",
        "empty-schema",
        "negative-version",
        "bool-version",
        "huge-version",
        "lone-surrogate",
    ],
)
def test_bundle_from_json_rejects_malformed_documents(doc: Any, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        PolicyBundle.from_json(doc)


def test_signed_bundle_verifies_and_round_trips() -> None:
    bundle = PolicyBundle(FILES, version=1)
    signed = bundle.signed(KEY, "policy-admin")
    # Over a context prefix and the digest's UTF-8 bytes: never over the bare digest,
    # which the same key could be tricked into signing for another purpose.
    KEY.public_key().verify(signed.signature, BUNDLE_SIGNATURE_CONTEXT + bundle.digest.encode())
    with pytest.raises(InvalidSignature):
        KEY.public_key().verify(signed.signature, bundle.digest.encode())
    signed.verify(KEY.public_key())
    again = SignedBundle.from_json(json.loads(json.dumps(signed.to_json())))
    assert again == signed
    again.verify(KEY.public_key())


def test_signed_bundle_tampering_is_detected() -> None:
    signed = PolicyBundle(FILES, version=1).signed(KEY, "policy-admin")
    doc = signed.to_json()
    doc["bundle"]["files"]["exec.cedar"] = "permit(principal, action, resource);"
    with pytest.raises(BundleError, match="does not verify"):
        SignedBundle.from_json(doc).verify(KEY.public_key())
    doc = signed.to_json()
    doc["bundle"]["version"] = 2
    with pytest.raises(BundleError, match="does not verify"):
        SignedBundle.from_json(doc).verify(KEY.public_key())
    flipped = bytearray(signed.signature)
    flipped[0] ^= 1
    with pytest.raises(BundleError, match="does not verify"):
        SignedBundle(signed.bundle, signed.signer, bytes(flipped)).verify(KEY.public_key())
    other = Ed25519PrivateKey.from_private_bytes(bytes(32))
    with pytest.raises(BundleError, match="does not verify"):
        signed.verify(other.public_key())


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"signature": "not base64!"}, "base64"),
        ({"signature": base64.b64encode(b"short").decode()}, "64-byte"),
        ({"signature": 5}, "base64"),
        ({"signer": ""}, "signer"),
        ({"extra": 1}, "expected the fields"),
        ({"bundle": {"files": {}}}, "expected the fields"),
    ],
    ids=[
        "bad-base64",
        "short-signature",
        "signature-not-string",
        "empty-signer",
        "unknown-field",
        "bad-bundle",
    ],
)
def test_signed_bundle_from_json_rejects_malformed_documents(patch: dict[str, Any], message: str) -> None:
    doc = {**PolicyBundle(FILES, version=1).signed(KEY, "admin").to_json(), **patch}
    with pytest.raises(BundleError, match=message):
        SignedBundle.from_json(doc)
