"""A governor's memory stays flat under a steady stream of requests: what a request
allocates is freed once it is answered, denials and refusals included.

Found twice by fuzzing: every document with a float (a tool call's ``temperature``) and
every append refused by a failed log kept its frames alive on one exception instance's
growing traceback. Here a real ``proctor serve`` answers thousands of authorizations
with float arguments (allowed and denied) and its resident
memory, read from ``/proc``, may not grow beyond what warming up explains.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gov_server import GovernorServer, client_of

pytestmark = pytest.mark.slow

POLICY = """
@id("temperature")
permit (principal, action == Proctor::Action::"mcp.call", resource == Proctor::Tool::"llm/complete")
when { context.arguments.contains("temperature=0.7") };
"""
LIFTED = (  # one client calls back to back: the default request rates would refuse it, not load it
    "[quotas.principals.alice]\nmax_requests_per_second = 100000\nmax_authorizations_per_second = 100000\n"
)
ROUNDS = 1500
TEXT = "x" * 2000  # a few kilobytes per request, so that keeping each would show


@pytest.fixture
def gov(tmp_path: Path) -> Iterator[GovernorServer]:
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "tools.cedar").write_text(POLICY)
    server = GovernorServer(tmp_path / "gov", policy=tmp_path / "policy", config=LIFTED)
    try:
        yield server
    finally:
        server.stop()


def resident_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def load(gov: GovernorServer, rounds: int) -> None:
    with client_of(gov) as alice:
        for i in range(rounds):
            body = {
                "action": "mcp.call",
                "resource": "llm/complete",
                "arguments": {"temperature": 0.7 if i % 3 else 0.9, "top_p": 0.95, "i": i, "text": TEXT},
            }
            answer = alice.authorize(body)
            assert answer["allow"] is (i % 3 != 0), answer


def test_memory_stays_flat_under_float_arguments(gov: GovernorServer) -> None:
    assert gov.proc is not None
    load(gov, 300)  # warm up: imports, caches, connection pools, arenas
    warm = resident_kib(gov.proc.pid)
    load(gov, ROUNDS)
    grown = resident_kib(gov.proc.pid) - warm
    # Keeping one request's document and frames (several kB each) would be tens of MB.
    assert grown < 12 * 1024, f"resident memory grew {grown} KiB over {ROUNDS} authorizations"
