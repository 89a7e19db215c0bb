"""Receipts carry cosignatures (proctor.receipts, step 9): the checkpoint note is a signed
note, so the witnesses' lines ride in it; ``build_receipt(checkpoint=...)`` proves the
events under a witnessed checkpoint rather than the latest one."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from gov_exec import allow, start_body
from proctor.governor.service import Governor
from proctor.lineage.cosignature import generate_cosigner
from proctor.lineage.witness_policy import WitnessPolicy
from proctor.orchestration.cosigning import collect_cosignatures, cosigned_note
from proctor.orchestration.witness import Witness
from proctor.orchestration.witness_http import WitnessApp
from proctor.orchestration.witness_state import WitnessState
from proctor.receipts import STEP_NAMES, build_receipt, check_receipt
from proctor.store.sqlite import SQLiteStore


def _rebuild(
    receipt: dict[str, Any], governor: Governor, gov_data: Path, checkpoint: str | None
) -> dict[str, Any]:
    """The same receipt, built again by the real builder (under ``checkpoint``)."""
    kinds = {e["leaf_index"]: json.loads(base64.b64decode(e["leaf"]))["type"] for e in receipt["events"]}
    key_index = next(i for i, kind in kinds.items() if kind == "key.declared")
    policy = receipt.get("policy")
    policy_index = None if policy is None else policy["activated_index"]
    execution = [i for i in kinds if i not in (key_index, policy_index)]
    return build_receipt(
        governor.log,
        execution_indices=execution,
        warrant_tokens=receipt["warrant_chain"],
        key_index=key_index,
        signer=governor.data.log_signer(),
        policy_bundle=None if policy is None else policy["bundle"],
        policy_index=policy_index,
        openings={o["index"]: o["opening"] for o in receipt.get("openings", [])},
        checkpoint=checkpoint,
    )


def test_a_receipt_proven_under_a_witnessed_checkpoint_carries_its_cosignatures(
    tmp_path: Path, gov_data: Path, governor: Governor
) -> None:
    token = allow(governor, "hi")
    execution = str(governor.executions.start("alice", start_body(token, "hi"))["execution"])
    governor.executions.finish("alice", execution, {"outcome": "completed", "exit_status": 0})
    receipt = governor.executions.receipt(execution)

    state = WitnessState(tmp_path / "witness.db", create=True)
    state.add_log(governor.log.verifier, added="2026-01-01T00:00:00Z")
    witness = Witness(state, generate_cosigner("witness.example/w1"))
    store = SQLiteStore(gov_data / "proctor.db")
    try:
        with TestClient(WitnessApp(witness), base_url="http://w1") as client:
            policy = WitnessPolicy.from_text(
                f"witness w1 {witness.cosigner.verifier.to_string()} http://w1\nquorum w1\n"
            )
            report = collect_cosignatures(governor.log, store, policy, client=client)
        assert report.quorum.satisfied
        witnessed = report.checkpoint  # the stored checkpoint and its cosignature lines
        stored = store.checkpoint_at(report.size)
        assert stored is not None
        assert witnessed == cosigned_note(stored, store.cosignatures(report.size))
        governor.log.append({"v": 1, "type": "approval", "time": "2026-01-01T00:00:00Z"})  # the log moves on

        latest = _rebuild(receipt, governor, gov_data, None)
        failed = check_receipt(latest, log_key=governor.log.verifier_key(), witness_policy=policy)
        assert failed.failed is not None
        assert (failed.failed.number, failed.failed.name) == (9, STEP_NAMES[9])  # the latest is not witnessed

        proven = _rebuild(receipt, governor, gov_data, witnessed)
        assert proven["checkpoint"] == witnessed
        ok = check_receipt(proven, log_key=governor.log.verifier_key(), witness_policy=policy)
        assert ok.ok, ok.failed
        assert [s.number for s in ok.steps][-1] == 9
        # Without a policy the cosignature lines are carried, not checked, and break nothing.
        assert check_receipt(proven, log_key=governor.log.verifier_key()).ok
    finally:
        store.close()
        state.close()
