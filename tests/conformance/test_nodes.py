"""Several governor processes on one store (``proctor serve --shared``, ADR 0016): any of
them serves any request, and none of them is fooled by what another one saw.

Each test opens two or three governors in shared mode on one data directory, in this
process (each has its own log writer, sequencer lock, state connections and caches, as
separate processes would); ``tests/integration/test_nodes.py`` runs real ``proctor
serve --shared`` processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from proctor.authorization.keys import PrincipalKey
from proctor.authorization.requests import sign_request
from proctor.errors import AuthenticationError
from proctor.governor.service import Governor


@pytest.fixture
def nodes(gov_data: Path, governor: Governor) -> Iterator[list[Governor]]:
    """Three shared governors on the fixture's data directory (its own governor closed)."""
    governor.close()
    opened = [Governor(gov_data, node=f"node-{n}", shared=True) for n in "abc"]
    try:
        yield opened
    finally:
        for gov in opened:
            gov.close()


def test_a_nonce_used_on_one_process_is_refused_on_every_other(gov_data: Path, nodes: list[Governor]) -> None:
    a, b, c = nodes
    alice = PrincipalKey.load(gov_data / "alice.key")
    now = int(a.now())
    captured = sign_request("GET", "/v1/executions", b"", alice, now=now)
    assert a.authenticate("GET", "/v1/executions", b"", captured) == "alice"
    for other in (b, c):
        with pytest.raises(AuthenticationError) as refused:
            other.authenticate("GET", "/v1/executions", b"", captured)
        assert refused.value.reason == "replayed"
    with pytest.raises(AuthenticationError):  # and on the first one again (its memory)
        a.authenticate("GET", "/v1/executions", b"", captured)
    fresh = sign_request("GET", "/v1/executions", b"", alice, now=now)
    assert c.authenticate("GET", "/v1/executions", b"", fresh) == "alice"


def test_a_nonce_claimed_concurrently_on_two_processes_is_accepted_once(
    gov_data: Path, nodes: list[Governor]
) -> None:
    a, b, _ = nodes
    alice = PrincipalKey.load(gov_data / "alice.key")
    signed = [sign_request("GET", "/v1/executions", b"", alice, now=int(a.now())) for _ in range(20)]

    async def one(gov: Governor, headers: dict[str, str]) -> bool:
        try:
            await gov.authenticate_async("GET", "/v1/executions", b"", headers)
        except AuthenticationError:
            return False
        return True

    async def everyone() -> list[bool]:
        return await asyncio.gather(*(one(gov, h) for h in signed for gov in (a, b)))

    answers = asyncio.run(everyone())
    assert sum(answers) == len(signed)  # each request once, on one of the two
