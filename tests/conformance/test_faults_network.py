"""The network to the governor turns slow (every chunk held longer than the lease),
silent (dropped: a partition) or half-open (requests arrive, answers are lost) at a random
point of concurrent authorizations, runs and appends: every enforcer fails closed within
its lease TTL, nothing runs unauthorized, nothing acknowledged is lost, and once the
network is back everything works again and ``proctor log verify`` passes.

Every client reaches a real ``proctor serve`` through ``tests/tcp_proxy.py``; the checks
are those of ``tests/fault_checks.py``; the seed (printed) replays with
``PROCTOR_FAULT_SEED``, ``PROCTOR_FAULT_ROUNDS`` runs more rounds than CI.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fault_checks import COLUMNS, Tally, check_after_fault
from fault_workload import (
    Ledger,
    Workload,
    describe,
    fault_rng,
    fault_rounds,
    kill_tokens,
    survivors,
    tokens,
    wait_gone,
    warm,
)
from figures import record
from gov_server import GovernorServer
from gov_support import POLICIES
from tcp_proxy import TcpProxy

TTL = 2.0  # the run policy's lease
GRACE = 0.5
MARGIN = 3.0
FAULTS = ("slow", "drop", "half-open")
OPERATIONS = ("authorize", "run", "append")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GovernorServer]:
    gov = GovernorServer(tmp_path_factory.mktemp("network"), policy=POLICIES / "run")
    yield gov
    gov.stop()


@pytest.mark.parametrize("fault", FAULTS)
def test_a_slow_dropped_or_half_open_network_makes_every_enforcer_fail_closed_within_its_lease(
    server: GovernorServer, tmp_path: Path, fault: str
) -> None:
    """A slow, dropped or half-open network to the governor makes every enforcer fail
    closed within its lease, and loses nothing the governor acknowledged."""
    rng, _seed = fault_rng(f"network-{fault}")
    proxy = TcpProxy(server.port)
    markers = tmp_path / "markers"
    markers.mkdir()
    ledger = Ledger()
    tally = Tally(fault, "network to the governor")
    waited: list[float] = []
    hit = 0
    try:
        for n in range(fault_rounds(1)):
            with Workload(lambda: proxy.url, server.data, markers, ledger, rng) as load:
                warm(load, ledger, markers)
                delay = rng.uniform(0.0, 1.0)
                lag = rng.uniform(TTL, 2 * TTL)
                detail = f" ({lag:.2f} s per chunk)" if fault == "slow" else ""
                print(f"round {n}: network {fault}{detail} {delay:.3f} s after the workload was warm")
                time.sleep(delay)
                hit += len(survivors(tokens(markers)))
                if fault == "slow":
                    proxy.slow(lag)
                elif fault == "drop":
                    proxy.drop()
                else:
                    proxy.half_open()
                # (b) No renewal answer arrives in time: every command dies within its lease.
                left, took = wait_gone(tokens(markers), TTL + GRACE + MARGIN)
                assert left == [], f"commands outlived their lease, network {fault}: {describe(left)}"
                waited.append(took)
                proxy.forward()
                warm(load, ledger, markers)  # and everything works again
            assert survivors(tokens(markers)) == []
            tally.round_done(check_after_fault(server, ledger, markers), ledger)
    finally:
        proxy.close()
        kill_tokens(tokens(markers))
    record(
        f"faults-network-{fault}",
        section="Faults injected",
        summary=[
            f"network {fault} to the governor: {tally.rounds} round(s), {hit} governed process(es) running "
            f"at the fault; each was dead {max(waited):.2f} s after it at the latest (lease {TTL:.0f} s)",
        ],
        columns=COLUMNS,
        rows=tally.rows(OPERATIONS),
    )
