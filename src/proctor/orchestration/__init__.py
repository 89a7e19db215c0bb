"""Layer 6, governance orchestration: witnesses now; several governors later.

What is here (ADR 0014):

- :mod:`.witness` — a C2SP tlog-witness: it cosigns (C2SP tlog-cosignature/v1) a log's
  checkpoint only when it is consistent with the last one it cosigned for that log, and
  raises an alarm on any inconsistency; :mod:`.witness_state` is its durable state,
  :mod:`.witness_dir` its data directory, :mod:`.witness_http` its HTTP service
  (``proctor witness serve``).
- :mod:`.cosigning` — the log's side: collecting cosignatures from the witnesses of a
  policy (``proctor log cosign``) and holding a log to a policy (``proctor log verify
  --witness-policy``).

The formats (cosignatures, policies) are pure and live in :mod:`proctor.lineage`
(:mod:`proctor.lineage.cosignature`, :mod:`proctor.lineage.witness_policy`), so that a
receipt's checker uses them without any of this I/O. Planned: several governor nodes
over one PostgreSQL store, each also a witness of the others' checkpoints (issue 12).

Layering: beside :mod:`proctor.enforcement`, below :mod:`proctor.governor` (which may
compose these parts, as it composes the others) and above the log, the store and the
receipts; it imports no governor or enforcer code.
"""

__all__: list[str] = []
