"""A log in PostgreSQL whose server stops and starts again under it, exclusive and
shared (:class:`proctor.store.locks_pg.PgSequencer`): appends fail while the server is
down, nothing is acknowledged, and the same writer goes on once it is back, without a
reopen, on one tree without a gap (the end-to-end rules: tests/integration/test_pg_outage.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pg_support import PgCluster
from proctor.errors import ProctorError
from proctor.lineage.log import Log
from proctor.store.postgres import PostgresLogStore

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def ev(i: int) -> dict[str, Any]:
    return {"v": 1, "type": "decision", "time": "2026-12-03T13:00:00Z", "n": i}


@pytest.fixture
def data(tmp_path: Path, pg_dsn: str) -> Path:
    """A data directory's keys, its log in PostgreSQL (signed empty), no file of its own."""
    Log.initialize(tmp_path / "d", origin="test.example/pg-outage").close()
    (tmp_path / "d" / "proctor.db").unlink()
    PostgresLogStore(pg_dsn, create=True).close()
    with Log.open(tmp_path / "d", store=pg_dsn) as log:
        log.start_writing()
    return tmp_path / "d"


@pytest.mark.parametrize("tried", [True, False], ids=["appended-during", "idle-during"])
@pytest.mark.parametrize("shared", [False, True], ids=["exclusive", "shared"])
def test_a_writer_goes_on_by_itself_once_its_server_is_back(
    data: Path, pg_dsn: str, pg_cluster: PgCluster, shared: bool, tried: bool
) -> None:
    log = Log.open(data, shared=shared, store=pg_dsn)
    try:
        assert log.append_many([ev(0), ev(1)]) == [0, 1]
        pg_cluster.stop()
        try:
            if tried:
                with pytest.raises(ProctorError):
                    log.append(ev(2))  # not acknowledged
        finally:
            pg_cluster.start()
        # The server ended every session: the pool's connections and (shared) the
        # sequencer lock's are found dead and replaced, and the first append succeeds.
        assert log.append(ev(3)) == 2
        assert log.append(ev(4)) == 3
    finally:
        log.close()
    with Log.open(data, store=pg_dsn) as again:
        assert again.size == 4
        assert again.verify_all().size == 4
        assert [json.loads(again.leaf(i))["n"] for i in range(4)] == [0, 1, 3, 4]
