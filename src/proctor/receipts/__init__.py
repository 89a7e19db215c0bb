"""Receipts: the self-contained JSON that proves one execution, verifiable offline.

A receipt needs nothing but the log's verifier key to check. Version 1::

    {"v": 1,
     "checkpoint": "<C2SP signed note of a tlog-checkpoint>",
     "log_key": "<origin>+<key id>+<base64>",
     "events": [{"leaf_index": N, "leaf": "<base64 canonical event>", "hashes": ["<base64>", ...]}, ...],
     "warrant_chain": ["<Biscuit token>", ...],
     "statement": <DSSE envelope of an in-toto Statement v1>,
     "policy": {"bundle": <PolicyBundle JSON>, "activated_index": N},     (optional)
     "openings": [{"index": N, "opening": <ArgumentOpening JSON>}, ...]}  (optional)

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
- ``openings`` open the argument commitments of decisions (by log index), so that the
  holder can prove and replay what ran (:mod:`proctor.policy.commitment`); each names a
  decision of the receipt, at most once.

Layering: a receipt is where all the evidence meets — inclusion proofs (lineage), the
warrant chain (authorization), the measurement (verification) and, for replay, the
policy bundle — so this package sits above all four, and ``proctor.lineage`` knows
nothing of it. :mod:`.check` is pure (no I/O, no clock); :mod:`.build` is I/O over a
:class:`~proctor.lineage.log.Log`. The verification steps are numbered in :mod:`.check`.

What a receipt cannot prove: that nothing else happened. The log operator (who holds
the key) could leave out an ``execution.verified`` event, or a revocation; a receipt
proves that what it shows is in the log, in that order, under a signed checkpoint.
Consistency with later checkpoints is for witnesses (``proctor.orchestration``).
"""

from proctor.receipts.build import build_receipt
from proctor.receipts.check import (
    MAX_RECEIPT_BYTES,
    MAX_RECEIPT_EVENTS,
    MAX_WARRANT_CHAIN,
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    RECEIPT_VERSION,
    STATEMENT_TYPE,
    STEP_NAMES,
    ReceiptReport,
    ReceiptStep,
    check_receipt,
    verify_receipt,
)

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
