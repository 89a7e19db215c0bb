"""The members of ``python -m bench``, in the order they run and are reported.

Each module defines ``MEMBER`` (:class:`bench.lib.Member`). Adding a benchmark: a module
here with its ``MEMBER``, and a line below.
"""

from __future__ import annotations

from bench.lib import Member
from bench.suite import leases, log, mcp, policy, revoke, run, warrant, workers

MEMBERS: list[Member] = [
    policy.MEMBER,
    warrant.MEMBER,
    log.MEMBER,
    run.MEMBER,
    revoke.MEMBER,
    leases.MEMBER,
    workers.MEMBER,
    mcp.MEMBER,
]

__all__ = ["MEMBERS"]
