"""Fuzz receipts (``proctor.receipts.check``), the JSON document a third party checks
with ``proctor verify`` and nothing but the log's key.

``check_receipt`` documents that it never raises for bad input: every failure is a
failing step. So any exception out of it is a crash. Oracles:

- a receipt that verifies under the test log key says what a receipt the log really
  issued says (one of the seeds): the same checkpoint text, the same events with the
  same proofs, the same warrant chain, the same signed statement, the same policy, and
  only openings it carried, each once (dropping optional openings, adding signatures
  by other keys or reformatting the JSON are the only changes that may still verify);
- a failing step names why in proctor's terms: an exception of another kind (a
  ``TypeError``, a ``KeyError``) caught inside a step is an input that slipped past the
  shape checks, and is reported too.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson

from fuzz.fuzz_support import CORPUS, check, json_mutator
from proctor.receipts import check_receipt

__all__ = ["INSTRUMENT", "LOG_KEY", "mutate", "one_input", "semantics"]

INSTRUMENT = (
    "proctor.receipts",
    "proctor.lineage",
    "proctor.note",
    "proctor.canonical",
    "proctor.authorization",
    "proctor.verification",
    "proctor.policy.commitment",
)
"""The modules atheris instruments for coverage (run_harness.py reads this line)."""

LOG_KEY = (CORPUS.parent / "keys" / "receipt-log-key.txt").read_text().strip()
"""The verifier key of the log the seed receipts came from (its signing key is gone)."""
mutate = json_mutator(share=0.7)
_FOREIGN = ("TypeError", "KeyError", "AttributeError", "IndexError", "ValueError", "UnicodeError")


def semantics(doc: dict[str, Any]) -> tuple[Any, ...]:
    """What a receipt says, leaving out what may change without changing that: JSON
    formatting, signatures by other keys, and the openings (compared separately)."""
    note = doc["checkpoint"]
    statement = doc["statement"]
    return (
        note[: note.rfind("\n\n") + 1],
        [(e["leaf_index"], e["leaf"], e["hashes"]) for e in doc["events"]],
        doc["warrant_chain"],
        (statement["payloadType"], statement["payload"]),
        doc.get("policy"),
    )


def _openings(doc: dict[str, Any]) -> list[tuple[int, Any]]:
    return [(o["index"], o["opening"]) for o in doc.get("openings", [])]


@cache
def _seeds() -> list[tuple[tuple[Any, ...], list[tuple[int, Any]]]]:
    found = []
    for path in sorted((CORPUS / "receipt").iterdir()):
        raw = path.read_bytes()
        if check_receipt(raw, log_key=LOG_KEY).ok:
            doc = orjson.loads(raw)
            found.append((semantics(doc), _openings(doc)))
    return found


def one_input(data: bytes) -> None:
    """One input: a receipt as JSON text, checked with the test log key."""
    report = check_receipt(data, log_key=LOG_KEY)
    if not report.ok:
        failed = report.failed
        check(failed is not None, "a report that is not ok names no failing step")
        detail = failed.detail if failed is not None else ""
        check(
            not detail.startswith(tuple(f"{name}:" for name in _FOREIGN)),
            f"step {failed.number if failed else '?'} failed on an unexpected exception: {detail[:300]}",
        )
        return
    doc = orjson.loads(data)
    said, opened = semantics(doc), _openings(doc)
    for seed_said, seed_opened in _seeds():
        indices = [i for i, _ in opened]
        if said == seed_said and len(set(indices)) == len(indices) and all(o in seed_opened for o in opened):
            return
    check(False, "a receipt verified that says what no receipt of the test log says")
