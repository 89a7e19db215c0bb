"""Building a receipt: I/O over a :class:`~proctor.lineage.log.Log` (reading its
leaves, proofs and latest checkpoint), then signing and checking the result with
:func:`proctor.receipts.check.verify_receipt`, so that a receipt that would not verify
is never handed out."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from proctor.canonical import canonicalize
from proctor.errors import VerificationError
from proctor.lineage.checkpoint import open_checkpoint
from proctor.lineage.dsse import sign_envelope
from proctor.lineage.events import Event
from proctor.lineage.merkle import leaf_hash
from proctor.note import NoteSigner
from proctor.receipts._parts import Entry, StepError, link_roles, subjects_and_predicate
from proctor.receipts.check import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    RECEIPT_VERSION,
    STATEMENT_TYPE,
    STEP_NAMES,
    verify_receipt,
)

if TYPE_CHECKING:
    # Only for the annotation: importing the log loads the store, which a checker of
    # receipts (``proctor run``) never needs.
    from proctor.lineage.log import Log

__all__ = ["build_receipt"]


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
    openings: Mapping[int, Mapping[str, Any]] | None = None,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """Assemble, sign and self-verify the receipt of one execution.

    The checkpoint is the log's latest, or ``checkpoint``; every event is proven under
    it, so the caller must have committed the terminal event first. The receipt is verified before it
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
        openings: decision index → the opening of its argument commitment
            (:class:`~proctor.policy.commitment.ArgumentOpening` JSON), so that the
            holder can prove and replay what ran.
        checkpoint: a signed checkpoint note of this log to prove the events under
            instead of the latest, as it is: a witnessed one carries its witnesses'
            cosignature lines (C2SP tlog-cosignature), which ride in the receipt
            (``proctor verify --witness-policy``, step 9).

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
    note = log.checkpoint() if checkpoint is None else checkpoint
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
    if openings:
        doc["openings"] = [{"index": i, "opening": dict(openings[i])} for i in sorted(openings)]
    if policy_bundle is not None:
        from proctor.policy import PolicyBundle  # noqa: PLC0415 -- see proctor.receipts.check, replay_step

        content = policy_bundle.get("bundle") if "signature" in policy_bundle else policy_bundle
        doc["policy"] = {
            "bundle": PolicyBundle.from_json(content or {}).to_json(),
            "activated_index": policy_index,
        }
    if statement is None:
        entries = [Entry(i, Event.from_bytes(leaves[i], strict=True), leaf_hash(leaves[i])) for i in indices]
        try:
            execution = link_roles(entries, policy_index)
        except StepError as e:
            raise VerificationError(f"receipt verification failed at step 5 ({STEP_NAMES[5]}): {e}") from e
        subjects, predicate = subjects_and_predicate(execution, entries, cp)
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
