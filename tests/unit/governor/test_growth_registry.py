"""The presented warrants a governor keeps are a bounded cache: shared mode, a process
that started (or renewed) an execution another process finished never hears of its end,
so the cache, not the end, must bound them; a miss verifies the warrant again."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from gov_exec import allow, start_body
from gov_fixtures import gov_data, governor
from proctor.authorization.warrants import VerifiedWarrant
from proctor.governor import registry as registry_module
from proctor.governor.registry import ExecutionRegistry
from proctor.governor.service import Governor

__all__ = ["gov_data", "governor"]  # fixtures, used by name

CAP = 50


def warrant(n: int) -> VerifiedWarrant:
    return cast(VerifiedWarrant, ("warrant", n))  # the registry only keeps it


def test_presented_warrants_are_kept_least_recently_used_first_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "PRESENTED_CACHE_SIZE", CAP, raising=False)
    reg = ExecutionRegistry([], [], lambda write: None)
    for n in range(300):  # started here, ended by another process: ended() never runs here
        reg.started(f"ex_{n}", "alice", 0, warrant(n))
        if n >= 1:
            assert reg.presented("ex_1") == warrant(1)  # renewed here all along: kept
    assert len(reg._verified) == CAP  # was 300
    assert reg.presented("ex_0") is None  # the oldest went first: a renewal verifies it again
    assert reg.presented("ex_299") == warrant(299)
    reg.remember("ex_0", warrant(0))  # verified again: kept again, the cap holds
    assert len(reg._verified) == CAP
    assert reg.presented("ex_0") == warrant(0)
    reg.ended("ex_0")
    assert reg.presented("ex_0") is None


def test_a_shared_process_forgets_executions_another_one_finished(
    gov_data: Path, governor: Governor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "PRESENTED_CACHE_SIZE", 20, raising=False)
    governor.close()
    a = Governor(gov_data, node="node-a", shared=True)
    b = Governor(gov_data, node="node-b", shared=True)
    try:
        survivor = a.executions.start("alice", start_body(allow(a, "survivor"), "survivor"))["execution"]
        for n in range(60):
            token = allow(a, f"run{n}")
            ex = a.executions.start("alice", start_body(token, f"run{n}"))["execution"]
            assert b.executions.finish("alice", ex, {"outcome": "completed", "exit_status": 0})["status"] == (
                "completed"
            )
        assert len(a.executions.registry._verified) <= 20  # was 61
        assert a.executions.registry.presented(survivor) is None  # evicted while running
        assert a.executions.renew("alice", survivor, {"integrity": "ok"})["ok"] is True  # verified again
        assert a.executions.registry.presented(survivor) is not None
        b.revoke("execution", survivor, reason="test", by="admin")
        assert a.executions.renew("alice", survivor, {"integrity": "ok"})["terminate"] == "revoked"
    finally:
        a.close()
        b.close()
