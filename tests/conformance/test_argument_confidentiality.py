"""Arguments are confidential in the public log: events carry salted commitments, the
receipt carries the openings, and its holder can prove and replay what ran."""

from __future__ import annotations

import copy
import json

from gov_exec import allow, start_body
from proctor.governor.service import Governor
from proctor.receipts import check_receipt

SECRET = "--password=hunter2-very-secret"


def test_arguments_never_appear_in_the_public_log(governor: Governor) -> None:
    token = allow(governor, SECRET)
    ex = governor.executions.start("alice", start_body(token, SECRET))["execution"]
    governor.executions.finish("alice", ex, {"outcome": "completed", "exit_status": 0})
    for index in range(governor.log.size):
        assert b"hunter2" not in governor.log.leaf(index), f"entry {index} shows the argument"
    decision = json.loads(governor.log.leaf(governor.state.execution(ex)["indices"][0]))  # type: ignore[index]
    assert decision["request"]["args_commitment"].startswith("sha256:")
    assert decision["request"]["argv"] == []


def test_the_receipt_opens_the_arguments_and_replays(governor: Governor) -> None:
    token = allow(governor, SECRET)
    ex = governor.executions.start("alice", start_body(token, SECRET))["execution"]
    governor.executions.finish("alice", ex, {"outcome": "completed", "exit_status": 0})
    receipt = governor.executions.receipt(ex)
    key = governor.log.verifier_key()
    report = check_receipt(receipt, log_key=key, replay=True)
    assert report.ok, report.failed
    (opening,) = receipt["openings"]
    assert SECRET in opening["opening"]["argv"]
    # Another argument vector does not open the commitment.
    forged = copy.deepcopy(receipt)
    forged["openings"][0]["opening"]["argv"] = ["echo", "--password=other"]
    failed = check_receipt(forged, log_key=key, replay=True).failed
    assert failed is not None
    assert failed.number == 6
    assert "opening" in failed.detail
    # Without the opening the receipt still proves the execution, but cannot replay it.
    closed = {k: v for k, v in receipt.items() if k != "openings"}
    assert check_receipt(closed, log_key=key).ok
    failed = check_receipt(closed, log_key=key, replay=True).failed
    assert failed is not None
    assert "opening" in failed.detail


def test_an_opening_that_is_not_an_object_is_refused(governor: Governor) -> None:
    """An argument opening that is not an object (null, a list, a string, a number) is
    refused at the receipt's first step. A null once read as "not opened", so a receipt
    carrying it verified with bytes nobody checked (found by the receipt fuzz harness)."""
    token = allow(governor, SECRET)
    ex = governor.executions.start("alice", start_body(token, SECRET))["execution"]
    governor.executions.finish("alice", ex, {"outcome": "completed", "exit_status": 0})
    receipt = governor.executions.receipt(ex)
    key = governor.log.verifier_key()
    bad: object
    for bad in (None, [], "x", 0):
        hollow = copy.deepcopy(receipt)
        hollow["openings"][0]["opening"] = bad
        failed = check_receipt(hollow, log_key=key).failed
        assert failed is not None, bad
        assert failed.number == 1
        assert "openings[0].opening: expected an argument opening object" in failed.detail
