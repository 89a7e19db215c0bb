"""Checking a receipt: pure (no I/O, no clock), with nothing but the log's verifier key.

Why one module: the eight steps below run in a fixed order over one checker's state
(the parsed entries, the execution, the revealed openings), and each relies on what the
steps before it established; they are audited by reading them in that order, top to
bottom.

The format is described in :mod:`proctor.receipts`. No clock is read: warrants are
judged at the times the receipt's own events record, so an old receipt still verifies.

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
   re-decides the logged request exactly as logged;
9. witnesses — only with a ``witness_policy``: the policy accepts the log key, and the
   checkpoint note carries valid cosignatures by its witnesses that meet its quorum
   (c2sp.org/tlog-policy; c2sp.org/tlog-cosignature, the lines ride in the note).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import orjson

from proctor.authorization.claims import WarrantClaims, WarrantRequest, args_digest
from proctor.authorization.keys import load_public_key
from proctor.authorization.warrants import MAX_TOKEN_CHARS, verify_warrant
from proctor.canonical import canonicalize, loads
from proctor.errors import IntegrityError, ProctorError, VerificationError
from proctor.lineage.checkpoint import Checkpoint, open_checkpoint
from proctor.lineage.dsse import open_envelope
from proctor.lineage.events import MAX_EVENT_BYTES, Event
from proctor.lineage.merkle import leaf_hash, verify_inclusion
from proctor.lineage.proofs import MAX_PROOF_HASHES
from proctor.lineage.witness_policy import WitnessPolicy
from proctor.note import NoteVerifier
from proctor.receipts._parts import (
    Entry,
    Execution,
    StepError,
    b64decode,
    bounded_list,
    bounded_str,
    describe,
    link_roles,
    note_signatures_canonical,
    read_index,
    seconds,
    sha256_hex,
    subjects_and_predicate,
)
from proctor.verification import check_measurement

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
    "check_receipt",
    "verify_receipt",
]

RECEIPT_VERSION = 1
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://proctor.dev/execution/v1"
"""proctor's own predicate type: one governed execution (see :mod:`proctor.receipts`)."""
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
    9: "witnesses",
}

_KEYS = frozenset({"v", "checkpoint", "log_key", "events", "warrant_chain", "statement"})
_OPTIONAL = frozenset({"policy", "openings"})
_MAX_CHECKPOINT_CHARS = 32 << 10
_MAX_LOG_KEY_CHARS = 1024
_MAX_LEAF_CHARS = 4 * ((MAX_EVENT_BYTES + 2) // 3)


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


class _Checker:
    """The numbered steps over one receipt; each method fills in what later steps use."""

    def __init__(self, doc: Any, log_key: str, replay: bool, witness_policy: WitnessPolicy | None) -> None:
        self.raw_doc = doc
        self.log_key = log_key
        self.replay = replay
        self.witness_policy = witness_policy
        self.doc: dict[str, Any] = {}
        self.verifier: NoteVerifier | None = None
        self.cp: Checkpoint | None = None
        self.entries: list[Entry] = []
        self.ex: Execution | None = None
        self.openings: dict[int, Any] = {}

    def _revealed(self, decision: Entry) -> dict[str, Any] | None:
        """The decision's request with its arguments, if the receipt opens them
        (``None`` when it does not); an opening that does not match fails."""
        from proctor.policy.commitment import ArgumentOpening, reveal  # noqa: PLC0415 -- see replay_step

        request = decision.field("request", dict)
        if "args_commitment" not in request:
            return dict(request)  # logged before arguments were committed
        if decision.index not in self.openings:
            return None
        try:
            return reveal(request, ArgumentOpening.from_json(self.openings[decision.index]))
        except ProctorError as e:
            raise StepError(f"the opening of the decision at {decision.index}: {e}") from e

    def shape(self) -> str:
        # Step 1: the receipt's own fields. Each embedded artifact (note, event, proof,
        # token, envelope, bundle) is parsed by the step that verifies it.
        doc = self.raw_doc
        if isinstance(doc, str | bytes | bytearray | memoryview):
            if len(doc) > MAX_RECEIPT_BYTES:
                raise StepError(f"expected at most {MAX_RECEIPT_BYTES} bytes of receipt, found {len(doc)}")
            try:
                doc = orjson.loads(doc)
            except orjson.JSONDecodeError as e:
                raise StepError(f"expected JSON text: {e}") from e
        if type(doc) is not dict:
            raise StepError(f"expected a receipt object, found {type(doc).__name__}")
        keys = set(doc)
        if not keys >= _KEYS or keys - _KEYS - _OPTIONAL:
            raise StepError(
                f"expected the keys {sorted(_KEYS)} (and optionally {sorted(_OPTIONAL)}), found missing "
                f"{sorted(_KEYS - keys)} and unknown {sorted(keys - _KEYS - _OPTIONAL)}"
            )
        if type(doc["v"]) is not int or doc["v"] != RECEIPT_VERSION:
            raise StepError(f"v: expected receipt format {RECEIPT_VERSION}, found {doc['v']!r:.40}")
        bounded_str(doc["checkpoint"], "checkpoint", _MAX_CHECKPOINT_CHARS)
        bounded_str(doc["log_key"], "log_key", _MAX_LOG_KEY_CHARS)
        events = bounded_list(doc["events"], "events", 1, MAX_RECEIPT_EVENTS)
        for i, ev in enumerate(events):
            if type(ev) is not dict or set(ev) != {"leaf_index", "leaf", "hashes"}:
                raise StepError(
                    f"events[{i}]: expected exactly leaf_index, leaf and hashes, found {ev!r:.80}"
                )
            read_index(ev["leaf_index"], f"events[{i}].leaf_index")
            bounded_str(ev["leaf"], f"events[{i}].leaf", _MAX_LEAF_CHARS)
            for j, h in enumerate(bounded_list(ev["hashes"], f"events[{i}].hashes", 0, MAX_PROOF_HASHES)):
                bounded_str(h, f"events[{i}].hashes[{j}]", 44)
        for i, token in enumerate(bounded_list(doc["warrant_chain"], "warrant_chain", 1, MAX_WARRANT_CHAIN)):
            bounded_str(token, f"warrant_chain[{i}]", MAX_TOKEN_CHARS)
        if type(doc["statement"]) is not dict:
            raise StepError(
                f"statement: expected a DSSE envelope object, found {type(doc['statement']).__name__}"
            )
        if "policy" in doc:
            policy = doc["policy"]
            if type(policy) is not dict or set(policy) != {"bundle", "activated_index"}:
                raise StepError(f"policy: expected exactly bundle and activated_index, found {policy!r:.80}")
            if type(policy["bundle"]) is not dict:
                raise StepError("policy.bundle: expected a policy bundle object")
            read_index(policy["activated_index"], "policy.activated_index")
        for i, item in enumerate(bounded_list(doc.get("openings", []), "openings", 0, MAX_WARRANT_CHAIN)):
            if type(item) is not dict or set(item) != {"index", "opening"}:
                raise StepError(f"openings[{i}]: expected exactly index and opening, found {item!r:.80}")
            read_index(item["index"], f"openings[{i}].index")
            if type(item["opening"]) is not dict:  # a null must not read as "not opened"
                found = f"{item['opening']!r:.80}"
                raise StepError(f"openings[{i}].opening: expected an argument opening object, found {found}")
            if item["index"] in self.openings:  # one opening per decision: none that goes unread
                raise StepError(f"openings[{i}]: index {item['index']} is opened twice")
            self.openings[item["index"]] = item["opening"]  # parsed where it is used (steps 6, 8)
        self.doc = doc
        return f"receipt v{RECEIPT_VERSION}: {len(events)} events, {len(doc['warrant_chain'])} warrants"

    def log_key_step(self) -> str:
        # Step 2: the verifier's trusted key is the argument; the receipt's copy is only a
        # convenience and must be exactly that key.
        try:
            verifier = NoteVerifier.from_string(self.log_key)
        except ProctorError as e:
            raise StepError(f"the trusted log key does not parse: {e}") from e
        if not hmac.compare_digest(self.doc["log_key"].encode(), verifier.to_string().encode()):
            raise StepError(f"the receipt's log key is not the trusted key {verifier.to_string()}")
        self.verifier = verifier
        return f"log key {verifier.name}+{verifier.key_id.hex()}"

    def checkpoint(self) -> str:
        # Step 3: C2SP signed-note (a valid signature by the trusted key), then the C2SP
        # tlog-checkpoint body, whose origin must be the key's name.
        if self.verifier is None:
            raise StepError("no trusted key")
        note = self.doc["checkpoint"]
        self.cp = open_checkpoint(note, self.verifier)
        note_signatures_canonical(note)
        return f"checkpoint of {self.cp.origin} at size {self.cp.size}"

    def inclusion(self) -> str:
        # Step 4: each leaf is a canonical event proven under the checkpoint's root.
        if self.cp is None:
            raise StepError("no checkpoint")
        previous = -1
        for i, ev in enumerate(self.doc["events"]):
            index = ev["leaf_index"]
            if index <= previous:
                raise StepError(f"events[{i}]: expected ascending log order, found {index} after {previous}")
            previous = index
            raw = b64decode(ev["leaf"], f"events[{i}].leaf")
            # The leaf must be the exact canonical encoding (RFC 8785), as stored.
            event = Event.from_bytes(raw, strict=True)
            hashes = [b64decode(h, f"events[{i}].hashes[{j}]") for j, h in enumerate(ev["hashes"])]
            h = leaf_hash(raw)  # RFC 9162 §2.1.1
            verify_inclusion(index, self.cp.size, h, hashes, self.cp.root_hash)  # RFC 9162 §2.1.3.2
            self.entries.append(Entry(index, event, h))
        return f"{len(self.entries)} events included in the tree of size {self.cp.size}"

    def linkage(self) -> str:
        # Step 5 (docs/architecture.md, "Lineage events": parent links are the ancestry).
        policy = self.doc.get("policy")
        self.ex = link_roles(self.entries, None if policy is None else policy["activated_index"])
        # An opening opens one of these decisions' commitments; one naming anything else
        # would be carried unread, beside what was checked.
        stray = sorted(set(self.openings) - {e.index for e in self.entries if e.kind == "decision"})
        if stray:
            raise StepError(f"openings: expected the indices of the receipt's decisions, found {stray}")
        return (
            f"execution {self.ex.execution}: {self.ex.terminal.kind} at {self.ex.terminal.index}, "
            f"started at {self.ex.started.index}, decided at {self.ex.decision.index}"
        )

    def warrant_chain(self) -> str:
        # Step 6 (proctor.authorization.warrants.verify_warrant, steps 1-9 there).
        ex = self.ex
        if ex is None:
            raise StepError("no execution")
        tokens: list[str] = self.doc["warrant_chain"]
        if len(tokens) != len(ex.issued):
            raise StepError(
                f"expected one token per warrant.issued event ({len(ex.issued)}), found {len(tokens)}"
            )
        root = load_public_key(ex.key.field("public_key", str))
        measurement = ex.started.event.data["measurement"]
        # Leaf first, so that each ancestor is checked against the request its child made.
        # Each token is verified at the time the log says it was used: its own warrant
        # when the execution started, a parent when the child was decided (the governor
        # verified it then). The times come from the log, so an old receipt still verifies.
        now = max(seconds(ex.started), ex.decision.event.data["now"])
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
                raise StepError(f"warrant_chain[{position}]: {claims.warrant_id} has no warrant.issued event")
            used.add(claims.warrant_id)
            digest = sha256_hex(issued.event.data.get("token_digest"), "warrant.issued token_digest")
            if not hmac.compare_digest(hashlib.sha256(token.encode()).hexdigest(), digest):
                raise StepError(f"warrant_chain[{position}]: its sha256 is not the logged token_digest")
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
                    ("zone", claims.zone in ("", ex.started.event.data.get("zone"))),
                ]
                # What ran is what was authorized: the measured resource and its digest
                # are the warrant's (proctor.verification.measurement, steps 1-4).
                try:
                    check_measurement(
                        measurement,
                        action=claims.action,
                        resource=claims.resource,
                        executable_digest=claims.executable_digest,
                    )
                except IntegrityError as e:
                    raise StepError(
                        f"warrant_chain[{position}] ({claims.warrant_id}) does not cover what ran: {e}"
                    ) from e
            else:
                checks.append(("child's parent", child.parent == claims.warrant_id))
            revealed = self._revealed(decision)
            if revealed is not None:
                # The opened arguments are the ones the warrant binds.
                opened = revealed.get("arguments")
                bound = args_digest(opened if isinstance(opened, dict) else revealed.get("argv", []))
                checks.append(("args_digest", hmac.compare_digest(bound, claims.args_digest)))
            mismatches = [name for name, ok in checks if not ok]
            if mismatches:
                raise StepError(
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
            raise StepError("no execution")
        # Step 7: DSSE protocol "Verify" (the signature over PAE first, only then parse
        # the payload), then in-toto Statement v1 (``_type``, ``subject``, ``predicateType``).
        payload = open_envelope(self.doc["statement"], payload_type=PAYLOAD_TYPE, verifier=verifier)
        statement = loads(payload)
        if type(statement) is not dict or canonicalize(statement) != payload:
            raise StepError("expected the statement as one canonical (RFC 8785) JSON object")
        keys = {"_type", "subject", "predicateType", "predicate"}
        if set(statement) != keys or statement["_type"] != STATEMENT_TYPE:
            raise StepError(f"expected an in-toto Statement v1 with exactly {sorted(keys)}")
        subjects, predicate = subjects_and_predicate(ex, self.entries, cp)
        if statement["subject"] != subjects:
            raise StepError(
                f"the statement's subjects are not the measured executable and outputs: {subjects}"
            )
        kind = statement["predicateType"]
        if kind == PREDICATE_TYPE:
            if statement["predicate"] != predicate:
                raise StepError(f"the statement's predicate differs from the events: expected {predicate}")
            return f"statement signed by the log key; {len(subjects)} subjects and the predicate match"
        if type(kind) is not str or not kind:
            raise StepError(f"expected a predicateType URI, found {kind!r:.80}")
        return f"statement signed by the log key; {len(subjects)} subjects match; predicate {kind} not read"

    def replay_step(self) -> str:
        # Step 8 (docs/architecture.md, "The five principles in the code", 5: a logged
        # decision is replayable).
        ex = self.ex
        if ex is None:
            raise StepError("no execution")
        policy = self.doc.get("policy")
        if policy is None:
            raise StepError("replay needs the policy bundle; the receipt carries none")
        # Imported here: a receipt needs policy only to replay a decision (docs/architecture.md,
        # principle 5), and a verifier that does not replay never loads the Cedar engine.
        from proctor.policy import PolicyBundle, PolicyEngine  # noqa: PLC0415

        bundle = PolicyBundle.from_json(policy["bundle"])
        logged = ex.decision.event.data
        if not hmac.compare_digest(bundle.digest.encode(), ex.decision.field("bundle", str).encode()):
            raise StepError(f"the carried bundle is {bundle.digest}; the decision names {logged['bundle']}")
        if not self.replay:
            return f"bundle {bundle.digest} is the one the decision names (not replayed)"
        logged_request = ex.decision.field("request", dict)
        request = self._revealed(ex.decision)
        if request is None:
            raise StepError("replay needs the decision's arguments; the receipt carries no opening for them")
        decision = PolicyEngine.compile(bundle).replay(request, now=logged["now"])
        if "args_commitment" in logged_request:
            # The logged digest is of the logged (committed) request.
            replayed_digest = "sha256:" + hashlib.sha256(canonicalize(logged_request)).hexdigest()
        else:
            replayed_digest = decision.request_digest
        mismatches = [
            name
            for name, ok in (
                ("decision", ("allow" if decision.allow else "deny") == logged["decision"]),
                ("policies", list(decision.policies) == logged.get("policies")),
                ("obligations", dict(decision.obligations) == logged.get("obligations")),
                ("request_digest", replayed_digest == logged.get("request_digest")),
            )
            if not ok
        ]
        if mismatches:
            raise StepError(
                f"replaying the decision at {ex.decision.index} gives another {', '.join(mismatches)}: "
                f"{decision.reason}"
            )
        return f"decision at {ex.decision.index} replayed under bundle {bundle.digest}: {decision.reason}"

    def witnesses(self) -> str:
        # Step 9 (c2sp.org/tlog-policy): the checkpoint of step 3, with the witnesses'
        # cosignature lines it carries (c2sp.org/tlog-cosignature), meets the quorum.
        if self.verifier is None or self.witness_policy is None:
            raise StepError("no trusted key or no witness policy")
        result = self.witness_policy.check(self.doc["checkpoint"], log=self.verifier)
        if not result.satisfied:
            raise StepError(f"the checkpoint is not witnessed as the policy requires: {result.detail}")
        return result.detail


def check_receipt(
    doc: Any, *, log_key: str, replay: bool = False, witness_policy: WitnessPolicy | None = None
) -> ReceiptReport:
    """Verify a receipt with nothing but the log's verifier key, and say how it went.

    Never raises for bad input: every failure, whatever its cause, is the failing step.
    The steps are numbered in the module docstring; the check stops at the first one
    that fails.

    Args:
        doc: the receipt, as a decoded JSON object or as JSON text.
        log_key: the trusted log verifier key, ``origin+keyid+base64``.
        replay: also re-evaluate the decision with the carried policy bundle (step 8).
        witness_policy: also require the checkpoint's cosignatures to meet this
            policy's quorum (step 9).

    Returns:
        The report: ``ok``, every step run, the failing step, the execution id.
    """
    checker = _Checker(doc, log_key, replay, witness_policy)
    steps = [
        checker.shape,
        checker.log_key_step,
        checker.checkpoint,
        checker.inclusion,
        checker.linkage,
        checker.warrant_chain,
        checker.statement,
        checker.replay_step,
        checker.witnesses,
    ]
    done: list[ReceiptStep] = []
    for number, step in enumerate(steps, 1):
        if number == 8 and not replay and "policy" not in checker.doc:
            continue
        if number == 9 and witness_policy is None:
            break
        try:
            detail = step()
        except Exception as e:  # noqa: BLE001 -- fail closed: any error fails the step, never escapes
            failed = ReceiptStep(number, STEP_NAMES[number], False, describe(e))
            done.append(failed)
            return ReceiptReport(False, tuple(done), failed, _execution_id(checker))
        done.append(ReceiptStep(number, STEP_NAMES[number], True, detail))
    return ReceiptReport(True, tuple(done), None, _execution_id(checker))


def _execution_id(checker: _Checker) -> str | None:
    return None if checker.ex is None else checker.ex.execution


def verify_receipt(
    doc: Any, *, log_key: str, replay: bool = False, witness_policy: WitnessPolicy | None = None
) -> ReceiptReport:
    """Verify a receipt; raise if any step fails.

    Args:
        doc: the receipt, as a decoded JSON object or as JSON text.
        log_key: the trusted log verifier key.
        replay: also re-evaluate the decision (step 8).
        witness_policy: also require the policy's quorum of cosignatures (step 9).

    Returns:
        The report of a receipt that verified.

    Raises:
        VerificationError: naming the failing step's number and name, and why.
    """
    report = check_receipt(doc, log_key=log_key, replay=replay, witness_policy=witness_policy)
    if report.failed is not None:
        f = report.failed
        raise VerificationError(f"receipt verification failed at step {f.number} ({f.name}): {f.detail}")
    return report
