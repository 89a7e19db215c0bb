"""The governor's cosigner: its checkpoints witnessed in the background (issue 12, ADR 0014).

With a ``[witnesses]`` table in ``config.toml`` (:class:`~proctor.config.WitnessConfig`),
the governor submits its log's checkpoints to the witnesses of a C2SP tlog-policy file
and keeps the latest checkpoint that meets the policy's quorum, under which served
receipts are proven (:mod:`proctor.governor.receipts`). Each round (the first at start,
then every ``interval_ms``):

1. The log's latest stored checkpoint. When its size is the one that last met the
   quorum, nothing is sent: the tree did not grow (the first round always sends).
2. It goes to every witness of the policy that has a URL, with a consistency proof from
   the size that witness last cosigned; each valid cosignature is stored beside the
   checkpoint (:func:`proctor.orchestration.cosigning.collect_cosignatures`).
3. Every submission is counted, every answer other than a cosignature is counted as a
   failure (by witness and outcome) and logged when a witness's outcome changes.
4. A witness that answers that this log is inconsistent with what it cosigned (422), or
   that it cosigned a larger tree of this log than the log holds (asked again at once,
   in case another governor of the same log grew it meanwhile), raises the *alarm*: the
   log was forked or rewritten, or entries were lost. The governor then reports not
   ready (:meth:`Cosigner.readiness`) with the witness's words, until it is restarted.
5. When the checkpoint with its stored cosignature lines meets the quorum, it becomes
   the latest witnessed checkpoint, which only grows.

Before the first submission the latest witnessed checkpoint is recovered from the store
(the largest stored checkpoint whose stored cosignatures meet the quorum); a stored
cosignature by a policy witness that does not verify against its stored checkpoint — a
checkpoint re-signed over another tree after it was witnessed — raises the alarm.

Invariants:

- Nothing an authorization does waits on a witness: rounds run in one thread of their
  own, and a receipt reads the latest witnessed checkpoint under a lock.
- A round that fails (the store, a bug) is counted as a failure and logged; the next
  round runs as usual. A failure never stops authorizations; only an alarm changes
  readiness.
- The policy file is read once, at start, as strictly as ``config.toml``: a regular
  file, not through a symlink, that group and others cannot write; a policy that does
  not accept this log's key, or whose witnesses have no URL, stops the governor.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from proctor.config import WitnessConfig
from proctor.datadir import check_unshared
from proctor.errors import ConfigError, ProctorError, VerificationError
from proctor.lineage.witness_policy import MAX_POLICY_BYTES, WitnessPolicy
from proctor.orchestration.cosigning import (
    CosignReport,
    collect_cosignatures,
    cosigned_note,
    open_witnessed_store,
)
from proctor.store.cosignatures import StoredCosignature, WitnessedLogStore

if TYPE_CHECKING:
    from proctor.datadir import DataDir
    from proctor.lineage.log import Log
    from proctor.note import NoteSigner

__all__ = ["ALARM_OUTCOMES", "Cosigner", "CosignerMetrics", "WitnessedCheckpoint", "read_witness_policy"]

_log = logging.getLogger("proctor.governor.cosigner")

ALARM_OUTCOMES = frozenset({"inconsistent", "ahead"})
"""Witness answers that say this log forked (:class:`~proctor.orchestration.cosigning.WitnessOutcome`)."""
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


@dataclass(frozen=True)
class WitnessedCheckpoint:
    """A checkpoint that met the witness policy's quorum.

    Attributes:
        size: its tree size.
        note: the signed checkpoint note with its witnesses' cosignature lines.
    """

    size: int
    note: str


def read_witness_policy(data_dir: Path, config: WitnessConfig) -> WitnessPolicy:
    """The witness policy named by ``config`` (relative to ``data_dir`` unless absolute).

    Raises:
        ConfigError: the file is missing, a symlink, not a regular file, writable by
            group or others or owned by someone else, larger than
            :data:`~proctor.lineage.witness_policy.MAX_POLICY_BYTES`, or not a valid policy.
    """
    path = data_dir / config.policy
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | _NONBLOCK)
    except OSError as e:
        raise ConfigError(
            f"witnesses.policy: cannot read {path}: {e.strerror} (expected a regular file, not a link)"
        ) from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"witnesses.policy: {path}: expected a regular file")
        check_unshared(path, st, "the witness policy")
        raw = os.read(fd, MAX_POLICY_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"witnesses.policy: cannot read {path}: {e.strerror}") from e
    finally:
        os.close(fd)
    try:
        return WitnessPolicy.from_text(raw)
    except ConfigError as e:
        raise ConfigError(f"witnesses.policy: {path}: {e}") from None


class Cosigner:
    """Has the log's checkpoints cosigned by the policy's witnesses (module docstring).

    Build it with :meth:`open`; :meth:`start` runs the rounds in a thread, :meth:`close`
    stops them. Thread-safe: :meth:`latest_witnessed`, :meth:`readiness` and
    :meth:`snapshot` may be called from any thread.
    """

    def __init__(
        self,
        *,
        log: Log,
        store: WitnessedLogStore,
        policy: WitnessPolicy,
        interval_s: float,
        timeout_s: float,
        signer: NoteSigner | None = None,
    ) -> None:
        """Check the policy against the log; nothing is sent before :meth:`start`.

        Args:
            log: the governor's log (its key, size and proofs).
            store: the log's database, where cosignatures are kept (owned: closed by
                :meth:`close`).
            policy: the witnesses and the quorum.
            interval_s: seconds between rounds.
            timeout_s: how long one witness's answer is waited for.
            signer: the log's key, to say each submission is from the log (a witness
                then raises an alarm on an inconsistent one; ``None``: anonymous).

        Raises:
            ConfigError: the policy does not accept this log's key, or none of its
                witnesses has a URL to submit to.
        """
        try:
            policy.check(log.checkpoint(), log=log.verifier)
        except VerificationError as e:
            raise ConfigError(f"witnesses.policy: expected a policy of this log: {e}") from e
        if not any(w.url for w in policy.witnesses.values()):
            raise ConfigError(
                "witnesses.policy: expected a URL on at least one witness line (where the governor "
                "submits its checkpoints), found none"
            )
        self._log = log
        self._store = store
        self._policy = policy
        self._interval_s = interval_s
        self._signer = signer
        self._client = httpx.Client(timeout=timeout_s)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._latest: WitnessedCheckpoint | None = None
        self._alarm: str | None = None
        self._recovered = False
        self._sent_once = False  # the first round always sends (a fork is seen at start)
        self._cosigned: dict[str, int] = {}  # policy witness → the largest size it cosigned
        self._outcomes: dict[str, str] = {}  # policy witness → its last outcome (for the log lines)
        self.submissions: dict[str, int] = {}
        self.failures: dict[tuple[str, str], int] = {}
        self.rounds_failed = 0

    @classmethod
    def open(cls, data: DataDir, log: Log, config: WitnessConfig, *, store: str | None = None) -> Cosigner:
        """The cosigner of a governor's data directory, as ``config`` says.

        Args:
            data: the data directory (the policy file is relative to it).
            log: the governor's log.
            config: the ``[witnesses]`` table.
            store: the governor's store URL (``None``: the data directory's file).

        Raises:
            ConfigError: the policy file is missing or invalid, or not a policy for
                this log (:func:`read_witness_policy`, :meth:`__init__`).
            StoreError: the log's database cannot be opened.
        """
        policy = read_witness_policy(data.path, config)
        database = open_witnessed_store(store, data.db_path)
        try:
            return cls(
                log=log,
                store=database,
                policy=policy,
                interval_s=config.interval_ms / 1000,
                timeout_s=config.timeout_ms / 1000,
                signer=data.log_signer(),
            )
        except BaseException:
            database.close()
            raise

    # -- what the governor reads ---------------------------------------------------

    def latest_witnessed(self) -> WitnessedCheckpoint | None:
        """The largest checkpoint known to meet the quorum, with its cosignature lines."""
        with self._lock:
            return self._latest

    @property
    def alarm(self) -> str | None:
        """Why a witness says this log forked, or ``None``."""
        with self._lock:
            return self._alarm

    def readiness(self) -> str:
        """``"ok"``, or ``"error: …"`` while an alarm is raised (the governor's ``/readyz``)."""
        alarm = self.alarm
        return "ok" if alarm is None else f"error: a witness reports a fork of this log: {alarm}"

    # -- rounds --------------------------------------------------------------------

    def start(self) -> None:
        """Run a round now and then every ``interval_ms``, in a thread of its own."""
        if self._thread is not None:
            return

        def run() -> None:
            while True:
                self.run_round()
                if self._stopping.wait(self._interval_s):
                    return

        self._thread = threading.Thread(target=run, name="proctor-cosigner", daemon=True)
        self._thread.start()

    def run_round(self) -> CosignReport | None:
        """One round (module docstring, steps 1-5); never raises.

        Returns:
            What the witnesses answered, or ``None`` when nothing was sent (the tree
            did not grow, or the round failed before anything was sent).
        """
        try:
            if not self._recovered:
                self._recover()
            latest = self._store.latest_checkpoint()
            witnessed = self.latest_witnessed()
            if latest is None or (witnessed is not None and latest[0] <= witnessed.size and self._sent_once):
                return None
            self._sent_once = True
            report = self._submit()
            if any(w.outcome == "ahead" for w in report.witnesses):
                # Another governor of this log may have grown it and had it cosigned
                # between our read and the witness's answer: ask again from the newest.
                report = self._submit()
            self._take(report)
            return report
        except Exception as e:  # noqa: BLE001 - a round must never end the thread; counted and logged
            with self._lock:
                self.rounds_failed += 1
            _log.warning("witness round failed: %s", e)
            return None

    def _submit(self) -> CosignReport:
        for w in self._policy.witnesses.values():
            if w.url:
                with self._lock:
                    self.submissions[w.name] = self.submissions.get(w.name, 0) + 1
        return collect_cosignatures(
            self._log,
            self._store,
            self._policy,
            client=self._client,
            old_sizes=dict(self._cosigned),
            signer=self._signer,
        )

    def _take(self, report: CosignReport) -> None:
        for w in report.witnesses:
            if w.outcome == "no-url":
                continue
            if w.outcome == "cosigned":
                self._cosigned[w.witness] = report.size
            else:
                with self._lock:
                    key = (w.witness, w.outcome)
                    self.failures[key] = self.failures.get(key, 0) + 1
            if w.outcome in ALARM_OUTCOMES:
                self._raise_alarm(f"witness {w.witness} ({w.url}): {w.outcome}: {w.detail}")
            elif self._outcomes.get(w.witness) != w.outcome:
                if w.outcome == "cosigned":
                    _log.info("witness %s cosigned size %d", w.witness, report.size)
                else:
                    _log.warning("witness %s (%s): %s: %s", w.witness, w.url, w.outcome, w.detail)
            self._outcomes[w.witness] = w.outcome
        if report.quorum.satisfied:
            self._keep(WitnessedCheckpoint(report.size, report.checkpoint))

    def _keep(self, checkpoint: WitnessedCheckpoint) -> None:
        with self._lock:
            if self._latest is None or checkpoint.size > self._latest.size:
                self._latest = checkpoint

    def _raise_alarm(self, why: str) -> None:
        with self._lock:
            first = self._alarm is None
            if first:
                self._alarm = why
        if first:
            _log.error("ALARM: %s; this governor reports not ready until it is restarted", why)

    def _recover(self) -> None:
        """The latest witnessed checkpoint from the store; a contradiction raises the alarm."""
        verifier = self._log.verifier
        keys = {(w.key.name, w.key.key_id): w.name for w in self._policy.witnesses.values()}
        by_size: dict[int, list[StoredCosignature]] = {}
        for c in self._store.cosignatures():
            by_size.setdefault(c.size, []).append(c)
            name = keys.get((c.name, c.key_id))
            if name is not None:
                self._cosigned[name] = max(self._cosigned.get(name, 0), c.size)
        found: WitnessedCheckpoint | None = None
        for size in sorted(by_size, reverse=True):
            stored = self._store.checkpoint_at(size)
            if not any((c.name, c.key_id) in keys for c in by_size[size]):
                continue
            if stored is None:
                self._raise_alarm(
                    f"witnesses cosigned a checkpoint of size {size}, but the log holds none of that size"
                )
                break
            note = cosigned_note(stored, by_size[size])
            try:
                result = self._policy.check(note, log=verifier)
            except ProctorError as e:
                self._raise_alarm(
                    f"a stored cosignature of the checkpoint of size {size} does not verify (the checkpoint "
                    f"was re-signed over another tree after it was witnessed): {e}"
                )
                break
            if result.satisfied and found is None:
                found = WitnessedCheckpoint(size, note)
        if found is not None:
            self._keep(found)
        self._recovered = True

    # -- life cycle ----------------------------------------------------------------

    def close(self) -> None:
        """Stop the rounds (waiting for one under way) and close the store and client."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            if self._thread.is_alive():
                return  # stuck on a witness: a daemon thread; leave what it uses open
        self._client.close()
        self._store.close()

    def snapshot(self) -> tuple[dict[str, int], dict[tuple[str, str], int], int, WitnessedCheckpoint | None]:
        """(submissions by witness, failures by (witness, outcome), failed rounds, latest witnessed)."""
        with self._lock:
            return dict(self.submissions), dict(self.failures), self.rounds_failed, self._latest


class CosignerMetrics:
    """The cosigner's Prometheus metrics (a collector for the governor's ``/metrics``)::

    proctor_cosign_submissions_total{witness}        checkpoints submitted
    proctor_cosign_failures_total{witness,outcome}   answers that were not a cosignature
    proctor_cosign_round_failures_total              rounds that failed before an answer
    proctor_cosign_witnessed_size                    the latest witnessed checkpoint's size (0: none)
    proctor_cosign_lag_entries                       log entries after it
    proctor_cosign_alarm                             1 while a witness reports a fork
    """

    def __init__(self, cosigner: Cosigner, log: Log) -> None:
        self._cosigner = cosigner
        self._log = log

    def collect(self) -> Iterator[Metric]:
        """The current values (called by the registry at each scrape)."""
        submissions, failures, rounds_failed, latest = self._cosigner.snapshot()
        sent = CounterMetricFamily(
            "proctor_cosign_submissions", "Checkpoints submitted to each witness.", labels=["witness"]
        )
        for name, count in sorted(submissions.items()):
            sent.add_metric([name], count)
        failed = CounterMetricFamily(
            "proctor_cosign_failures",
            "Witness answers that were not a cosignature, by outcome.",
            labels=["witness", "outcome"],
        )
        for (name, outcome), count in sorted(failures.items()):
            failed.add_metric([name, outcome], count)
        rounds = CounterMetricFamily(
            "proctor_cosign_round_failures", "Cosigning rounds that failed before the witnesses answered."
        )
        rounds.add_metric([], rounds_failed)
        size = 0 if latest is None else latest.size
        witnessed = GaugeMetricFamily(
            "proctor_cosign_witnessed_size", "Size of the latest checkpoint meeting the witness quorum."
        )
        witnessed.add_metric([], size)
        lag = GaugeMetricFamily("proctor_cosign_lag_entries", "Log entries after the latest witnessed one.")
        try:
            lag.add_metric([], max(self._log.size - size, 0))
        except ProctorError:
            lag.add_metric([], float("nan"))
        alarm = GaugeMetricFamily("proctor_cosign_alarm", "1 while a witness reports a fork of this log.")
        alarm.add_metric([], 0 if self._cosigner.alarm is None else 1)
        yield from (sent, failed, rounds, witnessed, lag, alarm)
