"""Building an execution's receipt from the governor's log and state (I/O over the
log: :mod:`proctor.receipts.build`; checking one is pure: :mod:`proctor.receipts.check`).

The builder is handed the state, the log and the log's signing key, and nothing else of
the governor (ADR 0012); with witnesses, also the latest witnessed checkpoint
(:mod:`proctor.governor.cosigner`).

Which checkpoint a receipt is proven under (ADR 0014): the latest *witnessed* one —
the signed note with its witnesses' cosignature lines, so that ``proctor verify
--witness-policy`` passes (step 9) — when the governor has one and it already covers
every event of the receipt (its size is beyond the largest index); otherwise the
latest checkpoint, as without witnesses. The receipt says which by itself: its
checkpoint carries cosignature lines or not. A receipt fetched again after the next
cosigning round is proven under a witnessed checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from proctor.errors import PrincipalError
from proctor.receipts import build_receipt

if TYPE_CHECKING:
    from proctor.governor.cosigner import WitnessedCheckpoint
    from proctor.lineage.log import Log
    from proctor.note import NoteSigner
    from proctor.store.state import StateStore

__all__ = ["execution_receipt"]


def execution_receipt(
    execution_id: str,
    *,
    state: StateStore,
    log: Log,
    log_signer: Callable[[], NoteSigner],
    witnessed: WitnessedCheckpoint | None = None,
) -> dict[str, Any]:
    """The execution's self-contained, offline-verifiable receipt.

    Args:
        execution_id: the execution.
        state: the governance state tables (the execution's and its warrants' rows,
            bundles, argument openings, the warrant key's log index).
        log: the lineage log the receipt proves its events in.
        log_signer: loads the log's checkpoint signing key (called once the rows are
            read, so an unknown execution is refused before any key is loaded).
        witnessed: the latest checkpoint that met the witness policy's quorum, with
            its cosignature lines; used when it covers every event (module docstring).

    Returns:
        The receipt, verified before it is returned (:func:`proctor.receipts.build_receipt`).

    Raises:
        PrincipalError: there is no execution ``execution_id``.
        ConfigError: the log's signing key cannot be loaded.
    """
    record = state.execution(execution_id)
    if record is None:
        raise PrincipalError(f"no execution {execution_id!r}")
    chain = list(reversed(state.warrant_chain(record["warrant"])))
    tokens = []
    indices: list[int] = []
    for wid in chain[:-1]:  # ancestors' decisions and issuance too
        w = state.warrant(wid)
        if w is not None:
            tokens.append(str(w["token"]))
            indices += [int(w["decision_index"]), int(w["issued_index"])]
    own = state.warrant(record["warrant"])
    if own is not None:
        tokens.append(str(own["token"]))
    indices += list(record["indices"])
    key_index = int(state.meta("warrant_key_index") or 0)
    decision = orjson.loads(log.leaf(int(record["indices"][0])))
    bundle_doc, policy_index = None, None
    bundle = state.bundle(str(decision.get("bundle", "")))
    if bundle is not None:
        bundle_doc = orjson.loads(bundle)
        policy_index = state.bundle_index(str(decision["bundle"]))
    openings = {}
    for index in indices:
        opening = state.opening(index)  # decisions only: other events have none
        if opening is not None:
            openings[index] = opening
    # Under the witnessed checkpoint only when it covers every event proven (module docstring).
    highest = max(indices + [key_index] + ([] if policy_index is None else [policy_index]))
    checkpoint = witnessed.note if witnessed is not None and witnessed.size > highest else None
    return build_receipt(
        log,
        openings=openings,
        execution_indices=indices,
        warrant_tokens=tokens,
        key_index=key_index,
        signer=log_signer(),
        policy_bundle=bundle_doc,
        policy_index=policy_index,
        checkpoint=checkpoint,
    )
