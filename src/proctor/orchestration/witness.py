"""The witness: C2SP tlog-witness ``add-checkpoint``, answered from durable state.

A witness cosigns a log's checkpoint only when it is consistent with the last checkpoint
it cosigned for that log, so two witnessed checkpoints of one log can never disagree:
a log that shows one history to some and another to others (a fork), or rewrites its
history and re-signs it with its own key, cannot have both views witnessed.

:meth:`Witness.add_checkpoint` takes the request body and the time and returns the
HTTP answer (a refusal is an answer, not an exception). Steps, each citing
c2sp.org/tlog-witness, "add-checkpoint":

1. The body is ``old <size>``, at most 63 base64 hash lines, a blank line, then a
   checkpoint note; every line ends in a newline; at most :data:`MAX_BODY` bytes.
   Otherwise 400.
2. The origin (the checkpoint's first line) is a log this witness trusts: else 404.
3. A signature by one of that log's keys verifies (others are ignored); a line by a
   trusted key that does not verify, or no trusted signature: 403. A request that
   carries a submitter signature (the ``Proctor-Log-Signature`` header,
   :func:`sign_submission`: the log's key over this witness's name and the body's
   SHA-256) is *from the log*; one whose signature verifies under none of the log's
   keys: 403. Without the header the request is anonymous, as the spec allows.
4. The body is a C2SP checkpoint of that origin: else 400. ``old`` is at most its
   size: else 400.
5. ``old`` is the size of the latest checkpoint cosigned for the origin (0 if none):
   else 409, body ``<size>\\n``, ``Content-Type: text/x.tlog.size``.
6. A size-0 checkpoint has the empty tree's root; from ``old`` 0 the proof is empty:
   else 422.
7. The proof is an RFC 9162 §2.1.4 consistency proof from the cosigned (size, root) to
   the new one (for equal sizes: no hashes and the same root): else 422 and an ALARM —
   a ``witness.alarm`` event, a counted metric, ``/readyz`` not ready until an
   operator clears it. Two roots for one size are a ``fork`` (evidence in itself: both
   are signed by the log). A proof that fails from the cosigned checkpoint is
   ``inconsistent-proof`` when the request is from the log; an anonymous one gets 422
   without an alarm (``bad-proof``): anyone can replay a published checkpoint with a
   garbage proof, and an alarm stops a node (false alarms, ADR 0014 addendum).
8. The new checkpoint is recorded — atomically with the check of step 5, and durably —
   with a ``witness.cosigned`` event (:meth:`WitnessState.advance`); a record that moved
   meanwhile is a 409. Only then is it cosigned (tlog-cosignature/v1, Ed25519, the
   time given, never zero) and the signature line returned: 200.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from proctor.errors import CheckpointError, NoteError, ProofError, StoreConflictError
from proctor.lineage.checkpoint import Checkpoint
from proctor.lineage.cosignature import Cosigner, cosign
from proctor.lineage.events import Event
from proctor.lineage.merkle import EMPTY_ROOT, HASH_SIZE, verify_consistency
from proctor.note import NoteSignature, NoteSigner, NoteVerifier, open_note
from proctor.orchestration.witness_state import LatestCheckpoint, WitnessState

__all__ = [
    "MAX_BODY",
    "MAX_PROOF_LINES",
    "SIZE_CONTENT_TYPE",
    "SUBMITTER_HEADER",
    "submission_message",
    "sign_submission",
    "AddCheckpointRequest",
    "WitnessAnswer",
    "Witness",
]

MAX_BODY = 16 << 10
"""The largest add-checkpoint body accepted (63 proof lines and a checkpoint with 100
signatures fit), so that the evidence of an alarm fits in one 64 KiB event."""
MAX_PROOF_LINES = 63
SIZE_CONTENT_TYPE = "text/x.tlog.size"
SUBMITTER_HEADER = "proctor-log-signature"
"""The request header that says the submitter holds the log's key (step 3); not C2SP."""
_SUBMISSION = "proctor tlog-witness submission/v1\n"
_TEXT = "text/plain; charset=utf-8"
_OLD = re.compile(r"old (0|[1-9][0-9]{0,19})")


@dataclass(frozen=True)
class AddCheckpointRequest:
    """A parsed add-checkpoint body: the old size, the proof, and the checkpoint note."""

    old_size: int
    proof: tuple[bytes, ...]
    note: str

    @classmethod
    def from_bytes(cls, body: bytes) -> AddCheckpointRequest:
        """Parse the request body (step 1).

        Raises:
            ValueError: it is not ``old N``, hash lines, a blank line and a note.
        """
        if len(body) > MAX_BODY:
            raise ValueError(f"expected at most {MAX_BODY} bytes, found {len(body)}")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"expected UTF-8: {e}") from e
        head, sep, note = text.partition("\n\n")
        if not sep:
            raise ValueError("expected the old size and proof lines, a blank line, then a checkpoint")
        lines = head.split("\n")
        match = _OLD.fullmatch(lines[0])
        if match is None:
            raise ValueError(f"expected 'old <size>' as the first line, found {lines[0][:40]!r}")
        if len(lines) - 1 > MAX_PROOF_LINES:
            raise ValueError(f"expected at most {MAX_PROOF_LINES} proof lines, found {len(lines) - 1}")
        proof = []
        for i, line in enumerate(lines[1:], 1):
            try:
                raw = base64.b64decode(line, validate=True)
            except (binascii.Error, ValueError) as e:
                raise ValueError(f"proof line {i}: expected base64, found {line[:60]!r}") from e
            if len(raw) != HASH_SIZE:
                raise ValueError(f"proof line {i}: expected a {HASH_SIZE}-byte hash, found {len(raw)} bytes")
            proof.append(raw)
        if not note.endswith("\n"):
            raise ValueError("expected the checkpoint note to end in a newline")
        return cls(int(match.group(1)), tuple(proof), note)


@dataclass(frozen=True)
class WitnessAnswer:
    """The HTTP answer to one add-checkpoint request.

    Attributes:
        status: the HTTP status the spec prescribes.
        body: the response body.
        content_type: its media type.
        outcome: a short label for metrics and logs (``cosigned``, ``conflict`` …).
        alarm: the id of the alarm this request raised, if it raised one.
    """

    status: int
    body: bytes
    content_type: str = _TEXT
    outcome: str = "refused"
    alarm: int | None = None


def submission_message(witness: str, body: bytes) -> bytes:
    """What a submitter signs with the log's key for ``witness`` (step 3): a fixed first
    line (no checkpoint has it: a checkpoint's second line is its size), the witness's
    name (an answer for one witness cannot be replayed to another) and the body's SHA-256."""
    return f"{_SUBMISSION}{witness}\n{hashlib.sha256(body).hexdigest()}\n".encode()


def sign_submission(signer: NoteSigner, witness: str, body: bytes) -> str:
    """The :data:`SUBMITTER_HEADER` value for ``body`` sent to ``witness``: base64 of the
    log key's Ed25519 signature over :func:`submission_message`."""
    return base64.b64encode(signer.sign(submission_message(witness, body))).decode()


def _refuse(status: int, outcome: str, message: str) -> WitnessAnswer:
    return WitnessAnswer(status, (message + "\n").encode(), _TEXT, outcome)


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _signature_line(sig: NoteSignature) -> str:
    return f"\u2014 {sig.name} {base64.b64encode(sig.key_id + sig.signature).decode()}\n"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Witness:
    """A witness over its state and cosigner key; :meth:`add_checkpoint` is thread-safe."""

    def __init__(self, state: WitnessState, cosigner: Cosigner) -> None:
        """Serve with ``state`` and sign with ``cosigner`` (its name is the witness's)."""
        self.state = state
        self.cosigner = cosigner
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """The witness's name (its key name)."""
        return self.cosigner.name

    def add_checkpoint(self, body: bytes, *, now: float, submitter: str | None = None) -> WitnessAnswer:
        """Answer one add-checkpoint request (steps 1-8 of the module docstring).

        Args:
            body: the request body.
            now: the current POSIX time (the cosignature's timestamp, in seconds).
            submitter: the :data:`SUBMITTER_HEADER` value, if the request had one.

        Returns:
            The answer: 200 with the cosignature line, or the refusal the spec prescribes.

        Raises:
            StoreError: the state cannot be read or written (nothing was cosigned).
        """
        # Step 1
        try:
            request = AddCheckpointRequest.from_bytes(body)
        except ValueError as e:
            return _refuse(400, "malformed", f"malformed add-checkpoint request: {e}")
        # Step 2
        origin = request.note.split("\n", 1)[0]
        keys = self.state.log_keys(origin)
        if not keys:
            return _refuse(404, "unknown-log", f"unknown log origin {origin[:200]!r}")
        # Step 3
        try:
            opened = open_note(request.note, keys)
        except NoteError as e:
            return _refuse(403, "bad-signature", f"the checkpoint is not signed by the log: {e}")
        from_log = submitter is not None
        if submitter is not None and not self._from_log(keys, body, submitter):
            return _refuse(
                403, "bad-submitter", f"the {SUBMITTER_HEADER} header verifies under no key of the log"
            )
        # Step 4
        try:
            checkpoint = Checkpoint.from_text(opened.text)
        except CheckpointError as e:
            return _refuse(400, "malformed", f"malformed checkpoint: {e}")
        if checkpoint.origin != origin:
            return _refuse(400, "malformed", "the checkpoint's origin is not its first line")
        if request.old_size > checkpoint.size:
            return _refuse(
                400, "malformed", f"old size {request.old_size} is beyond the checkpoint's {checkpoint.size}"
            )
        with self._lock:
            return self._cosign(request, checkpoint, opened.text, opened.verified, now, from_log=from_log)

    def _from_log(self, keys: list[NoteVerifier], body: bytes, submitter: str) -> bool:
        try:
            signature = base64.b64decode(submitter, validate=True)
        except (binascii.Error, ValueError):
            return False
        message = submission_message(self.name, body)
        return any(key.verify(message, signature) for key in keys)

    def _cosign(
        self,
        request: AddCheckpointRequest,
        checkpoint: Checkpoint,
        text: str,
        log_signatures: tuple[NoteSignature, ...],
        now: float,
        *,
        from_log: bool,
    ) -> WitnessAnswer:
        origin = checkpoint.origin
        latest = self.state.latest(origin)
        cosigned_size = 0 if latest is None else latest.size
        # Step 5
        if request.old_size != cosigned_size:
            return WitnessAnswer(409, f"{cosigned_size}\n".encode(), SIZE_CONTENT_TYPE, "conflict")
        # Step 6
        if checkpoint.size == 0 and not hmac.compare_digest(checkpoint.root_hash, EMPTY_ROOT):
            return _refuse(422, "bad-proof", "a checkpoint of size 0 must have the empty tree's root")
        if request.old_size == 0 and request.proof:
            return _refuse(422, "bad-proof", "expected no proof lines from old size 0")
        # Step 7
        if latest is not None:
            try:
                verify_consistency(
                    latest.size, checkpoint.size, latest.root, checkpoint.root_hash, request.proof
                )
            except ProofError as e:
                fork = latest.size == checkpoint.size and e.reason == "root-mismatch"
                if fork or from_log:
                    return self._alarm(latest, checkpoint, request, e, now)
                return _refuse(
                    422,
                    "bad-proof",
                    f"no valid consistency proof from the cosigned size {latest.size} to {checkpoint.size}: "
                    f"{e} (an anonymous request: no alarm is raised; proctor's submitters sign with the "
                    f"log's key in {SUBMITTER_HEADER})",
                )
        # Step 8
        timestamp = int(now)
        if timestamp <= 0:
            return _refuse(500, "clock", "the witness's clock is not set")
        cosignature = cosign(text, self.cosigner, timestamp=timestamp)
        note = text + "\n" + "".join(_signature_line(s) for s in log_signatures) + cosignature.to_line()
        event = Event.from_dict(
            {
                "v": 1,
                "type": "witness.cosigned",
                "time": _rfc3339(now),
                "node": self.name,
                "origin": origin,
                "size": checkpoint.size,
                "root_hash": _b64(checkpoint.root_hash),
                "old_size": request.old_size,
                "cosignature_time": timestamp,
            }
        )
        new = LatestCheckpoint(origin, checkpoint.size, checkpoint.root_hash, note, timestamp)
        try:
            self.state.advance(latest, new, event)
        except StoreConflictError:
            now_latest = self.state.latest(origin)
            size = 0 if now_latest is None else now_latest.size
            return WitnessAnswer(409, f"{size}\n".encode(), SIZE_CONTENT_TYPE, "conflict")
        return WitnessAnswer(200, cosignature.to_line().encode(), _TEXT, "cosigned")

    def _alarm(
        self,
        latest: LatestCheckpoint,
        checkpoint: Checkpoint,
        request: AddCheckpointRequest,
        error: ProofError,
        now: float,
    ) -> WitnessAnswer:
        fork = latest.size == checkpoint.size and error.reason == "root-mismatch"
        reason = "fork" if fork else "inconsistent-proof"
        if fork:
            detail = (
                f"two checkpoints of size {checkpoint.size} signed by the log with different roots: "
                f"{_b64(latest.root)} (cosigned) and {_b64(checkpoint.root_hash)}"
            )
        else:
            detail = (
                f"no valid consistency proof from the cosigned size {latest.size} to "
                f"{checkpoint.size}: {error}"
            )
        evidence: dict[str, Any] = {
            "v": 1,
            "type": "witness.alarm",
            "time": _rfc3339(now),
            "node": self.name,
            "origin": checkpoint.origin,
            "reason": reason,
            "detail": detail,
            "cosigned": {"size": latest.size, "root_hash": _b64(latest.root), "checkpoint": latest.note},
            "submitted": {
                "size": checkpoint.size,
                "root_hash": _b64(checkpoint.root_hash),
                "checkpoint": request.note,
                "old_size": request.old_size,
                "proof": [_b64(h) for h in request.proof],
            },
        }
        alarm = self.state.raise_alarm(checkpoint.origin, Event.from_dict(evidence))
        return WitnessAnswer(
            422,
            f"inconsistent with the checkpoint this witness cosigned ({reason}): {detail}\n".encode(),
            _TEXT,
            reason,
            alarm,
        )
