"""``LISTEN/NOTIFY`` behind the trust follower's wake-up (:mod:`proctor.store.notify_pg`):
an append notifies only once committed; a notification wakes a waiting follower long
before its safety poll; a listening session that is killed reconnects and wakes the
follower once, and notifications reach it again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from proctor.errors import StoreConflictError
from proctor.store.base import Tile
from proctor.store.notify_pg import LOG_CHANNEL, REVOKE_CHANNEL, PgNotifySignal
from proctor.store.postgres import PostgresLogStore

pytestmark = pytest.mark.postgres

PATIENCE = 30.0  # seconds: generous, the machine is shared; nothing here waits that long when it works
NEVER = 600.0  # a safety poll that no test outlives: only a notification (or wake) ends a wait


def tile(width: int) -> Tile:
    return Tile(0, 0, width, bytes([1]) * 32 * sum(width >> r for r in range(8)))


@pytest.fixture
def store(pg_dsn: str) -> Iterator[PostgresLogStore]:
    s = PostgresLogStore(pg_dsn, create=True)
    yield s
    s.close()


@pytest.fixture
def signal(pg_dsn: str) -> Iterator[PgNotifySignal]:
    s = PgNotifySignal(pg_dsn, safety_poll=NEVER, max_backoff=0.2)
    assert s.wait_listening(PATIENCE)
    s.wait(0)  # the wake-up of the first session (a round after every connect)
    yield s
    s.close()


def woken(signal: PgNotifySignal, action: Callable[[], object]) -> bool:
    """Whether a ``wait`` already blocking when ``action`` runs returns (well before
    the safety poll, which no test reaches)."""
    returned = threading.Event()
    waiting = threading.Event()

    def waiter() -> None:
        waiting.set()
        signal.wait(NEVER)
        returned.set()

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    waiting.wait(PATIENCE)
    action()
    done = returned.wait(PATIENCE)
    if not done:
        signal.wake()  # free the thread
    t.join(PATIENCE)
    return done


def until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_an_append_notifies_its_new_size_only_once_committed(store: PostgresLogStore, pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {LOG_CHANNEL}")
        with pytest.raises(StoreConflictError):
            store.append(5, [b"refused"], [tile(1)])  # rolled back: nobody is told
        store.append(0, [b"a", b"b"], [tile(2)])
        got = [n.payload for n in listener.notifies(timeout=PATIENCE, stop_after=1)]
        got += [n.payload for n in listener.notifies(timeout=0.5)]
    assert got == ["2"]


def test_a_committed_append_wakes_a_waiting_follower(store: PostgresLogStore, signal: PgNotifySignal) -> None:
    assert woken(signal, lambda: store.append(0, [b"a"], [tile(1)]))
    assert signal.notifications >= 1


def test_wake_wakes_and_close_stops_waiting(signal: PgNotifySignal) -> None:
    assert woken(signal, signal.wake)
    signal.close()
    assert woken(signal, lambda: None)  # returns at once, closed
    assert not signal.listening


def test_a_killed_listening_session_reconnects_and_wakes_the_follower(
    store: PostgresLogStore, signal: PgNotifySignal, pg_dsn: str
) -> None:
    def kill() -> None:
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'proctor-listen' AND datname = current_database()"
            ).fetchall()
        assert killed == [(True,)]

    assert signal.sessions == 1
    # The reconnection alone wakes the follower: what committed meanwhile is read then.
    assert woken(signal, kill)
    assert until(lambda: signal.sessions == 2 and signal.listening)
    signal.wait(0)
    assert woken(signal, lambda: store.append(0, [b"after"], [tile(1)]))  # listening again


def test_without_a_listening_session_the_safety_poll_still_wakes(pg_dsn: str) -> None:
    # A server that refuses the session: the signal keeps retrying, and waits still end.
    bad = pg_dsn.rsplit("/", 1)[0] + "/no_such_database"
    s = PgNotifySignal(bad, safety_poll=0.05, max_backoff=0.1, connect_timeout=2)
    try:
        assert woken(s, lambda: None)  # by the safety poll: there is nothing else
        assert not s.listening
    finally:
        s.close()


@pytest.mark.parametrize(
    ("channel", "safety_poll"),
    [("Proctor-Log", 0.25), ("proctor_log; DROP TABLE entries", 0.25), ("proctor_log", 0.0)],
    ids=["not-lower-case", "not-an-identifier", "no-interval"],
)
def test_a_signal_refuses_a_bad_channel_or_interval(channel: str, safety_poll: float) -> None:
    with pytest.raises(ValueError, match="expected"):
        PgNotifySignal("postgresql://unused", channel=channel, safety_poll=safety_poll)


def test_announced_is_the_largest_size_notified_and_ignores_other_payloads(
    store: PostgresLogStore, signal: PgNotifySignal, pg_dsn: str
) -> None:
    assert signal.announced == 0
    store.append(0, [b"a", b"b"], [tile(2)])
    assert until(lambda: signal.announced == 2)
    with psycopg.connect(pg_dsn, autocommit=True) as other:
        for payload in ("abc", "²", "-5", "1" * 20, "1"):  # not a size, too long, smaller
            other.execute("SELECT pg_notify(%s, %s)", (LOG_CHANNEL, payload))
    store.append(2, [b"c"], [tile(3)])
    assert until(lambda: signal.announced == 3)


def test_a_revocation_announced_by_one_node_reaches_the_others_and_not_itself(
    signal: PgNotifySignal, pg_dsn: str
) -> None:
    """ADR 0021: a revocation goes to the other nodes before it is recorded, through a
    ``NOTIFY`` outside any transaction; only a strictly shaped payload is passed on."""
    other = PgNotifySignal(pg_dsn, safety_poll=NEVER, max_backoff=0.2)
    heard: list[tuple[str, str]] = []
    own: list[tuple[str, str]] = []
    other.on_revocation(lambda kind, target: heard.append((kind, target)))
    signal.on_revocation(lambda kind, target: own.append((kind, target)))
    try:
        assert other.wait_listening(PATIENCE)
        with psycopg.connect(pg_dsn, autocommit=True) as sender:
            for payload in (
                "not json",
                '["execution", "ex_list"]',
                '{"from": "x", "kind": "execution"}',  # no target
                '{"from": "x", "kind": "execution", "target": "ex_extra", "seq": 3}',
                '{"from": "x", "kind": "execution", "target": 5}',
                '{"from": "x", "kind": "execution", "target": ""}',
                '{"from": "x", "kind": "execution", "target": "' + "e" * 600 + '"}',
            ):
                sender.execute("SELECT pg_notify(%s, %s)", (REVOKE_CHANNEL, payload))
        signal.announce("execution", "ex_first")
        assert until(lambda: heard == [("execution", "ex_first")])
        time.sleep(0.3)  # and its own announcement never came back to the announcer
        assert own == []
        assert heard == [("execution", "ex_first")]  # none of the malformed ones
        # The sender's session is killed while idle: the next announcement opens another.
        with psycopg.connect(pg_dsn, autocommit=True) as admin:

            def senders() -> int:
                query = (
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name = 'proctor-announce' AND datname = current_database()"
                )
                row = admin.execute(query).fetchone()
                return int(row[0]) if row else 0

            assert until(lambda: senders() == 2)  # each signal's sender opened its session at once
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'proctor-announce' AND datname = current_database()"
            ).fetchall()
        assert killed == [(True,), (True,)]
        signal.announce("warrant", "w_second")  # sent again on a new session: not lost
        assert until(lambda: ("warrant", "w_second") in heard)
    finally:
        other.close()
