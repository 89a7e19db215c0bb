"""A bounded soak: a real governor under concurrent authorizations, executions, revocations
and direct appends (``tests/soak_support.py``), stopped cleanly, then held to its log.

The soak runs once per backend (a module fixture): SQLite with one ``proctor serve
--shared`` and a second writer, and PostgreSQL with three nodes. It lasts
``PROCTOR_SOAK_SECONDS`` (default 40; PostgreSQL half of it); ``PROCTOR_SOAK_SEED``
repeats a run (the seed is in every failure message). ``python scripts/soak.py --long``
runs it for longer and prints the figures.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from figures import record
from pg_support import PgCluster, pg_params
from soak_support import FIGURE_COLUMNS, Soaked, pg_soak_nodes, soak, soak_seed, sqlite_soak_node

pytestmark = pytest.mark.slow


def soak_seconds(backend: str) -> float:
    seconds = float(os.environ.get("PROCTOR_SOAK_SECONDS", "40"))
    return seconds if backend == "sqlite" else max(10.0, seconds / 2)


@pytest.fixture(scope="module", params=pg_params("sqlite", "postgresql"))
def soaked(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Soaked]:
    backend: str = request.param
    root = tmp_path_factory.mktemp(f"soak-{backend}")
    if backend == "sqlite":
        yield soak(sqlite_soak_node(root), backend, root, seconds=soak_seconds(backend), seed=soak_seed())
        return
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    name = cluster.create_database()
    try:
        yield soak(
            pg_soak_nodes(root, cluster.dsn(name), 3),
            backend,
            root,
            seconds=soak_seconds(backend),
            seed=soak_seed(),
        )
    finally:
        if not cluster.running():
            cluster.start()
        cluster.drop_database(name)


def test_under_concurrent_load_every_answer_keeps_its_rule(soaked: Soaked) -> None:
    """Under concurrent load every answer keeps its rule: an allowed principal is allowed, a
    denied one denied, a revoked execution ends as terminated, a start under a revoked
    warrant and an authorization by a revoked principal are refused."""
    assert soaked.result.failures == [], soaked.context()
    counts = soaked.result.counts
    assert counts["denied"] > 0, counts
    assert counts["allowed"] > 0, counts
    assert counts["starts refused (warrant revoked)"] > 0, counts
    assert counts["authorizations refused (principal revoked)"] > 0, counts


def test_the_log_of_a_soaked_governor_keeps_every_invariant(soaked: Soaked) -> None:
    """After a soak, every started execution follows an allow and its warrant, every
    revoked one ended after its revocation, none ended twice, no leaf index is missing or
    repeated, and every entry proves included in the latest signed checkpoint."""
    report = soaked.report
    assert report.ok, f"{soaked.context()}\n{report}"
    assert report.open_executions == [], soaked.context()
    assert report.inclusion_proofs == report.events > 0
    assert report.revoked > 0
    assert report.executions_started > report.revoked
    assert report.checkpoints > 1


def test_proctor_log_verify_passes_on_the_log_of_a_soaked_governor(soaked: Soaked) -> None:
    assert soaked.verify_status == 0, f"{soaked.context()}\n{soaked.verify_out}{soaked.verify_err}"
    verified = json.loads(soaked.verify_out)
    assert verified["ok"] is True
    assert verified["size"] == soaked.report.events
    assert "the state tables agree with the log" in soaked.verify_err


def test_every_answer_acknowledged_during_a_soak_is_in_the_log(soaked: Soaked) -> None:
    """Nothing acknowledged is lost: every log index an answer named holds the event it
    implies, and every execution a client saw start has its one end, as expected."""
    assert soaked.ledger_problems == [], soaked.context()
    assert soaked.answers_checked == (
        len(soaked.result.acks)
        + len(soaked.result.expects)
        + len(soaked.result.added)
        + len(soaked.result.runs)
    )
    assert soaked.answers_checked > 0


def test_every_execution_revoked_during_a_soak_has_its_process_tree_dead(soaked: Soaked) -> None:
    revoked = [r for r in soaked.result.runs if r.kind in ("revoked", "principal")]
    assert revoked, soaked.context()
    assert [r for r in revoked if r.survivors or r.status != 79] == [], soaked.context()
    assert {r.kind for r in revoked} == {"revoked", "principal"}
    # All rules held: publish what was done and checked (derived from the run, never typed in).
    _record(soaked)


def _record(soaked: Soaked) -> None:
    if not soaked.ok:
        return
    record(
        f"soak-{soaked.backend}",
        section="Soak",
        summary=soaked.summary(),
        columns=FIGURE_COLUMNS,
        rows=[soaked.figures()],
    )
