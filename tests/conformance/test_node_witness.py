"""A governor node as a witness of its deployment's log (``proctor serve --witness DIR``,
:mod:`proctor.governor.node_witness`; issue 12): in process, through the governor's own
ASGI application.

Rules: the node trusts its deployment's log key at start and cosigns at
``/witness/add-checkpoint`` on its own port; an inconsistent checkpoint (two roots of one
size, both signed by the log's key) is refused with 422, its ``witness.alarm`` event is
appended to the deployment's log, it is counted in ``/metrics``, and the node reports
not ready until an operator clears the alarm; the witness keeps cosigning the history it
witnessed.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from asgi_support import call
from gov_server import cli, free_port
from proctor.datadir import DataDir
from proctor.governor.app import create_app
from proctor.governor.node_witness import NodeWitness
from proctor.governor.service import Governor
from proctor.lineage.checkpoint import Checkpoint
from proctor.lineage.cosignature import CosignerKey, cosignatures_in
from proctor.note import open_note, sign_note
from proctor.orchestration.witness import sign_submission
from proctor.orchestration.witness_dir import WitnessDir


def _attach(governor: Governor, tmp_path: Path) -> WitnessDir:
    witness_dir = WitnessDir.create(tmp_path / "witness", name="node.example/witness")
    governor.witness = NodeWitness.open(witness_dir.path, governor.log)
    return witness_dir


def _add(app: object, old: int, note: str, proof: tuple[str, ...] = ()) -> tuple[int, str]:
    body = f"old {old}\n" + "".join(f"{h}\n" for h in proof) + "\n" + note
    answer = call(app, "POST", "/witness/add-checkpoint", body=body.encode())
    return answer.status, answer.body.decode()


def _forged(gov_data: Path, governor: Governor) -> str:
    """A checkpoint of the log's size with another root, signed by the log's own key."""
    honest = open_note(governor.log.checkpoint(), [governor.log.verifier])
    checkpoint = Checkpoint.from_text(honest.text)
    other = hashlib.sha256(b"another history").digest()
    text = f"{checkpoint.origin}\n{checkpoint.size}\n{base64.b64encode(other).decode()}\n"
    return sign_note(text, DataDir.open(gov_data).log_signer())


def test_a_node_witness_trusts_its_deployments_log_and_cosigns_at_its_port(
    gov_data: Path, governor: Governor, tmp_path: Path
) -> None:
    """A node witness trusts its deployment's log and cosigns at its port."""
    witness_dir = _attach(governor, tmp_path)
    try:
        app = create_app(governor)
        status, line = _add(app, 0, governor.log.checkpoint())
        assert status == 200, line
        note = governor.log.checkpoint() + line
        opened = open_note(note, [governor.log.verifier])
        assert cosignatures_in(
            opened.text, opened.unverified, [CosignerKey.from_string(witness_dir.verifier().to_string())]
        )
        assert governor.ready()[1]["witness"] == "ok"
        metrics = call(app, "GET", "/metrics").body.decode()
        assert 'proctor_witness_requests_total{outcome="cosigned"} 1.0' in metrics
    finally:
        governor.witness.close()  # type: ignore[union-attr]


def test_a_fork_seen_by_a_node_witness_is_an_alarm_event_in_the_log_a_metric_and_not_ready(
    gov_data: Path, governor: Governor, tmp_path: Path
) -> None:
    witness_dir = _attach(governor, tmp_path)
    try:
        app = create_app(governor)
        honest = governor.log.checkpoint()
        size = Checkpoint.from_text(open_note(honest, [governor.log.verifier]).text).size
        assert _add(app, 0, honest)[0] == 200
        log_size = governor.log.size

        status, text = _add(app, size, _forged(gov_data, governor))
        assert status == 422, text
        assert "fork" in text

        # The alarm's event, with both checkpoints, is in the deployment's log.
        alarms = [
            call(app, "GET", f"/v1/log/entries/{i}").json()["event"]
            for i in range(log_size, governor.log.size)
        ]
        [alarm] = [e for e in alarms if e["type"] == "witness.alarm"]
        assert alarm["reason"] == "fork"
        assert alarm["node"] == "node.example/witness"
        assert alarm["cosigned"]["checkpoint"].startswith(honest.split("\n\n")[0])

        ok, checks = governor.ready()
        assert not ok
        assert "inconsistent checkpoint" in checks["witness"]
        assert call(app, "GET", "/readyz").status == 503
        metrics = call(app, "GET", "/metrics").body.decode()
        assert "proctor_witness_alarms_total 1.0" in metrics
        assert "proctor_witness_open_alarms 1.0" in metrics

        # The witness keeps the honest view: the honest checkpoint is cosigned again.
        grown = governor.log.checkpoint()
        new_size = Checkpoint.from_text(open_note(grown, [governor.log.verifier]).text).size
        proof = tuple(governor.log.consistency_proof(size, new_size)["hashes"])
        assert _add(app, size, grown, proof)[0] == 200
        state = witness_dir.state()
        try:
            state.clear_alarms(reason="looked at it: a test", at="2026-01-01T00:00:00Z")
        finally:
            state.close()
        assert governor.ready()[1]["witness"] == "ok"
    finally:
        governor.witness.close()  # type: ignore[union-attr]


def test_a_replayed_checkpoint_with_a_garbage_proof_does_not_stop_a_node(
    gov_data: Path, governor: Governor, tmp_path: Path
) -> None:
    _attach(governor, tmp_path)
    try:
        app = create_app(governor)
        first = governor.log.checkpoint()
        size = Checkpoint.from_text(open_note(first, [governor.log.verifier]).text).size
        assert _add(app, 0, first)[0] == 200
        governor.log.append({"v": 1, "type": "approval", "time": "2026-01-01T00:00:00Z", "tag": "x"})
        published = governor.log.checkpoint()
        garbage = ("A" * 43 + "=",)
        status, text = _add(app, size, published, garbage)  # anyone can send this
        assert status == 422, text
        assert governor.ready()[1]["witness"] == "ok"  # no alarm: the node stays in rotation
        # The same request from the log (signed with its key) is evidence: an alarm.
        body = (f"old {size}\n{garbage[0]}\n\n" + published).encode()
        signer = DataDir.open(gov_data).log_signer()
        header = ("proctor-log-signature", sign_submission(signer, "node.example/witness", body))
        answer = call(app, "POST", "/witness/add-checkpoint", body=body, headers=[header])
        assert answer.status == 422
        assert "inconsistent-proof" in answer.body.decode()
        assert "error" in governor.ready()[1]["witness"]
    finally:
        governor.witness.close()  # type: ignore[union-attr]


def test_a_node_refuses_to_start_with_an_unusable_witness_directory(gov_data: Path, tmp_path: Path) -> None:
    (tmp_path / "not-a-witness").mkdir()
    for where in (tmp_path / "missing", tmp_path / "not-a-witness"):
        done = cli(
            "serve", "--data", str(gov_data), "--port", str(free_port()), "--witness", str(where), check=False
        )
        assert done.returncode == 2, done.stderr
        assert f"--witness {where}" in done.stderr
