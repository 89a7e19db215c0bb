"""The log's side of witnessing: collecting cosignatures, and checking that a log is witnessed.

:func:`collect_cosignatures` (``proctor log cosign``) submits the log's latest stored
checkpoint to every witness of a policy that has a URL, with a consistency proof from
the last checkpoint that witness cosigned (c2sp.org/tlog-witness, "add-checkpoint"),
and stores each valid cosignature beside the checkpoint (the ``cosignatures`` table of
the log's database). Steps per witness:

1. ``old`` is the largest size this log holds a cosignature of that witness for (0
   when none; a caller that remembers it passes ``old_sizes``, sparing a read of every
   stored cosignature); the proof is the RFC 9162 consistency proof from ``old``.
2. On 409 the witness says which size it last cosigned: beyond this log's size, the
   log lost entries or another copy of it grew (reported, nothing retried); otherwise
   the request is sent again from that size (at most twice).
3. On 200 each returned line by the witness's policy key is verified as a
   tlog-cosignature/v1 of this checkpoint before it is stored; lines by other keys are
   ignored (the spec's "MUST ignore any cosignatures from unknown keys").

:func:`check_witnessed` (``proctor log verify --witness-policy``) holds a log to a
policy, from its own database:

1. Every stored cosignature by a policy witness verifies against the stored checkpoint
   of its size. One that does not is a checkpoint re-signed over another tree after it
   was witnessed: the history was rewritten (a fork).
2. The latest checkpoint carries cosignatures meeting the quorum; otherwise the report
   names the largest checkpoint that does, if any, and fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from proctor.errors import NoteError, ProctorError, StoreError, VerificationError
from proctor.lineage.checkpoint import Checkpoint, open_checkpoint
from proctor.lineage.cosignature import Cosignature
from proctor.lineage.log import Log
from proctor.lineage.witness_policy import PolicyWitness, QuorumResult, WitnessPolicy
from proctor.note import NoteSigner, NoteVerifier, open_note
from proctor.orchestration.witness import SIZE_CONTENT_TYPE, SUBMITTER_HEADER, sign_submission
from proctor.store.cosignatures import StoredCosignature, WitnessedLogStore
from proctor.store.sqlite import SQLiteStore

__all__ = [
    "HTTPResponse",
    "HTTPClient",
    "WitnessOutcome",
    "CosignReport",
    "WitnessedReport",
    "cosigned_note",
    "collect_cosignatures",
    "check_witnessed",
    "open_witnessed_store",
]

_RETRIES = 2


class HTTPResponse(Protocol):
    """What :func:`collect_cosignatures` reads of an answer (an ``httpx.Response``)."""

    @property
    def status_code(self) -> int:
        """The HTTP status."""
        ...

    @property
    def text(self) -> str:
        """The body, decoded."""
        ...

    @property
    def headers(self) -> Mapping[str, str]:
        """The header fields."""
        ...


class HTTPClient(Protocol):
    """What :func:`collect_cosignatures` needs of an HTTP client (an ``httpx.Client``)."""

    def post(self, url: str, *, content: bytes, headers: Mapping[str, str]) -> HTTPResponse:
        """``POST`` ``content`` to ``url`` with ``headers``."""
        ...


@dataclass(frozen=True)
class WitnessOutcome:
    """What one witness answered.

    Attributes:
        witness: its name in the policy.
        url: where it was asked ("" when the policy gives none).
        outcome: ``cosigned``, ``no-url``, ``unreachable`` (no answer, or a 5xx),
            ``refused`` (400, 403, 404 …), ``inconsistent`` (422: it holds a checkpoint
            this log is not consistent with), ``ahead`` (it cosigned a larger tree of
            this log than the log holds), or ``invalid`` (200 without a valid
            cosignature by its key).
        status: the HTTP status of the last answer (0 when there was none).
        detail: what happened, in one sentence.
        timestamp: the cosignature's time, when one was stored.
    """

    witness: str
    url: str
    outcome: str
    status: int
    detail: str
    timestamp: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The outcome as JSON."""
        return {
            "witness": self.witness,
            "url": self.url,
            "outcome": self.outcome,
            "status": self.status,
            "detail": self.detail,
            "timestamp": self.timestamp,
        }


@dataclass(frozen=True)
class CosignReport:
    """The result of :func:`collect_cosignatures`: each witness's answer and the quorum."""

    size: int
    witnesses: tuple[WitnessOutcome, ...]
    quorum: QuorumResult
    checkpoint: str

    def to_json(self) -> dict[str, Any]:
        """``{"size", "quorum", "witnesses": [...], "checkpoint"}``."""
        return {
            "size": self.size,
            "quorum": self.quorum.to_json(),
            "witnesses": [w.to_json() for w in self.witnesses],
            "checkpoint": self.checkpoint,
        }


@dataclass(frozen=True)
class WitnessedReport:
    """The result of :func:`check_witnessed`.

    Attributes:
        ok: no cosignature contradicts the log and its latest checkpoint meets the quorum.
        size: the latest checkpoint's size.
        witnessed_size: the largest checkpoint meeting the quorum (``None``: none does).
        witnesses: who cosigned the latest checkpoint (policy name → time).
        detail: one sentence.
    """

    ok: bool
    size: int
    witnessed_size: int | None
    detail: str
    witnesses: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON."""
        return {
            "ok": self.ok,
            "size": self.size,
            "witnessed_size": self.witnessed_size,
            "witnesses": self.witnesses,
            "detail": self.detail,
        }


def open_witnessed_store(url: str | None, db_path: Path) -> WitnessedLogStore:
    """The log's database, where cosignatures are kept: the PostgreSQL database at ``url``,
    or the data directory's file ``db_path`` (``url`` ``None``).

    Raises:
        StoreError: it cannot be opened (no database, another schema version, an
            unreachable server, a URL that is not PostgreSQL's: only its scheme is shown).
    """
    if url is None:
        if not db_path.exists():
            raise StoreError(
                f"no database at {db_path}: this data directory has no store of its own; if its "
                "store is PostgreSQL, name it with --store URL (or PROCTOR_STORE)"
            )
        return SQLiteStore(db_path)
    from proctor.store.open import check_store_url  # noqa: PLC0415
    from proctor.store.postgres import PostgresLogStore  # noqa: PLC0415 - psycopg only with a URL

    return PostgresLogStore(check_store_url(url), pool_size=2)


def cosigned_note(note: str, cosignatures: Sequence[StoredCosignature]) -> str:
    """A stored checkpoint note with its stored cosignature lines appended."""
    return note + "".join(c.line for c in cosignatures)


def _latest_checkpoint(store: WitnessedLogStore, verifier: NoteVerifier) -> tuple[str, Checkpoint]:
    latest = store.latest_checkpoint()
    if latest is None:
        raise VerificationError("the log holds no checkpoint")
    note = latest[1]
    return note, open_checkpoint(note, verifier)


def _old_size(store: WitnessedLogStore, witness: PolicyWitness, size: int) -> int:
    sizes = [
        c.size
        for c in store.cosignatures()
        if c.name == witness.key.name and c.key_id == witness.key.key_id and c.size <= size
    ]
    return max(sizes, default=0)


def _submit_one(
    log: Log,
    store: WitnessedLogStore,
    witness: PolicyWitness,
    note: str,
    checkpoint: Checkpoint,
    *,
    client: HTTPClient,
    old: int | None = None,
    signer: NoteSigner | None = None,
) -> WitnessOutcome:
    name, url = witness.name, witness.url
    if not url:
        return WitnessOutcome(name, url, "no-url", 0, "the policy gives no URL for this witness")
    if old is None or not 0 <= old <= checkpoint.size:
        old = _old_size(store, witness, checkpoint.size)
    status = 0
    for _attempt in range(_RETRIES + 1):
        proof = log.consistency_proof(old, checkpoint.size)["hashes"] if 0 < old < checkpoint.size else []
        body = f"old {old}\n" + "".join(f"{h}\n" for h in proof) + "\n" + note
        raw = body.encode()
        headers = {} if signer is None else {SUBMITTER_HEADER: sign_submission(signer, witness.key.name, raw)}
        try:
            answer = client.post(url.rstrip("/") + "/add-checkpoint", content=raw, headers=headers)
        except httpx.HTTPError as e:
            return WitnessOutcome(name, url, "unreachable", 0, f"no answer from {url}: {e}")
        status = answer.status_code
        text = answer.text[:500].strip()
        if status == 409 and answer.headers.get("content-type", "").startswith(SIZE_CONTENT_TYPE):
            try:
                theirs = int(answer.text.strip())
            except ValueError:
                return WitnessOutcome(name, url, "refused", status, f"409 without a size: {text!r}")
            if theirs > checkpoint.size:
                return WitnessOutcome(
                    name,
                    url,
                    "ahead",
                    status,
                    f"the witness cosigned size {theirs} of this log, which holds {checkpoint.size}: "
                    "entries were lost, or another copy of the log grew (a fork)",
                )
            old = theirs
            continue
        if status == 200:
            return _store_answer(store, witness, checkpoint, answer.text, url)
        if status == 422:
            return WitnessOutcome(name, url, "inconsistent", status, text)
        outcome = "unreachable" if status >= 500 else "refused"
        return WitnessOutcome(name, url, outcome, status, f"HTTP {status}: {text}")
    return WitnessOutcome(name, url, "refused", status, "the witness's size kept moving (409 each time)")


def _store_answer(
    store: WitnessedLogStore, witness: PolicyWitness, checkpoint: Checkpoint, text: str, url: str
) -> WitnessOutcome:
    body = checkpoint.to_text()
    for line in text.splitlines():
        try:
            cosignature = Cosignature.from_line(line)
        except NoteError:
            continue  # not a cosignature line of the kind we trust: ignored, as unknown keys are
        if witness.key.verify(body, cosignature):
            store.put_cosignature(
                StoredCosignature(
                    checkpoint.size, cosignature.name, cosignature.key_id, cosignature.timestamp, line + "\n"
                )
            )
            return WitnessOutcome(
                witness.name, url, "cosigned", 200, f"cosigned size {checkpoint.size}", cosignature.timestamp
            )
    return WitnessOutcome(
        witness.name, url, "invalid", 200, "the answer holds no valid cosignature by the witness's key"
    )


def collect_cosignatures(
    log: Log,
    store: WitnessedLogStore,
    policy: WitnessPolicy,
    *,
    client: HTTPClient,
    old_sizes: Mapping[str, int] | None = None,
    signer: NoteSigner | None = None,
) -> CosignReport:
    """Submit the log's latest stored checkpoint to the policy's witnesses; store what they sign.

    Args:
        log: the log (its proofs).
        store: the log's database, where cosignatures are kept.
        policy: the witnesses (those with a URL are asked) and the quorum.
        client: the HTTP client (its timeouts apply to each witness).
        old_sizes: policy witness name → the largest size it cosigned, as the caller
            remembers it (a witness not named here, or a size beyond the checkpoint, is
            looked up in ``store``). A wrong size costs one 409 round trip, no more.
        signer: the log's key: each request then says it is from the log (the
            ``Proctor-Log-Signature`` header), so a witness raises an alarm on a bad
            proof it sends (an anonymous one only gets 422).

    Returns:
        Each witness's outcome, and the quorum over the cosignatures now stored.

    Raises:
        VerificationError: the policy does not list this log, or the stored checkpoint
            does not verify.
        StoreError: a cosignature cannot be stored.
    """
    note, checkpoint = _latest_checkpoint(store, log.verifier)
    policy.check(note, log=log.verifier)  # the policy must accept this log's key
    outcomes = tuple(
        _submit_one(
            log, store, w, note, checkpoint, client=client, old=(old_sizes or {}).get(w.name), signer=signer
        )
        for w in policy.witnesses.values()
    )
    cosigned = cosigned_note(note, store.cosignatures(checkpoint.size))
    return CosignReport(checkpoint.size, outcomes, policy.check(cosigned, log=log.verifier), cosigned)


def check_witnessed(
    store: WitnessedLogStore, verifier: NoteVerifier, policy: WitnessPolicy
) -> WitnessedReport:
    """Hold the log in ``store`` to ``policy`` (steps 1-2 of the module docstring).

    Never raises for what it finds: a contradiction or a missing quorum is a report
    with ``ok`` false.

    Raises:
        StoreError: the database cannot be read.
    """
    try:
        note, latest = _latest_checkpoint(store, verifier)
        policy.check(note, log=verifier)  # step 0: the policy accepts this log
    except ProctorError as e:
        return WitnessedReport(False, 0, None, f"the log cannot be held to the witness policy: {e}")
    keys = {(w.key.name, w.key.key_id): w for w in policy.witnesses.values()}
    by_size: dict[int, list[StoredCosignature]] = {}
    for c in store.cosignatures():
        by_size.setdefault(c.size, []).append(c)
    # Step 1
    for size, rows in sorted(by_size.items()):
        stored = store.checkpoint_at(size)
        trusted = [c for c in rows if (c.name, c.key_id) in keys]
        if not trusted:
            continue
        if stored is None:
            return WitnessedReport(
                False,
                latest.size,
                None,
                f"witnesses cosigned a checkpoint of size {size}, but the log holds none of that size: "
                "its history was rewritten",
            )
        body = open_note(stored, [verifier]).text
        for c in trusted:
            try:
                valid = keys[(c.name, c.key_id)].key.verify(body, Cosignature.from_line(c.line))
            except NoteError:
                valid = False
            if not valid:
                return WitnessedReport(
                    False,
                    latest.size,
                    None,
                    f"the cosignature of witness {keys[(c.name, c.key_id)].name} on the checkpoint of "
                    f"size {size} does not verify: that checkpoint was re-signed over another tree "
                    "after it was witnessed (the history was rewritten: a fork)",
                )
    # Step 2
    witnessed: int | None = None
    for size in sorted(by_size, reverse=True):
        stored = store.checkpoint_at(size)
        if stored is not None and policy.check(cosigned_note(stored, by_size[size]), log=verifier).satisfied:
            witnessed = size
            break
    result = policy.check(cosigned_note(note, by_size.get(latest.size, [])), log=verifier)
    cosigners = {name: c.timestamp for name, c in sorted(result.cosigned.items())}
    if result.satisfied:
        return WitnessedReport(True, latest.size, latest.size, result.detail, cosigners)
    if witnessed is None:
        detail = f"{result.detail}; no checkpoint of this log meets the quorum"
    else:
        detail = (
            f"{result.detail}; the largest witnessed checkpoint is size {witnessed}, "
            f"{latest.size - witnessed} entries after it are not witnessed (proctor log cosign)"
        )
    return WitnessedReport(False, latest.size, witnessed, detail, cosigners)
