"""Receipts: the self-contained JSON that proves one execution, verifiable offline.

A receipt needs nothing but the log's verifier key to check. Version 1::

    {"v": 1,
     "checkpoint": "<C2SP signed note of a tlog-checkpoint>",
     "log_key": "<origin>+<key id>+<base64>",
     "events": [{"leaf_index": N, "leaf": "<base64 canonical event>", "hashes": ["<base64>", ...]}, ...],
     "warrant_chain": ["<Biscuit token>", ...],
     "statement": <DSSE envelope of an in-toto Statement v1>,
     "policy": {"bundle": <PolicyBundle JSON>, "activated_index": N}}      (optional)

- ``events`` are in ascending log order, one per index, each with its RFC 9162
  inclusion proof under the receipt's checkpoint: the execution's decision,
  ``warrant.issued``, ``execution.started``, any ``execution.verified``, exactly one
  ``execution.terminated`` or ``execution.completed``; for a delegated warrant the
  decisions and ``warrant.issued`` of every ancestor; the ``key.declared`` event of the
  warrant key; and, when ``policy`` is present, the ``policy.activated`` event.
- ``warrant_chain`` is root first, the execution's own warrant last.
- ``statement`` is signed with the log's key; its predicate type
  ``https://proctor.dev/execution/v1`` is proctor's own (:data:`PREDICATE_TYPE`):
  ``{"execution", "warrant", "principal", "outcome": "completed" | "terminated",
  "exit_status" | "reason", "log": {"origin", "checkpoint_size", "indices"}}``; its
  subjects are the executable (``measurement.executable`` and its digest) and
  ``stdout`` / ``stderr`` when the terminal event carries their digests.
- ``policy`` carries the bundle *content*, which the log binds by digest. (A bundle's
  admin signature is not carried: no admin key is in the log, so it could not be
  checked offline, and a receipt holds no byte that is not checked.)

Verification steps (:func:`check_receipt`; each stops the check when it fails):

1. shape — exact keys, types, ``v == 1``, sizes bounded (:data:`MAX_RECEIPT_EVENTS` …);
2. log-key — the caller's trusted key parses and the receipt's copy equals it;
3. checkpoint — C2SP signed-note signature by that key, C2SP tlog-checkpoint body, origin;
4. inclusion — every leaf is exactly the RFC 8785 encoding of a valid event, in
   ascending log order, and its inclusion proof verifies (RFC 9162 §2.1.3.2);
5. linkage — one execution id; parent links (index and leaf hash) run
   completion/termination/verification → start → ``warrant.issued`` → an allowing
   decision; exactly one terminal event; no event without a role;
6. warrant-chain — every token verifies against the key of ``key.declared``, matches
   its ``warrant.issued`` (id, ``token_digest``, decision index, principal, parent) and
   its parent token, and covers the start;
7. statement — DSSE signature by the log key over PAE, then the Statement's subjects
   and predicate equal what the events say;
8. replay — only with ``replay=True`` or a carried ``policy``: the bundle's digest is
   the one the decision and ``policy.activated`` name, and (``replay=True``) the bundle
   re-decides the logged request exactly as logged.

What a receipt cannot prove: that nothing else happened. The log operator (who holds
the key) could leave out an ``execution.verified`` event, or a revocation; a receipt
proves that what it shows is in the log, in that order, under a signed checkpoint.
Consistency with later checkpoints is for witnesses (``proctor.orchestration``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from proctor.authorization.claims import WarrantClaims, WarrantRequest
from proctor.authorization.keys import load_public_key
from proctor.authorization.warrants import MAX_TOKEN_CHARS, verify_warrant
from proctor.errors import ProctorError, VerificationError
from proctor.lineage.canonical import canonicalize, loads
from proctor.lineage.checkpoint import Checkpoint, open_checkpoint
from proctor.lineage.dsse import open_envelope, sign_envelope
from proctor.lineage.events import MAX_EVENT_BYTES, Event
from proctor.lineage.merkle import leaf_hash, verify_inclusion
from proctor.lineage.note import NoteSigner, NoteVerifier
from proctor.lineage.proofs import MAX_PROOF_HASHES

if TYPE_CHECKING:
    from proctor.lineage.log import Log

__all__ = [
    "RECEIPT_VERSION",
    "PAYLOAD_TYPE",
    "STATEMENT_TYPE",
    "PREDICATE_TYPE",
    "MAX_RECEIPT_EVENTS",
    "MAX_WARRANT_CHAIN",
    "MAX_RECEIPT_BYTES",
    "STEP_NAMES",
    "ReceiptStep",
    "ReceiptReport",
    "build_receipt",
    "check_receipt",
    "verify_receipt",
]

RECEIPT_VERSION = 1
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://proctor.dev/execution/v1"
"""proctor's own predicate type: one governed execution (see the module docstring)."""
MAX_RECEIPT_EVENTS = 512
MAX_WARRANT_CHAIN = 32
MAX_RECEIPT_BYTES = 16 << 20
"""The largest receipt accepted as JSON text."""
STEP_NAMES = {
    1: "shape",
    2: "log-key",
    3: "checkpoint",
    4: "inclusion",
    5: "linkage",
    6: "warrant-chain",
    7: "statement",
    8: "replay",
}

_KEYS = frozenset({"v", "checkpoint", "log_key", "events", "warrant_chain", "statement"})
_MAX_CHECKPOINT_CHARS = 32 << 10
_MAX_LOG_KEY_CHARS = 1024
_MAX_LEAF_CHARS = 4 * ((MAX_EVENT_BYTES + 2) // 3)
_MAX_INDEX = 2**53 - 1
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_TERMINAL = ("execution.terminated", "execution.completed")
_ROLES = frozenset(
    {"key.declared", "policy.activated", "decision", "warrant.issued", "execution.started"}
    | {"execution.verified", *_TERMINAL}
)


class _StepError(Exception):
    """One verification step failed; the message says what was expected and found."""


@dataclass(frozen=True)
class ReceiptStep:
    """The outcome of one numbered verification step.

    Attributes:
        number: the step number (1-8, see the module docstring).
        name: its name (:data:`STEP_NAMES`).
        ok: whether it passed.
        detail: what was checked, or what failed.
    """

    number: int
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class ReceiptReport:
    """The result of :func:`check_receipt`.

    Attributes:
        ok: every step passed.
        steps: the steps run, in order, up to and including the first failure.
        failed: the failing step, or ``None``.
        execution: the execution id, once step 5 could name it.
    """

    ok: bool
    steps: tuple[ReceiptStep, ...]
    failed: ReceiptStep | None
    execution: str | None

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON object: ``{"ok", "execution", "failed", "steps": [...]}``."""
        return {
            "ok": self.ok,
            "execution": self.execution,
            "failed": None if self.failed is None else self.failed.number,
            "steps": [
                {"number": s.number, "name": s.name, "ok": s.ok, "detail": s.detail} for s in self.steps
            ],
        }


@dataclass(frozen=True)
class _Entry:
    """One proven event of the receipt."""

    index: int
    event: Event
    hash: bytes

    @property
    def kind(self) -> str:
        return self.event.type

    @property
    def where(self) -> str:
        return f"{self.event.type} at index {self.index}"

    def field(self, name: str, kind: type[Any]) -> Any:
        value = self.event.data.get(name)
        if type(value) is not kind:
            raise _StepError(f"{self.where}: expected {name} to be a {kind.__name__}, found {value!r:.80}")
        return value

    def follow(self, by_index: Mapping[int, _Entry], expected: str) -> _Entry:
        # Authorization ancestry (ARCHITECTURE.md, "Lineage events"): a parent link
        # names an earlier event by index *and* RFC 9162 leaf hash.
        link = self.event.parent
        if link is None:
            raise _StepError(f"{self.where}: expected a parent link to a {expected} event")
        target = by_index.get(link.index)
        if target is None:
            raise _StepError(f"{self.where}: its parent, index {link.index}, is not in the receipt")
        if not hmac.compare_digest(link.leaf_hash, target.hash) or target.index >= self.index:
            raise _StepError(f"{self.where}: its parent link does not match the event at {link.index}")
        if target.kind != expected:
            raise _StepError(f"{self.where}: expected its parent to be {expected}, found {target.kind}")
        return target


@dataclass(frozen=True)
class _Execution:
    """The roles of the events, as step 5 found them."""

    execution: str
    key: _Entry
    started: _Entry
    terminal: _Entry
    issued: Mapping[str, _Entry]
    decision: _Entry


def _sha256_hex(value: Any, where: str) -> str:
    match = _DIGEST.fullmatch(value) if type(value) is str else None
    if match is None:
        raise _StepError(f"{where}: expected sha256:<64 lowercase hex>, found {value!r:.80}")
    return match.group(1)


def _seconds(entry: _Entry) -> int:
    # events.py fixed the RFC 3339 UTC shape; whole seconds, as warrants count them.
    text = str(entry.event.data["time"])
    return int(datetime.fromisoformat(text[:19]).replace(tzinfo=UTC).timestamp())


def _outputs(terminal: _Entry) -> list[tuple[str, str]]:
    # The output digests a terminal event carries; absent or "" means not captured
    # (then the output is no subject), anything else must be a SHA-256 digest.
    found = []
    for name in ("stdout", "stderr"):
        value = terminal.event.data.get(f"{name}_digest", "")
        if value != "":
            found.append((name, _sha256_hex(value, f"{terminal.where}: {name}_digest")))
    return found


def _link(entries: Sequence[_Entry], activated_index: int | None) -> _Execution:
    """Step 5: give every event its role and check every parent link."""
    by_index = {e.index: e for e in entries}
    by_type: dict[str, list[_Entry]] = {}
    for e in entries:
        if e.kind not in _ROLES:
            raise _StepError(f"{e.where} has no role in an execution receipt")
        by_type.setdefault(e.kind, []).append(e)

    def only(kind: str) -> _Entry:
        found = by_type.get(kind, [])
        if len(found) != 1:
            raise _StepError(f"expected exactly one {kind} event, found {len(found)}")
        return found[0]

    key = only("key.declared")
    if key.field("purpose", str) != "warrant" or key.field("algorithm", str) != "ed25519":
        raise _StepError(f"key.declared at index {key.index}: expected an ed25519 key for purpose 'warrant'")
    key.field("public_key", str)
    started = only("execution.started")
    execution = started.field("execution", str)
    if not execution.startswith("ex_"):
        raise _StepError(
            f"execution.started at {started.index}: expected an ex_… id, found {execution!r:.80}"
        )
    terminals = [e for kind in _TERMINAL for e in by_type.get(kind, [])]
    if len(terminals) != 1:
        raise _StepError(
            f"expected exactly one execution.terminated or execution.completed, found {len(terminals)}"
        )
    terminal = terminals[0]
    # Every later event of the execution names the same id and follows from the start.
    for e in (*by_type.get("execution.verified", []), terminal):
        if e.field("execution", str) != execution:
            raise _StepError(f"{e.where} names another execution than {execution}")
        e.follow(by_index, "execution.started")
        if e.index > terminal.index:
            raise _StepError(f"{e.where} comes after the end of the execution")
    measurement = started.field("measurement", dict)
    if type(measurement.get("executable")) is not str or not measurement["executable"]:
        raise _StepError("execution.started: expected measurement.executable, a path")
    _sha256_hex(measurement.get("executable_digest"), "execution.started measurement.executable_digest")
    if terminal.kind == "execution.completed":
        terminal.field("exit_status", int)
    else:
        terminal.field("reason", str)
    _outputs(terminal)
    # Ancestry: start → warrant.issued → decision, for the execution and every ancestor.
    own = started.follow(by_index, "warrant.issued")
    if own.field("warrant", str) != started.field("warrant", str):
        raise _StepError("execution.started names another warrant than its parent warrant.issued")
    issued: dict[str, _Entry] = {}
    decided: set[int] = set()
    for w in by_type.get("warrant.issued", []):
        wid = w.field("warrant", str)
        d = w.follow(by_index, "decision")
        if wid in issued or d.index in decided:
            raise _StepError(f"warrant.issued at index {w.index}: a warrant or decision appears twice")
        if d.field("decision", str) != "allow":
            raise _StepError(
                f"decision at index {d.index}: expected allow, found {d.event.data['decision']!r:.40}"
            )
        if d.field("principal", str) != w.field("principal", str):
            raise _StepError(f"warrant.issued at index {w.index}: principal differs from its decision's")
        d.field("now", int)
        issued[wid] = w
        decided.add(d.index)
    if decided != {d.index for d in by_type.get("decision", [])}:
        raise _StepError("a decision in the receipt issued no warrant of the chain")
    if key.index > min(decided):
        raise _StepError(f"the warrant key is declared at {key.index}, after a warrant it signed")
    decision = own.follow(by_index, "decision")
    if started.field("principal", str) != own.field("principal", str):
        raise _StepError("execution.started: principal differs from its warrant's")
    if activated_index is None:
        if by_type.get("policy.activated"):
            raise _StepError("a policy.activated event without the receipt's policy")
    else:
        activation = only("policy.activated")
        if activation.index != activated_index or activation.index > decision.index:
            raise _StepError(
                f"policy.activated is at index {activation.index}; the receipt says {activated_index}, "
                f"and it must precede the decision at {decision.index}"
            )
        if activation.field("bundle", str) != decision.field("bundle", str):
            raise _StepError("policy.activated names another bundle than the decision")
    return _Execution(execution, key, started, terminal, issued, decision)


def _subjects_and_predicate(
    ex: _Execution, entries: Sequence[_Entry], cp: Checkpoint
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """What the Statement must say, derived from the proven events."""
    started, end = ex.started.event.data, ex.terminal.event.data
    m = started["measurement"]
    subjects = [{"name": m["executable"], "digest": {"sha256": _sha256_hex(m["executable_digest"], "")}}]
    subjects += [{"name": name, "digest": {"sha256": hex_}} for name, hex_ in _outputs(ex.terminal)]
    outcome: dict[str, Any]
    if ex.terminal.kind == "execution.completed":
        outcome = {"outcome": "completed", "exit_status": end["exit_status"]}
    else:
        outcome = {"outcome": "terminated", "reason": end["reason"]}
    predicate = {
        "execution": ex.execution,
        "warrant": started["warrant"],
        "principal": started["principal"],
        **outcome,
        "log": {"origin": cp.origin, "checkpoint_size": cp.size, "indices": [e.index for e in entries]},
    }
    return subjects, predicate


def _b64decode(text: str, what: str) -> bytes:
    # Canonical standard base64 only: every byte of a receipt must be significant.
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise _StepError(f"{what}: expected standard base64, found {text[:40]!r}") from e
    if base64.b64encode(raw).decode() != text:
        raise _StepError(f"{what}: expected canonical padded base64, found {text[:40]!r}")
    return raw


def _note_signatures_canonical(note: str) -> None:
    # open_note accepts any base64 that decodes (as Go's note package does); a receipt
    # also refuses the spellings that differ only in padding bits, so that changing
    # any character of the checkpoint is detected.
    for line in note[note.rfind("\n\n") + 2 : -1].split("\n"):
        _b64decode(line.rpartition(" ")[2], "checkpoint signature")


def _bounded_list(value: Any, what: str, low: int, high: int) -> list[Any]:
    if type(value) is not list or not low <= len(value) <= high:
        found = f"{len(value)} items" if type(value) is list else type(value).__name__
        raise _StepError(f"{what}: expected an array of {low} to {high} items, found {found}")
    return value


def _bounded_str(value: Any, what: str, high: int) -> str:
    if type(value) is not str or not 1 <= len(value) <= high:
        found = f"{len(value)} characters" if type(value) is str else type(value).__name__
        raise _StepError(f"{what}: expected a string of 1 to {high} characters, found {found}")
    return value


def _index(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_INDEX:
        raise _StepError(f"{what}: expected a log index in [0, 2**53), found {value!r:.40}")
    return value


def _describe(error: BaseException) -> str:
    if isinstance(error, _StepError):
        return str(error)
    reason = getattr(error, "reason", None)
    suffix = f" (reason {reason})" if isinstance(reason, str) else ""
    kind = "" if isinstance(error, ProctorError) else f"{type(error).__name__}: "
    return f"{kind}{error}{suffix}"


class _Checker:
    """The numbered steps over one receipt; each method fills in what later steps use."""

    def __init__(self, doc: Any, log_key: str, replay: bool) -> None:
        self.raw_doc = doc
        self.log_key = log_key
        self.replay = replay
        self.doc: dict[str, Any] = {}
        self.verifier: NoteVerifier | None = None
        self.cp: Checkpoint | None = None
        self.entries: list[_Entry] = []
        self.ex: _Execution | None = None

    def shape(self) -> str:
        # Step 1: the receipt's own fields. Each embedded artifact (note, event, proof,
        # token, envelope, bundle) is parsed by the step that verifies it.
        doc = self.raw_doc
        if isinstance(doc, str | bytes | bytearray | memoryview):
            if len(doc) > MAX_RECEIPT_BYTES:
                raise _StepError(f"expected at most {MAX_RECEIPT_BYTES} bytes of receipt, found {len(doc)}")
            try:
                doc = orjson.loads(doc)
            except orjson.JSONDecodeError as e:
                raise _StepError(f"expected JSON text: {e}") from e
        if type(doc) is not dict:
            raise _StepError(f"expected a receipt object, found {type(doc).__name__}")
        keys = set(doc)
        if not keys >= _KEYS or keys - _KEYS - {"policy"}:
            raise _StepError(
                f"expected the keys {sorted(_KEYS)} (and optionally 'policy'), found missing "
                f"{sorted(_KEYS - keys)} and unknown {sorted(keys - _KEYS - {'policy'})}"
            )
        if type(doc["v"]) is not int or doc["v"] != RECEIPT_VERSION:
            raise _StepError(f"v: expected receipt format {RECEIPT_VERSION}, found {doc['v']!r:.40}")
        _bounded_str(doc["checkpoint"], "checkpoint", _MAX_CHECKPOINT_CHARS)
        _bounded_str(doc["log_key"], "log_key", _MAX_LOG_KEY_CHARS)
        events = _bounded_list(doc["events"], "events", 1, MAX_RECEIPT_EVENTS)
        for i, ev in enumerate(events):
            if type(ev) is not dict or set(ev) != {"leaf_index", "leaf", "hashes"}:
                raise _StepError(
                    f"events[{i}]: expected exactly leaf_index, leaf and hashes, found {ev!r:.80}"
                )
            _index(ev["leaf_index"], f"events[{i}].leaf_index")
            _bounded_str(ev["leaf"], f"events[{i}].leaf", _MAX_LEAF_CHARS)
            for j, h in enumerate(_bounded_list(ev["hashes"], f"events[{i}].hashes", 0, MAX_PROOF_HASHES)):
                _bounded_str(h, f"events[{i}].hashes[{j}]", 44)
        for i, token in enumerate(_bounded_list(doc["warrant_chain"], "warrant_chain", 1, MAX_WARRANT_CHAIN)):
            _bounded_str(token, f"warrant_chain[{i}]", MAX_TOKEN_CHARS)
        if type(doc["statement"]) is not dict:
            raise _StepError(
                f"statement: expected a DSSE envelope object, found {type(doc['statement']).__name__}"
            )
        if "policy" in doc:
            policy = doc["policy"]
            if type(policy) is not dict or set(policy) != {"bundle", "activated_index"}:
                raise _StepError(f"policy: expected exactly bundle and activated_index, found {policy!r:.80}")
            if type(policy["bundle"]) is not dict:
                raise _StepError("policy.bundle: expected a policy bundle object")
            _index(policy["activated_index"], "policy.activated_index")
        self.doc = doc
        return f"receipt v{RECEIPT_VERSION}: {len(events)} events, {len(doc['warrant_chain'])} warrants"

    def log_key_step(self) -> str:
        # Step 2: the verifier's trusted key is the argument; the receipt's copy is only a
        # convenience and must be exactly that key.
        try:
            verifier = NoteVerifier.from_string(self.log_key)
        except ProctorError as e:
            raise _StepError(f"the trusted log key does not parse: {e}") from e
        if not hmac.compare_digest(self.doc["log_key"].encode(), verifier.to_string().encode()):
            raise _StepError(f"the receipt's log key is not the trusted key {verifier.to_string()}")
        self.verifier = verifier
        return f"log key {verifier.name}+{verifier.key_id.hex()}"

    def checkpoint(self) -> str:
        # Step 3: C2SP signed-note (a valid signature by the trusted key), then the C2SP
        # tlog-checkpoint body, whose origin must be the key's name.
        if self.verifier is None:
            raise _StepError("no trusted key")
        note = self.doc["checkpoint"]
        self.cp = open_checkpoint(note, self.verifier)
        _note_signatures_canonical(note)
        return f"checkpoint of {self.cp.origin} at size {self.cp.size}"

    def inclusion(self) -> str:
        # Step 4: each leaf is a canonical event proven under the checkpoint's root.
        if self.cp is None:
            raise _StepError("no checkpoint")
        previous = -1
        for i, ev in enumerate(self.doc["events"]):
            index = ev["leaf_index"]
            if index <= previous:
                raise _StepError(f"events[{i}]: expected ascending log order, found {index} after {previous}")
            previous = index
            raw = _b64decode(ev["leaf"], f"events[{i}].leaf")
            # The leaf must be the exact canonical encoding (RFC 8785), as stored.
            event = Event.from_bytes(raw, strict=True)
            hashes = [_b64decode(h, f"events[{i}].hashes[{j}]") for j, h in enumerate(ev["hashes"])]
            h = leaf_hash(raw)  # RFC 9162 §2.1.1
            verify_inclusion(index, self.cp.size, h, hashes, self.cp.root_hash)  # RFC 9162 §2.1.3.2
            self.entries.append(_Entry(index, event, h))
        return f"{len(self.entries)} events included in the tree of size {self.cp.size}"

    def linkage(self) -> str:
        # Step 5 (ARCHITECTURE.md, "Lineage events": parent links are the ancestry).
        policy = self.doc.get("policy")
        self.ex = _link(self.entries, None if policy is None else policy["activated_index"])
        return (
            f"execution {self.ex.execution}: {self.ex.terminal.kind} at {self.ex.terminal.index}, "
            f"started at {self.ex.started.index}, decided at {self.ex.decision.index}"
        )

    def warrant_chain(self) -> str:
        # Step 6 (proctor.authorization.warrants.verify_warrant, steps 1-9 there).
        ex = self.ex
        if ex is None:
            raise _StepError("no execution")
        tokens: list[str] = self.doc["warrant_chain"]
        if len(tokens) != len(ex.issued):
            raise _StepError(
                f"expected one token per warrant.issued event ({len(ex.issued)}), found {len(tokens)}"
            )
        root = load_public_key(ex.key.field("public_key", str))
        measurement = ex.started.event.data["measurement"]
        # Leaf first, so that each ancestor is checked against the request its child made.
        # Each token is verified at the time the log says it was used: its own warrant
        # when the execution started, a parent when the child was decided (the governor
        # verified it then). The times come from the log, so an old receipt still verifies.
        now = max(_seconds(ex.started), ex.decision.event.data["now"])
        request: WarrantRequest | None = None
        child: WarrantClaims | None = None
        used: set[str] = set()
        by_index = {e.index: e for e in self.entries}
        for position in range(len(tokens) - 1, -1, -1):
            token = tokens[position]
            claims = verify_warrant(
                token, root_public_key=root, now=now, request=request, revoked=frozenset()
            )
            issued = ex.issued.get(claims.warrant_id)
            if issued is None or claims.warrant_id in used:
                raise _StepError(
                    f"warrant_chain[{position}]: {claims.warrant_id} has no warrant.issued event"
                )
            used.add(claims.warrant_id)
            digest = _sha256_hex(issued.event.data.get("token_digest"), "warrant.issued token_digest")
            if not hmac.compare_digest(hashlib.sha256(token.encode()).hexdigest(), digest):
                raise _StepError(f"warrant_chain[{position}]: its sha256 is not the logged token_digest")
            decision = issued.follow(by_index, "decision")
            logged = issued.event.data
            checks = [
                ("decision_index", claims.decision_index == decision.index == logged.get("decision_index")),
                ("principal", claims.principal == logged["principal"]),
                ("parent_warrant", logged.get("parent_warrant", "") == claims.parent),
                ("decision parent_warrant", decision.event.data.get("parent_warrant", "") == claims.parent),
                ("root has no parent", position > 0 or claims.parent == ""),
            ]
            if child is None:
                # The execution's own warrant: the one the start names, covering what ran.
                checks += [
                    ("started.warrant", claims.warrant_id == ex.started.event.data["warrant"]),
                    ("executable_digest", claims.executable_digest in ("", measurement["executable_digest"])),
                    ("zone", claims.zone in ("", ex.started.event.data.get("zone"))),
                ]
            else:
                checks.append(("child's parent", child.parent == claims.warrant_id))
            mismatches = [name for name, ok in checks if not ok]
            if mismatches:
                raise _StepError(
                    f"warrant_chain[{position}] ({claims.warrant_id}) disagrees with the log: "
                    + ", ".join(mismatches)
                )
            # The parent is verified as the governor did when this warrant was decided:
            # at that decision's time, for this warrant's request (delegation only narrows).
            request = WarrantRequest(
                claims.action, claims.resource, claims.args_digest, claims.zone, claims.executable_digest
            )
            now = decision.event.data["now"]
            child = claims
        return f"{len(tokens)} warrant(s) verified under the declared key at index {ex.key.index}"

    def statement(self) -> str:
        ex, cp, verifier = self.ex, self.cp, self.verifier
        if ex is None or cp is None or verifier is None:
            raise _StepError("no execution")
        # Step 7: DSSE protocol "Verify" (the signature over PAE first, only then parse
        # the payload), then in-toto Statement v1 (``_type``, ``subject``, ``predicateType``).
        payload = open_envelope(self.doc["statement"], payload_type=PAYLOAD_TYPE, verifier=verifier)
        statement = loads(payload)
        if type(statement) is not dict or canonicalize(statement) != payload:
            raise _StepError("expected the statement as one canonical (RFC 8785) JSON object")
        keys = {"_type", "subject", "predicateType", "predicate"}
        if set(statement) != keys or statement["_type"] != STATEMENT_TYPE:
            raise _StepError(f"expected an in-toto Statement v1 with exactly {sorted(keys)}")
        subjects, predicate = _subjects_and_predicate(ex, self.entries, cp)
        if statement["subject"] != subjects:
            raise _StepError(
                f"the statement's subjects are not the measured executable and outputs: {subjects}"
            )
        kind = statement["predicateType"]
        if kind == PREDICATE_TYPE:
            if statement["predicate"] != predicate:
                raise _StepError(f"the statement's predicate differs from the events: expected {predicate}")
            return f"statement signed by the log key; {len(subjects)} subjects and the predicate match"
        if type(kind) is not str or not kind:
            raise _StepError(f"expected a predicateType URI, found {kind!r:.80}")
        return f"statement signed by the log key; {len(subjects)} subjects match; predicate {kind} not read"

    def replay_step(self) -> str:
        # Step 8 (ARCHITECTURE.md, principle 5: a logged decision is replayable).
        ex = self.ex
        if ex is None:
            raise _StepError("no execution")
        policy = self.doc.get("policy")
        if policy is None:
            raise _StepError("replay needs the policy bundle; the receipt carries none")
        # Imported here: the lineage layer depends on policy only to replay a decision
        # (ARCHITECTURE.md, principle 5), and a verifier that does not replay never
        # loads the Cedar engine.
        from proctor.policy import PolicyBundle, PolicyEngine  # noqa: PLC0415

        bundle = PolicyBundle.from_json(policy["bundle"])
        logged = ex.decision.event.data
        if not hmac.compare_digest(bundle.digest.encode(), ex.decision.field("bundle", str).encode()):
            raise _StepError(f"the carried bundle is {bundle.digest}; the decision names {logged['bundle']}")
        if not self.replay:
            return f"bundle {bundle.digest} is the one the decision names (not replayed)"
        request = ex.decision.field("request", dict)
        decision = PolicyEngine.compile(bundle).replay(request, now=logged["now"])
        mismatches = [
            name
            for name, ok in (
                ("decision", ("allow" if decision.allow else "deny") == logged["decision"]),
                ("policies", list(decision.policies) == logged.get("policies")),
                ("obligations", dict(decision.obligations) == logged.get("obligations")),
                ("request_digest", decision.request_digest == logged.get("request_digest")),
            )
            if not ok
        ]
        if mismatches:
            raise _StepError(
                f"replaying the decision at {ex.decision.index} gives another {', '.join(mismatches)}: "
                f"{decision.reason}"
            )
        return f"decision at {ex.decision.index} replayed under bundle {bundle.digest}: {decision.reason}"


def check_receipt(doc: Any, *, log_key: str, replay: bool = False) -> ReceiptReport:
    """Verify a receipt with nothing but the log's verifier key, and say how it went.

    Never raises for bad input: every failure, whatever its cause, is the failing step.
    The steps are numbered in the module docstring; the check stops at the first one
    that fails.

    Args:
        doc: the receipt, as a decoded JSON object or as JSON text.
        log_key: the trusted log verifier key, ``origin+keyid+base64``.
        replay: also re-evaluate the decision with the carried policy bundle (step 8).

    Returns:
        The report: ``ok``, every step run, the failing step, the execution id.
    """
    checker = _Checker(doc, log_key, replay)
    steps = [
        checker.shape,
        checker.log_key_step,
        checker.checkpoint,
        checker.inclusion,
        checker.linkage,
        checker.warrant_chain,
        checker.statement,
        checker.replay_step,
    ]
    done: list[ReceiptStep] = []
    for number, step in enumerate(steps, 1):
        if number == 8 and not replay and "policy" not in checker.doc:
            break
        try:
            detail = step()
        except Exception as e:  # noqa: BLE001 -- fail closed: any error fails the step, never escapes
            failed = ReceiptStep(number, STEP_NAMES[number], False, _describe(e))
            done.append(failed)
            return ReceiptReport(False, tuple(done), failed, _execution_id(checker))
        done.append(ReceiptStep(number, STEP_NAMES[number], True, detail))
    return ReceiptReport(True, tuple(done), None, _execution_id(checker))


def _execution_id(checker: _Checker) -> str | None:
    return None if checker.ex is None else checker.ex.execution


def verify_receipt(doc: Any, *, log_key: str, replay: bool = False) -> ReceiptReport:
    """Verify a receipt; raise if any step fails.

    Args:
        doc: the receipt, as a decoded JSON object or as JSON text.
        log_key: the trusted log verifier key.
        replay: also re-evaluate the decision (step 8).

    Returns:
        The report of a receipt that verified.

    Raises:
        VerificationError: naming the failing step's number and name, and why.
    """
    report = check_receipt(doc, log_key=log_key, replay=replay)
    if report.failed is not None:
        f = report.failed
        raise VerificationError(f"receipt verification failed at step {f.number} ({f.name}): {f.detail}")
    return report


def build_receipt(
    log: Log,
    *,
    execution_indices: Sequence[int],
    warrant_tokens: Sequence[str],
    key_index: int,
    signer: NoteSigner,
    statement: Mapping[str, Any] | None = None,
    policy_bundle: Mapping[str, Any] | None = None,
    policy_index: int | None = None,
) -> dict[str, Any]:
    """Assemble, sign and self-verify the receipt of one execution.

    The checkpoint is the log's latest; every event is proven under it, so the caller
    must have committed the terminal event first. The receipt is verified before it
    is returned (with replay when a policy bundle is given): a receipt that would not
    verify is never handed out.

    Args:
        log: the lineage log.
        execution_indices: the log indices of the execution's events (decision,
            ``warrant.issued``, ``execution.started``, ``execution.verified``…, the
            terminal event) and, for a delegated warrant, of every ancestor's decision
            and ``warrant.issued``.
        warrant_tokens: the warrant chain, root first, the execution's warrant last.
        key_index: the index of the ``key.declared`` event of the warrant key.
        signer: the log's signing key; it signs the DSSE statement.
        statement: an in-toto Statement to sign instead of the one derived from the
            events (it must still name the same subjects, and use another
            ``predicateType`` if its predicate differs from proctor's).
        policy_bundle: the policy bundle that decided (:meth:`PolicyBundle.to_json`,
            or :meth:`SignedBundle.to_json`, whose signature is dropped), to let
            verifiers replay the decision.
        policy_index: the index of that bundle's ``policy.activated`` event.

    Returns:
        The receipt as a JSON object.

    Raises:
        ValueError: the signer is not the log's key, indices repeat, or only one of
            ``policy_bundle`` and ``policy_index`` is given.
        TypeError: ``warrant_tokens`` is one string instead of a list.
        ProofRequestError: an index is not covered by the latest checkpoint.
        BundleError: the policy bundle is malformed.
        VerificationError: the assembled receipt does not verify (naming the step);
            the indices or tokens do not describe one execution.
    """
    if signer.verifier != log.verifier:
        raise ValueError(f"expected the log's signer {log.verifier_key()}, found {signer!r}")
    if isinstance(warrant_tokens, str):
        raise TypeError("expected a list of warrant tokens, found one string")
    if (policy_bundle is None) != (policy_index is None):
        raise ValueError("expected policy_bundle and policy_index together, or neither")
    indices = sorted([*execution_indices, key_index, *([] if policy_index is None else [policy_index])])
    if len(set(indices)) != len(indices):
        raise ValueError(f"expected distinct log indices, found {indices}")
    note = log.checkpoint()
    cp = open_checkpoint(note, log.verifier)
    leaves = {i: log.leaf(i) for i in indices}
    doc: dict[str, Any] = {
        "v": RECEIPT_VERSION,
        "checkpoint": note,
        "log_key": log.verifier_key(),
        "events": [
            {
                "leaf_index": i,
                "leaf": base64.b64encode(leaves[i]).decode(),
                "hashes": log.inclusion_proof(i, cp.size)["hashes"],
            }
            for i in indices
        ],
        "warrant_chain": list(warrant_tokens),
    }
    if policy_bundle is not None:
        from proctor.policy import PolicyBundle  # noqa: PLC0415 -- see _Checker.replay_step

        content = policy_bundle.get("bundle") if "signature" in policy_bundle else policy_bundle
        doc["policy"] = {
            "bundle": PolicyBundle.from_json(content or {}).to_json(),
            "activated_index": policy_index,
        }
    if statement is None:
        entries = [_Entry(i, Event.from_bytes(leaves[i], strict=True), leaf_hash(leaves[i])) for i in indices]
        try:
            execution = _link(entries, policy_index)
        except _StepError as e:
            raise VerificationError(f"receipt verification failed at step 5 ({STEP_NAMES[5]}): {e}") from e
        subjects, predicate = _subjects_and_predicate(execution, entries, cp)
        statement = {
            "_type": STATEMENT_TYPE,
            "subject": subjects,
            "predicateType": PREDICATE_TYPE,
            "predicate": predicate,
        }
    payload = canonicalize(dict(statement))
    doc["statement"] = sign_envelope(payload, payload_type=PAYLOAD_TYPE, signer=signer)
    verify_receipt(doc, log_key=log.verifier_key(), replay=policy_bundle is not None)
    return doc
