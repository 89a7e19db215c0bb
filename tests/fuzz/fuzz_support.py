"""What the fuzz harnesses share: fixed test keys, the objects the seeds are made of, the
refusal a harness reports, and a structural JSON mutator.

Each harness (``fuzz_<name>.py`` beside this file) defines ``one_input(data: bytes)``:
it feeds ``data`` to a parser, catches only the parser's documented refusal errors, and
raises :class:`Finding` when an oracle check fails (an accepted input that does not
round-trip, or that verifies without having been signed by the test key). Any other
exception escaping ``one_input`` is a crash as well. ``run_harness.py`` runs one under
atheris; ``tests/conformance/test_fuzzed_parsers.py`` replays the corpus and the
regressions in-process.

The keys are fixed (seeds below), so that the corpus, made by ``gen_corpus.py``, is
the same on every run; they sign nothing outside these tests.
"""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proctor.authorization.claims import WarrantClaims, WarrantRequest, args_digest
from proctor.authorization.keys import PrincipalKey
from proctor.note import NoteSigner

__all__ = [
    "FUZZ_DIR",
    "CORPUS",
    "REGRESSIONS",
    "HARNESSES",
    "NOW",
    "NOTE_SIGNER",
    "WARRANT_KEY",
    "REQUEST_KEY",
    "NOTE_TEXTS",
    "WARRANT_CLAIMS",
    "WARRANT_REQUESTS",
    "SIGNED_REQUESTS",
    "Finding",
    "Reader",
    "check",
    "inputs",
    "json_mutator",
    "lines_mutator",
    "mutate_json",
]

FUZZ_DIR = Path(__file__).resolve().parent
CORPUS = FUZZ_DIR / "corpus"
REGRESSIONS = FUZZ_DIR / "regressions"

HARNESSES = (
    "canonical",
    "note",
    "checkpoint",
    "proofs",
    "receipt",
    "warrant",
    "attenuation",
    "signed_request",
    "mcp",
)
"""Every harness, by name: ``fuzz_<name>.py``, ``corpus/<name>/``, ``regressions/<name>/``."""

_T = TypeVar("_T")

NOW = 1767225600  # 2026-01-01T00:00:00Z: the time every seed is made and judged at


def _note_signer(name: str, seed: bytes) -> NoteSigner:
    private = Ed25519PrivateKey.from_private_bytes(seed)
    public = private.public_key().public_bytes_raw()
    key_id = hashlib.sha256(name.encode() + b"\n\x01" + public).digest()[:4]
    data = base64.b64encode(b"\x01" + seed).decode()
    return NoteSigner.from_string(f"PRIVATE+KEY+{name}+{key_id.hex()}+{data}")


NOTE_SIGNER = _note_signer("fuzz.example/log", hashlib.sha256(b"proctor fuzz note key").digest())
"""Signs every note and checkpoint seed; the harnesses trust its verifier only."""
WARRANT_KEY = PrincipalKey.from_private_bytes(
    "warrant-root", hashlib.sha256(b"proctor fuzz warrant").digest()
)
"""The warrant root key every warrant seed is minted with."""
REQUEST_KEY = PrincipalKey.from_private_bytes("agent-1", hashlib.sha256(b"proctor fuzz request").digest())
"""The principal every signed-request seed is signed by."""

NOTE_TEXTS = (
    "fuzz.example/log\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
    "fuzz.example/log\n7\n" + base64.b64encode(hashlib.sha256(b"7").digest()).decode() + "\n",
    "fuzz.example/log\n18446744073709551615\n"
    + base64.b64encode(hashlib.sha256(b"max").digest()).decode()
    + "\nextension line\n",
    "just some text\n",
    "multi\nline\n\ttabbed? no: tabs are control characters\n",
)
"""The texts the note and checkpoint seeds sign (the fourth and fifth are no checkpoints;
the fifth is refused by ``sign_note``, so it is not signed)."""

_EXE_DIGEST = "sha256:" + "ab" * 32
WARRANT_CLAIMS = (
    WarrantClaims(
        warrant_id="wr_fuzz0001",
        principal="agent-1",
        action="exec",
        resource="/bin/echo",
        args_digest=args_digest(["echo", "hello"]),
        zone="prod",
        executable_digest=_EXE_DIGEST,
        obligations={"max_duration_s": 60},
        not_before=NOW - 60,
        expires=NOW + 900,
        lease_ttl_ms=5000,
        decision_index=3,
    ),
    WarrantClaims(
        warrant_id="wr_fuzz0002",
        principal="agent-1",
        action="mcp.call",
        resource="files/read",
        args_digest=args_digest({"path": "/etc/hostname"}),
        zone="",
        executable_digest="",
        obligations={},
        not_before=NOW - 10,
        expires=NOW + 60,
        lease_ttl_ms=1000,
        decision_index=9,
        parent="wr_fuzz0001",
    ),
)
"""The claims every warrant seed carries: a token that verifies carries one of these."""
WARRANT_REQUESTS = (
    WarrantRequest("exec", "/bin/echo", args_digest(["echo", "hello"]), "prod", _EXE_DIGEST),
    WarrantRequest("mcp.call", "files/read", args_digest({"path": "/etc/hostname"}), "prod", ""),
)
"""What each of :data:`WARRANT_CLAIMS` covers (the same position)."""

SIGNED_REQUESTS: tuple[tuple[str, str, bytes], ...] = (
    (
        "POST",
        "/v1/authorize",
        orjson.dumps(
            {
                "action": "exec",
                "resource": "/bin/echo",
                "argv": ["echo", "hello"],
                "zone": "prod",
                "executable_digest": _EXE_DIGEST,
            }
        ),
    ),
    ("GET", "/v1/executions?state=running&limit=10", b""),
    ("POST", "/v1/executions/ex_fuzz0001/renew", b'{"execution":"ex_fuzz0001","measurement":[]}'),
    ("POST", "/v1/revocations", b'{"target": {"kind": "warrant", "id": "wr_fuzz0001"}, "reason": "x"}'),
)
"""(method, target, body) of every signed-request seed: the only requests the test
principal ever signed."""


class Finding(AssertionError):  # noqa: N818 - what a fuzzer reports, not an error of proctor
    """An oracle check failed: the parser accepted what it must refuse, or what it
    accepted does not round-trip."""


def check(ok: bool, what: str) -> None:
    """Raise :class:`Finding` with ``what`` unless ``ok``."""
    if not ok:
        raise Finding(what)


def inputs(name: str, *, regressions: bool = True) -> Iterator[Path]:
    """Every corpus file of harness ``name``, then (by default) every regression input."""
    dirs = [CORPUS / name] + ([REGRESSIONS / name] if regressions else [])
    for d in dirs:
        if d.is_dir():
            yield from sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))


class Reader:
    """Structured choices read from fuzz bytes, the same way every time (libFuzzer's
    FuzzedDataProvider, without needing atheris, so that inputs replay anywhere). Past
    the end of the data every choice is the first option."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def byte(self) -> int:
        """The next byte, 0 at the end."""
        if self._at >= len(self._data):
            return 0
        self._at += 1
        return self._data[self._at - 1]

    def integer(self, low: int, high: int) -> int:
        """An integer in ``[low, high]``."""
        span = high - low + 1
        value = 0
        for _ in range(max(1, (span.bit_length() + 7) // 8)):
            value = (value << 8) | self.byte()
        return low + value % span

    def choice(self, options: Sequence[_T]) -> _T:
        """One of ``options``."""
        return options[self.integer(0, len(options) - 1)]

    def text(self, max_len: int = 40) -> str:
        """A string of up to ``max_len`` characters (each byte one Latin-1 character)."""
        n = self.integer(0, max_len)
        return bytes(self.byte() for _ in range(n)).decode("latin-1")


# -- a structural JSON mutator -------------------------------------------------------------

_Path = tuple[str | int, ...]
_ODD_VALUES: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1,
    2**53 - 1,
    2**53,
    1.5,
    "",
    "x",
    [],
    {},
    "\u2014",
    "A" * 300,
)


def _paths(value: Any, path: _Path = ()) -> Iterator[tuple[_Path, Any]]:
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*path, i))


def _get(doc: Any, path: _Path) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def _replace(doc: Any, path: _Path, new: Any) -> Any:
    if not path:
        return new
    _get(doc, path[:-1])[path[-1]] = new
    return doc


def _mutate_string(s: str, rng: random.Random, strings: list[str]) -> str:
    choice = rng.randrange(6)
    if choice == 0 and s:
        return s[: rng.randrange(len(s))]
    if choice == 1:
        return s + rng.choice(["=", "\n", " ", "A", "\u2014", "\x00", '"', "+"])
    if choice == 2 and strings:
        return rng.choice(strings)
    if choice == 3 and s:
        i = rng.randrange(len(s))
        return s[:i] + chr(ord(s[i]) ^ (1 << rng.randrange(7))) + s[i + 1 :]
    if choice == 4:
        try:  # base64 whose bytes change by one bit, re-encoded (reaches past the decoders)
            raw = bytearray(base64.b64decode(s, validate=True))
        except ValueError:
            return s.upper()
        if raw:
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        return base64.b64encode(bytes(raw)).decode()
    return s * 2


def mutate_json(doc: Any, rng: random.Random) -> Any:
    """``doc`` changed in one place: a member dropped, added or swapped in from elsewhere in
    the document, an item duplicated or moved, a number nudged, a string cut, extended or
    one bit changed (also inside base64), or any value replaced by an odd one."""
    doc = orjson.loads(orjson.dumps(doc))  # a private copy
    nodes = list(_paths(doc))
    path, value = rng.choice(nodes)
    strings = [v for _, v in nodes if isinstance(v, str)][:200]
    choice = rng.randrange(8)
    if choice == 0 and isinstance(value, dict) and value:
        del value[rng.choice(list(value))]
    elif choice == 1 and isinstance(value, dict):
        value[rng.choice([*strings[:20], "extra", "v"])] = rng.choice(_ODD_VALUES)
    elif choice == 2 and isinstance(value, list) and value:
        i = rng.randrange(len(value))
        value.insert(rng.randrange(len(value) + 1), orjson.loads(orjson.dumps(value[i])))
    elif choice == 3 and isinstance(value, list) and len(value) > 1:
        i, j = rng.randrange(len(value)), rng.randrange(len(value))
        value[i], value[j] = value[j], value[i]
    elif choice == 4 and type(value) is int:
        doc = _replace(doc, path, value + rng.choice([-1, 1, -(2**32), 2**53]))
    elif choice == 5 and isinstance(value, str):
        doc = _replace(doc, path, _mutate_string(value, rng, strings))
    elif choice == 6 and path:
        _, other = rng.choice(nodes)
        doc = _replace(doc, path, orjson.loads(orjson.dumps(other)))
    else:
        doc = _replace(doc, path, rng.choice(_ODD_VALUES))
    return doc


def json_mutator(*, share: float = 0.5) -> Callable[[bytes, int, int], bytes]:
    """An atheris ``custom_mutator``: with probability ``share`` (when the input parses as
    JSON) :func:`mutate_json`, else libFuzzer's own byte mutations."""

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        import atheris  # type: ignore[import-untyped]

        rng = random.Random(seed)
        if rng.random() < share:
            try:
                out = orjson.dumps(mutate_json(orjson.loads(data), rng))
            except (orjson.JSONDecodeError, orjson.JSONEncodeError, TypeError, RecursionError):
                pass
            else:
                if len(out) <= max_size:
                    return out
        result: bytes = atheris.Mutate(data, max_size)
        return result

    return mutator


def lines_mutator(*, share: float = 0.5) -> Callable[[bytes, int, int], bytes]:
    """An atheris ``custom_mutator`` for newline-delimited JSON: with probability
    ``share`` one line that parses is changed by :func:`mutate_json`, else libFuzzer's
    own byte mutations."""

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        import atheris

        rng = random.Random(seed)
        lines = data.split(b"\n")
        if rng.random() < share and lines:
            i = rng.randrange(len(lines))
            try:
                lines[i] = orjson.dumps(mutate_json(orjson.loads(lines[i]), rng))
            except (orjson.JSONDecodeError, orjson.JSONEncodeError, TypeError, RecursionError):
                pass
            else:
                out = b"\n".join(lines)
                if len(out) <= max_size:
                    return out
        result: bytes = atheris.Mutate(data, max_size)
        return result

    return mutator
