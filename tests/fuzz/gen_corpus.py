"""Write the seed corpus of every fuzz harness: ``python tests/fuzz/gen_corpus.py``.

Each seed is a real, valid object made by proctor's own code — notes and checkpoints
signed by :data:`~fuzz.fuzz_support.NOTE_SIGNER`, proofs from a tree, receipts served by
an in-process governor, warrants minted and attenuated, requests signed by
``sign_request``, MCP messages built from the ``mcp`` SDK's types — plus a few near
misses, so that libFuzzer starts next to every refusal. Files are named by the SHA-256
of their content; the receipts' log key is written to ``keys/receipt-log-key.txt``
(its signing key is thrown away, so no receipt can be made for it again: a receipt
that verifies under it is one of these). Rerunning replaces the corpus.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:  # run as a script: import the tests' helpers as pytest does
    sys.path.insert(0, str(TESTS))

from fuzz.fuzz_support import (  # noqa: E402
    CORPUS,
    FUZZ_DIR,
    NOTE_SIGNER,
    NOTE_TEXTS,
    NOW,
    REQUEST_KEY,
    SIGNED_REQUESTS,
    WARRANT_CLAIMS,
    WARRANT_KEY,
)


def _canonical() -> Iterable[bytes]:
    from proctor.canonical import canonicalize

    values: list[Any] = [
        {"v": 1, "type": "decision", "time": "2026-01-01T00:00:00.000Z", "now": NOW, "argv": ["echo", "hi"]},
        [0.1, 1e21, 1e-7, -0.0, 123.45, 2**53 - 1, -(2**53 - 1), 5e-324, 1.7976931348623157e308],
        {"nested": {"a": [{"b": [None, True, False]}]}, "": "", "e": "\u00e9\u2028\ud7ff"},
        'a string with "quotes" and \\ and \n and \u0000',
        {"arguments": {"path": "/etc/hostname", "mode": 420}, "z": [[[]]], "A": {}},
    ]
    for value in values:
        yield canonicalize(value)
    yield json.dumps(values[1], indent=2).encode()
    yield b' { "b" : 1 , "a" : [ 1.50 , 1e2 , 0.7 ] } '
    yield b'{"a": 1, "a": 2}'
    yield b'{"k": "\\ud83d\\ude00", "\\u0061": "\\/"}'
    yield b"[9007199254740993, 1152921504606847000, 0.30000000000000000001]"
    yield b"[" * 33 + b"]" * 33
    numbers = json.loads((TESTS / "vectors" / "jcs-numbers.json").read_text())["numbers"]
    yield ("[" + ",".join(row["json"] for row in numbers[:40]) + "]").encode()


def _notes() -> Iterable[bytes]:
    from proctor.note import generate_signer, sign_note

    other = generate_signer("witness.example/w1")
    for text in NOTE_TEXTS:
        if "\t" in text:
            yield text.encode()
            continue
        note = sign_note(text, NOTE_SIGNER)
        yield note.encode()
        yield (note + sign_note(text, other).split("\n\n", 1)[1]).encode()  # and an unknown signer
    yield NOTE_SIGNER.verifier.to_string().encode()
    yield other.verifier.to_string().encode()


def _checkpoints() -> Iterable[bytes]:
    from proctor.lineage.checkpoint import Checkpoint, sign_checkpoint

    for text in NOTE_TEXTS[:3]:
        cp = Checkpoint.from_text(text)
        yield sign_checkpoint(cp, NOTE_SIGNER).encode()
        yield text.encode()
    yield sign_checkpoint(Checkpoint("other.example/log", 3, b"\x01" * 32), NOTE_SIGNER).encode()


def _proofs() -> Iterable[bytes]:
    import naive_merkle as naive
    from proctor.lineage.merkle import leaf_hash

    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(40)]

    def b64(hashes: list[bytes]) -> list[str]:
        return [base64.b64encode(h).decode() for h in hashes]

    for m, n in ((0, 1), (3, 8), (6, 7), (12, 40), (39, 40)):
        yield orjson.dumps({"leaf_index": m, "tree_size": n, "hashes": b64(naive.path(m, leaves[:n]))})
    for old, new in ((0, 5), (1, 2), (3, 7), (4, 8), (13, 40), (40, 40)):
        yield orjson.dumps({"old_size": old, "new_size": new, "hashes": b64(naive.proof(old, leaves[:new]))})


def _receipts(keys: Path) -> Iterable[bytes]:
    from gov_exec import allow, start_body
    from gov_support import POLICIES, signed_bundle
    from proctor.authorization.keys import PrincipalKey
    from proctor.governor.service import Governor, initialize

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        initialize(data, origin="fuzz.example/gov")
        with Governor(data) as gov:
            alice = PrincipalKey.generate("alice")
            gov.add_principal("alice", alice.public_key_b64, attrs={"role": "dev"}, zone="", by="admin")
            gov.push_policy(signed_bundle(data, POLICIES / "basic"), by="admin")
            for argv, end in (
                (("hi",), {"outcome": "completed", "exit_status": 0}),
                (("a", "b c", "\u00e9"), {"outcome": "completed", "exit_status": 3}),
                (("x",), {"outcome": "terminated", "reason": "obligation", "detail": "max_output_bytes"}),
            ):
                token = allow(gov, *argv)
                execution = str(gov.executions.start("alice", start_body(token, *argv))["execution"])
                gov.executions.finish("alice", execution, end)
                receipt = gov.executions.receipt(execution)
                yield orjson.dumps(receipt)
                yield json.dumps(receipt, indent=1, sort_keys=True).encode()
            keys.mkdir(parents=True, exist_ok=True)
            (keys / "receipt-log-key.txt").write_text(gov.log.verifier_key() + "\n")


def _warrants() -> Iterable[bytes]:
    from proctor.authorization.warrants import attenuate_warrant, mint_warrant

    root = WARRANT_KEY.public_key
    for claims in WARRANT_CLAIMS:
        token = mint_warrant(claims, root_private_key=WARRANT_KEY.private_bytes())
        yield token.encode()
        narrowed = attenuate_warrant(token, root_public_key=root, expires=NOW + 30, zone="prod")
        yield narrowed.encode()
        yield attenuate_warrant(narrowed, root_public_key=root, resource=claims.resource).encode()
        yield attenuate_warrant(token, root_public_key=root, max_duration_s=5).encode()  # expired at NOW
        yield attenuate_warrant(token, root_public_key=root, args_digest="sha256:" + "00" * 32).encode()
    yield (token[: len(token) // 2]).encode()


def _attenuation() -> Iterable[bytes]:
    # Structured inputs (fuzz_attenuation.Reader): a few byte strings that reach each path.
    yield b""
    yield bytes([0, 0, 0, 1, 0, 0, 0, 0, 0])
    yield bytes([1, 1, 0, 0, 7, 7, 7, 2, 1, 0, 0, 0, 0, 0])
    yield bytes(range(64))
    yield bytes(range(255, 0, -3))
    yield hashlib.sha256(b"attenuation").digest() * 4


def _signed_requests() -> Iterable[bytes]:
    from proctor.authorization.requests import sign_request

    for n, (method, target, body) in enumerate(SIGNED_REQUESTS):
        headers = sign_request(method, target, body, REQUEST_KEY, now=NOW, nonce=f"fuzz-seed-{n:04d}")
        head = f"{method} {target} HTTP/1.1\r\nHost: governor\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        yield head.encode() + b"Content-Type: application/json\r\n\r\n" + body
    yield b"POST /v1/authorize HTTP/1.1\r\nHost: governor\r\n\r\n" + SIGNED_REQUESTS[0][2]


def _mcp() -> Iterable[bytes]:
    import mcp.types as t

    from proctor.integrations.mcp.governance import not_forwarded_body
    from proctor.integrations.mcp.session import error_result

    def line(model: Any) -> bytes:
        return orjson.dumps(model.model_dump(by_alias=True, exclude_none=True, mode="json"))

    tool = t.Tool(name="read", description="Read a file", input_schema={"type": "object", "properties": {}})
    messages = [
        line(
            t.JSONRPCRequest(
                jsonrpc="2.0", id=1, method="initialize", params={"protocolVersion": "2025-06-18"}
            )
        ),
        line(t.JSONRPCRequest(jsonrpc="2.0", id="call-7", method="tools/call", params={"name": "read"})),
        line(t.JSONRPCNotification(jsonrpc="2.0", method="notifications/cancelled", params={"requestId": 7})),
        line(t.JSONRPCResponse(jsonrpc="2.0", id=2, result={"tools": [tool.model_dump(mode="json")]})),
        orjson.dumps({"jsonrpc": "2.0", **error_result(3, "refused")}),
        orjson.dumps(not_forwarded_body("fuzz")),
    ]
    yield b"\n".join(messages) + b"\n"
    for m in messages:
        yield m + b"\n"
    yield b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"x"' + b" " * 1100 + b"}}\n"
    yield b"not json\n\n\n" + messages[0]


def _write(name: str, seeds: Iterable[bytes]) -> int:
    target = CORPUS / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    count = 0
    for seed in seeds:
        (target / hashlib.sha256(seed).hexdigest()[:16]).write_bytes(seed)
        count += 1
    return count


SEEDS: dict[str, Callable[[], Iterable[bytes]]] = {
    "canonical": _canonical,
    "note": _notes,
    "checkpoint": _checkpoints,
    "proofs": _proofs,
    "receipt": lambda: _receipts(FUZZ_DIR / "keys"),
    "warrant": _warrants,
    "attenuation": _attenuation,
    "signed_request": _signed_requests,
    "mcp": _mcp,
}


def main() -> None:
    """Write the seeds of the harnesses named on the command line (default: all).

    A new receipt corpus comes from a new log, with a new key: the receipt regressions,
    made for the old key, then no longer reach past step 3, so regenerate it only with
    them (``tests/fuzz/README.md``).
    """
    names = sys.argv[1:] or list(SEEDS)
    unknown = sorted(set(names) - set(SEEDS))
    if unknown:
        sys.exit(f"unknown harness {unknown}; expected some of {sorted(SEEDS)}")
    for name in names:
        print(f"{name}: {_write(name, SEEDS[name]())} seeds")


if __name__ == "__main__":
    main()
