"""A governor node as a witness of its deployment's log (``proctor serve --witness DIR``).

Several governor nodes share one log (ADR 0015, 0016); each can also witness it, with a
witness key and state of its own (a witness directory, ``proctor witness init``), so a
deployment of three nodes can require that any two of them cosigned a checkpoint (a
tlog-policy ``group`` of the nodes' witness keys, ``quorum``) without running another
service. The witness is :class:`proctor.orchestration.witness.Witness` and its HTTP
surface :class:`proctor.orchestration.witness_http.WitnessApp`, mounted under
``/witness`` on the node's port: ``POST /witness/add-checkpoint`` (C2SP tlog-witness;
the policy's witness URL is ``http://NODE/witness``), ``GET /witness/<sha256>/checkpoint``,
``/witness/readyz``, ``/witness/metrics``.

What the node adds (issue 12: "refuses — with a ``witness.alarm`` event, a metric and a
non-ready state — on any inconsistency"):

1. At start the deployment's log key is trusted (idempotent): the node witnesses the log
   it serves. Other logs trusted in the directory stay trusted.
2. An inconsistency (422: a ``fork`` or an ``inconsistent-proof``) is recorded in the
   witness's own state first, as every witness does; then its ``witness.alarm`` event
   is appended to the deployment's log, so every node and every auditor sees it. A
   failed append is logged and counted; the alarm stands in the witness's state.
3. While an alarm is open the node is not ready (:meth:`NodeWitness.readiness`, in the
   governor's ``/readyz``), until ``proctor witness clear-alarms --data DIR``.
4. The witness's counters (``proctor_witness_requests_total{outcome}``,
   ``proctor_witness_alarms_total``, ``proctor_witness_open_alarms``) are in the
   governor's ``/metrics`` too, with ``proctor_witness_alarm_log_failures_total``.

False alarms: ``add-checkpoint`` is open to anyone, as in the C2SP spec, and the
checkpoint must carry the log's signature (step 3 of the witness), so nobody without the
log's key can have a new checkpoint cosigned. A bad proof raises an alarm only when the
request says it is from the log (a ``Proctor-Log-Signature`` by the log's key, which the
nodes' cosigners and ``proctor log cosign`` send); a published checkpoint replayed with
a garbage proof by anyone else gets 422 and stops no node. Two roots for one size are
always an alarm: both carry the log's signature.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter

from proctor.errors import ProctorError
from proctor.lineage.events import Event
from proctor.orchestration.witness import Witness, WitnessAnswer
from proctor.orchestration.witness_dir import WitnessDir
from proctor.orchestration.witness_http import WitnessApp

if TYPE_CHECKING:
    from proctor.lineage.log import Log
    from proctor.orchestration.witness_state import WitnessState

__all__ = ["MOUNT", "NodeWitness"]

_log = logging.getLogger("proctor.governor.witness")

MOUNT = "/witness"
"""Where the witness's routes are on the node's port (the policy's URL: ``http://NODE/witness``)."""


class _RecordingWitness(Witness):
    """A witness that also appends each alarm's event to the deployment's log (step 2)."""

    def __init__(self, state: WitnessState, witness_dir: WitnessDir, log: Log) -> None:
        super().__init__(state, witness_dir.cosigner())
        self._deployment_log = log
        self.log_failures = Counter(
            "proctor_witness_alarm_log_failures",
            "Witness alarms that could not be appended to the deployment's log.",
            registry=None,
        )

    def add_checkpoint(self, body: bytes, *, now: float, submitter: str | None = None) -> WitnessAnswer:
        """:meth:`Witness.add_checkpoint`, then the alarm's event into the deployment's log."""
        answer = super().add_checkpoint(body, now=now, submitter=submitter)
        if answer.alarm is not None:
            self._record(answer.alarm)
        return answer

    def _record(self, alarm_id: int) -> None:
        try:
            [alarm] = [a for a in self.state.alarms(open_only=False) if a.id == alarm_id]
            index = self._deployment_log.append(Event.from_dict(alarm.event))
            _log.error("witness alarm %d recorded in the log at index %d: %s", alarm_id, index, alarm.detail)
        except (ProctorError, ValueError) as e:
            self.log_failures.inc()
            why = "it stands in the witness's state"
            _log.error("witness alarm %d could not be recorded in the log (%s): %s", alarm_id, why, e)


class NodeWitness:
    """This node's witness: its directory, state and HTTP surface (module docstring)."""

    def __init__(self, witness_dir: WitnessDir, log: Log) -> None:
        """Open the witness directory's state and trust ``log``'s key (step 1).

        Raises:
            ProctorError: the state cannot be opened or written.
        """
        self.directory = witness_dir
        state = witness_dir.state()
        try:
            state.add_log(log.verifier, added=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            self.witness = _RecordingWitness(state, witness_dir, log)
        except BaseException:
            state.close()
            raise

    @classmethod
    def open(cls, path: str | Path, log: Log) -> NodeWitness:
        """The witness of the directory at ``path`` (made by ``proctor witness init``).

        Raises:
            ConfigError: not a witness directory, or an unusable key.
            StoreError: its state cannot be opened.
        """
        return cls(WitnessDir.open(path), log)

    @property
    def name(self) -> str:
        """The witness's name (its key name, in its cosignature lines)."""
        return self.witness.name

    def app(self, registry: CollectorRegistry | None = None) -> WitnessApp:
        """The witness's ASGI application, its counters also in ``registry`` (step 4)."""
        served = WitnessApp(self.witness)
        if registry is not None:
            for collector in (served.requests, served.alarms, served.open_alarms, self.witness.log_failures):
                registry.register(collector)
        return served

    def readiness(self) -> str:
        """``"ok"``, or ``"error: …"`` while an alarm is open or the state cannot be read (step 3)."""
        try:
            count = self.witness.state.open_alarm_count()
        except ProctorError as e:
            return f"error: this node's witness state cannot be read: {e}"
        if count:
            return (
                f"error: this node, as witness {self.name}, saw {count} inconsistent checkpoint(s) of a "
                f"log it witnesses (a fork): proctor witness status --data {self.directory.path}, "
                "then clear-alarms"
            )
        return "ok"

    def close(self) -> None:
        """Close the witness's state."""
        self.witness.state.close()
