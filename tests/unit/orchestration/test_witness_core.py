"""The witness core (proctor.orchestration.witness) over its real SQLite state and real logs:
every step of C2SP tlog-witness add-checkpoint, alarms, and the state's invariants."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from proctor.datadir import DataDir
from proctor.errors import StoreConflictError
from proctor.lineage.cosignature import Cosignature, generate_cosigner
from proctor.lineage.events import Event
from proctor.lineage.log import Log
from proctor.note import generate_signer, sign_note
from proctor.orchestration.witness import (
    MAX_PROOF_LINES,
    SIZE_CONTENT_TYPE,
    AddCheckpointRequest,
    Witness,
    sign_submission,
)
from proctor.orchestration.witness_state import WitnessState

NOW = 1_800_000_000.5


def _event(tag: str) -> dict[str, object]:
    return {"v": 1, "type": "approval", "time": "2026-01-01T00:00:00Z", "tag": tag}


@pytest.fixture
def log(tmp_path: Path) -> Iterator[Log]:
    with Log.initialize(tmp_path / "log", origin="example.com/log") as opened:
        yield opened


@pytest.fixture
def witness(tmp_path: Path, log: Log) -> Iterator[Witness]:
    state = WitnessState(tmp_path / "witness.db", create=True)
    state.add_log(log.verifier, added="2026-01-01T00:00:00Z")
    yield Witness(state, generate_cosigner("witness.example/w1"))
    state.close()


def _body(log: Log, old: int, *, note: str | None = None, proof: list[str] | None = None) -> bytes:
    size = log.checkpoint_size()
    if proof is None:
        proof = log.consistency_proof(old, size)["hashes"] if 0 < old < size else []
    return (f"old {old}\n" + "".join(f"{h}\n" for h in proof) + "\n" + (note or log.checkpoint())).encode()


def test_a_first_checkpoint_is_cosigned_and_the_line_verifies(log: Log, witness: Witness) -> None:
    log.append_many([_event("a"), _event("b")])
    answer = witness.add_checkpoint(_body(log, 0), now=NOW)
    assert (answer.status, answer.outcome) == (200, "cosigned")
    cosignature = Cosignature.from_line(answer.body.decode())
    assert cosignature.timestamp == int(NOW)
    body = log.checkpoint().rsplit("\n\n", 1)[0] + "\n"
    assert witness.cosigner.verifier.verify(body, cosignature)
    latest = witness.state.latest("example.com/log")
    assert latest is not None
    assert latest.size == log.checkpoint_size()


def test_a_growing_log_is_cosigned_from_each_cosigned_size(log: Log, witness: Witness) -> None:
    old = 0
    for round_ in range(5):
        log.append_many([_event(f"{round_}-{i}") for i in range(round_ + 1)])
        answer = witness.add_checkpoint(_body(log, old), now=NOW + round_)
        assert answer.status == 200, answer.body
        old = log.checkpoint_size()
    kinds = [e["type"] for e in witness.state.events()]
    assert kinds == ["witness.cosigned"] * 5
    for raw in witness.state.events():
        Event.from_dict(raw)  # each is a valid lineage event


def test_a_stale_old_size_gets_409_with_the_cosigned_size(log: Log, witness: Witness) -> None:
    log.append(_event("a"))
    first = _body(log, 0)
    assert witness.add_checkpoint(first, now=NOW).status == 200
    size = log.checkpoint_size()
    log.append(_event("b"))
    for body in (first, _body(log, 0), _body(log, size - 1)):
        answer = witness.add_checkpoint(body, now=NOW)
        assert (answer.status, answer.body, answer.content_type) == (
            409,
            f"{size}\n".encode(),
            SIZE_CONTENT_TYPE,
        )


def test_an_unknown_origin_is_404(tmp_path: Path, witness: Witness) -> None:
    with Log.initialize(tmp_path / "other", origin="example.com/other") as other:
        assert witness.add_checkpoint(_body(other, 0), now=NOW).status == 404


def test_no_trusted_signature_or_a_bad_one_is_403(log: Log, witness: Witness) -> None:
    text = log.checkpoint().rsplit("\n\n", 1)[0] + "\n"
    impostor = generate_signer("example.com/log")
    assert witness.add_checkpoint(_body(log, 0, note=sign_note(text, impostor)), now=NOW).status == 403
    bad = log.checkpoint().replace(text.split("\n")[2], "A" * 43 + "=", 1)  # body changed under the signature
    assert witness.add_checkpoint(_body(log, 0, note=bad), now=NOW).status == 403


@pytest.mark.parametrize(
    "body",
    [
        b"old 0\n",
        b"old 01\n\nexample.com/log\n",
        b"old -1\n\nexample.com/log\n",
        b"new 0\n\nexample.com/log\n",
        b"old 0\nnot base64!\n\nexample.com/log\n",
        b"old 0\nAAAA\n\nexample.com/log\n",
        b"old 0\n"
        + b"".join(b"A" * 43 + b"=\n" for _ in range(MAX_PROOF_LINES + 1))
        + b"\nexample.com/log\n",
        b"\xff\xfe",
    ],
    ids=[
        "no blank line",
        "leading zero",
        "negative",
        "keyword",
        "bad base64",
        "short hash",
        "64 lines",
        "not utf-8",
    ],
)
def test_a_malformed_request_is_400(witness: Witness, body: bytes) -> None:
    with pytest.raises(ValueError, match="expected"):
        AddCheckpointRequest.from_bytes(body)
    assert witness.add_checkpoint(body, now=NOW).status == 400


def test_an_old_size_beyond_the_checkpoint_is_400(log: Log, witness: Witness) -> None:
    log.append(_event("a"))
    assert witness.add_checkpoint(_body(log, 50), now=NOW).status == 400


def test_a_proof_from_size_zero_is_422(log: Log, witness: Witness) -> None:
    log.append_many([_event("a"), _event("b")])
    answer = witness.add_checkpoint(_body(log, 0, proof=["A" * 43 + "="]), now=NOW)
    assert answer.status == 422
    assert answer.alarm is None  # nothing was cosigned before: no evidence of anything


def _from_log(tmp_path: Path, witness: Witness, body: bytes) -> str:
    """The submitter header of ``body``: the log's key says the request is from the log."""
    return sign_submission(DataDir.open(tmp_path / "log").log_signer(), witness.name, body)


def test_a_bad_proof_from_the_cosigned_checkpoint_is_422_and_an_alarm(
    tmp_path: Path, log: Log, witness: Witness
) -> None:
    log.append(_event("a"))
    assert witness.add_checkpoint(_body(log, 0), now=NOW).status == 200
    old = log.checkpoint_size()
    log.append_many([_event("b"), _event("c")])
    body = _body(log, old, proof=["A" * 43 + "="])
    answer = witness.add_checkpoint(body, now=NOW, submitter=_from_log(tmp_path, witness, body))
    assert (answer.status, answer.outcome) == (422, "inconsistent-proof")
    assert answer.alarm is not None
    [alarm] = witness.state.alarms(open_only=True)
    assert alarm.reason == "inconsistent-proof"
    assert alarm.event["submitted"]["proof"] == ["A" * 43 + "="]
    latest = witness.state.latest("example.com/log")
    assert latest is not None
    assert latest.size == old  # nothing moved
    # The right proof still gets the consistent checkpoint cosigned.
    assert witness.add_checkpoint(_body(log, old), now=NOW).status == 200


def test_two_roots_for_one_size_are_a_fork_alarm(tmp_path: Path, log: Log, witness: Witness) -> None:
    log.append(_event("shared"))
    log.close()
    shutil.copytree(tmp_path / "log", tmp_path / "fork")
    with Log.open(tmp_path / "log") as honest, Log.open(tmp_path / "fork") as fork:
        honest.append(_event("what happened"))
        fork.append(_event("what is shown"))
        assert honest.checkpoint_size() == fork.checkpoint_size()
        assert witness.add_checkpoint(_body(honest, 0), now=NOW).status == 200
        size = honest.checkpoint_size()
        answer = witness.add_checkpoint(_body(fork, size), now=NOW)
        assert (answer.status, answer.outcome) == (422, "fork")
        [alarm] = witness.state.alarms()
        assert alarm.reason == "fork"
        assert alarm.event["cosigned"]["checkpoint"].startswith(honest.checkpoint().rsplit("\n\n", 1)[0])
        assert alarm.event["submitted"]["checkpoint"] == fork.checkpoint()
        # Re-submitting the honest checkpoint at the same size is fine.
        assert witness.add_checkpoint(_body(honest, size), now=NOW + 1).status == 200


def test_an_anonymous_bad_proof_is_422_without_an_alarm(tmp_path: Path, log: Log, witness: Witness) -> None:
    # Anyone can replay a published checkpoint with a garbage proof: no alarm for that.
    log.append(_event("a"))
    assert witness.add_checkpoint(_body(log, 0), now=NOW).status == 200
    old = log.checkpoint_size()
    log.append(_event("b"))
    answer = witness.add_checkpoint(_body(log, old, proof=["A" * 43 + "="]), now=NOW)
    assert (answer.status, answer.outcome, answer.alarm) == (422, "bad-proof", None)
    assert witness.state.open_alarm_count() == 0
    latest = witness.state.latest("example.com/log")
    assert latest is not None
    assert latest.size == old  # nothing moved, nothing cosigned


def test_a_submitter_signature_that_does_not_verify_is_403(
    tmp_path: Path, log: Log, witness: Witness
) -> None:
    log.append(_event("a"))
    body = _body(log, 0)
    stranger = sign_submission(generate_signer("example.com/log"), witness.name, body)
    elsewhere = sign_submission(DataDir.open(tmp_path / "log").log_signer(), "witness.example/other", body)
    for submitter in (stranger, elsewhere, "not base64!", ""):
        answer = witness.add_checkpoint(body, now=NOW, submitter=submitter)
        assert (answer.status, answer.outcome) == (403, "bad-submitter"), submitter
    assert witness.state.latest("example.com/log") is None
    assert witness.add_checkpoint(body, now=NOW, submitter=_from_log(tmp_path, witness, body)).status == 200


def test_alarms_stay_open_until_cleared_and_the_clearing_is_kept(
    tmp_path: Path, log: Log, witness: Witness
) -> None:
    log.append(_event("a"))
    witness.add_checkpoint(_body(log, 0), now=NOW)
    log.append(_event("b"))
    body = _body(log, 1, proof=["A" * 43 + "="])
    witness.add_checkpoint(body, now=NOW, submitter=_from_log(tmp_path, witness, body))
    assert witness.state.open_alarm_count() == 1
    assert witness.state.clear_alarms(reason="looked at it", at="2026-01-02T00:00:00Z") == 1
    assert witness.state.open_alarm_count() == 0
    [alarm] = witness.state.alarms()
    assert (alarm.cleared, alarm.cleared_reason) == ("2026-01-02T00:00:00Z", "looked at it")


def test_the_cosigned_record_survives_a_restart(tmp_path: Path, log: Log, witness: Witness) -> None:
    log.append(_event("a"))
    assert witness.add_checkpoint(_body(log, 0), now=NOW).status == 200
    witness.state.close()
    reopened = Witness(WitnessState(tmp_path / "witness.db"), witness.cosigner)
    try:
        answer = reopened.add_checkpoint(_body(log, 0), now=NOW)
        assert (answer.status, answer.body) == (409, f"{log.checkpoint_size()}\n".encode())
    finally:
        reopened.state.close()


def test_the_cosigned_record_never_moves_from_a_state_it_was_not_checked_against(
    log: Log, witness: Witness
) -> None:
    log.append(_event("a"))
    assert witness.add_checkpoint(_body(log, 0), now=NOW).status == 200
    stale = witness.state.latest("example.com/log")
    assert stale is not None
    log.append(_event("b"))
    assert witness.add_checkpoint(_body(log, stale.size), now=NOW).status == 200
    event = Event.from_dict(_event("c") | {"type": "witness.cosigned"})
    with pytest.raises(StoreConflictError):
        witness.state.advance(stale, stale, event)  # would roll the record back
    latest = witness.state.latest("example.com/log")
    assert latest is not None
    assert latest.size == log.checkpoint_size()


def test_concurrent_requests_never_roll_the_record_back(log: Log, witness: Witness) -> None:
    log.append(_event("a"))
    small, small_size = _body(log, 0), log.checkpoint_size()
    log.append_many([_event(str(i)) for i in range(5)])
    large = _body(log, 0)
    answers: list[int] = []

    def submit(body: bytes) -> None:
        answers.append(witness.add_checkpoint(body, now=NOW).status)

    threads = [threading.Thread(target=submit, args=(b,)) for b in (small, large) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert answers.count(200) == 1  # whichever came first; every other one is told the size
    latest = witness.state.latest("example.com/log")
    assert latest is not None
    assert latest.size in (small_size, log.checkpoint_size())
    assert set(answers) <= {200, 409}
