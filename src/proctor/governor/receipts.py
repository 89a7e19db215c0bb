"""Building an execution's receipt from the governor's log and state (I/O over the
log: :mod:`proctor.receipts.build`; checking one is pure: :mod:`proctor.receipts.check`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from proctor.errors import PrincipalError
from proctor.receipts import build_receipt

if TYPE_CHECKING:
    from proctor.governor.host import ExecutionHost

__all__ = ["execution_receipt"]


def execution_receipt(gov: ExecutionHost, execution_id: str) -> dict[str, Any]:
    """The execution's self-contained, offline-verifiable receipt."""
    record = gov.state.execution(execution_id)
    if record is None:
        raise PrincipalError(f"no execution {execution_id!r}")
    chain = list(reversed(gov.state.warrant_chain(record["warrant"])))
    tokens = []
    indices: list[int] = []
    for wid in chain[:-1]:  # ancestors' decisions and issuance too
        w = gov.state.warrant(wid)
        if w is not None:
            tokens.append(str(w["token"]))
            indices += [int(w["decision_index"]), int(w["issued_index"])]
    own = gov.state.warrant(record["warrant"])
    if own is not None:
        tokens.append(str(own["token"]))
    indices += list(record["indices"])
    key_index = int(gov.state.meta("warrant_key_index") or 0)
    decision = orjson.loads(gov.log.leaf(int(record["indices"][0])))
    bundle_doc, policy_index = None, None
    bundle = gov.state.bundle(str(decision.get("bundle", "")))
    if bundle is not None:
        bundle_doc = orjson.loads(bundle)
        policy_index = gov.state.bundle_index(str(decision["bundle"]))
    openings = {}
    for index in indices:
        opening = gov.state.opening(index)  # decisions only: other events have none
        if opening is not None:
            openings[index] = opening
    return build_receipt(
        gov.log,
        openings=openings,
        execution_indices=indices,
        warrant_tokens=tokens,
        key_index=key_index,
        signer=gov.data.log_signer(),
        policy_bundle=bundle_doc,
        policy_index=policy_index,
    )
