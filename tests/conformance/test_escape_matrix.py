"""The escape matrix, what each containment backend holds as root and unprivileged against
a command that tries to outlive it (setsid, a daemon's double fork, a fork storm, nohup,
disown, leaving its cgroup, ptrace, SIGKILL or SIGSTOP of its supervisor).

Each cell (``tests/escape_matrix.py``) runs a fresh supervisor that spawns the command
with a lease, as ``proctor run`` does; then the tree is terminated, or the supervisor
can no longer act, and ``/proc`` is scanned for every process carrying the cell's
marker. The outcome must be exactly the one the matrix expects (``EXPECTED``): a cell
that dies where an escape is expected fails as surely as an escape where death is.
The unprivileged half runs in one process as uid 65534 (``setpriv``), beside the root
half. The same data renders docs/containment.md's table (checked here too).
"""

from __future__ import annotations

import os
import platform
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import escape_matrix as em
from figures import record

ROOT = os.geteuid() == 0
DOC = Path(__file__).parents[2] / "docs" / "containment.md"
CELLS = [(p, c, e) for p in em.PRIVILEGES for c in em.CONFIGS for e in em.ESCAPES]
Cell = tuple[str, str, str]


class _Half:
    """The selected cells of one privilege, run all at once in a thread (beside the other
    half, a few cells at a time) and then looked up per test."""

    def __init__(
        self, run: Callable[[list[tuple[str, str]]], list[em.Observation] | str], cells: list[tuple[str, str]]
    ) -> None:
        self._cells = cells
        self._done = threading.Event()
        self._result: dict[tuple[str, str], em.Observation] | str = "not run"
        threading.Thread(target=self._run, args=(run,), name="escape-matrix-half", daemon=True).start()

    def _run(self, run: Callable[[list[tuple[str, str]]], list[em.Observation] | str]) -> None:
        try:
            outcome = run(self._cells)
            self._result = outcome if isinstance(outcome, str) else {(o.config, o.escape): o for o in outcome}
        except Exception as e:  # reported by every cell of the half
            self._result = f"error: {type(e).__name__}: {e}"
        finally:
            self._done.set()

    def wait(self) -> None:
        self._done.wait(timeout=400)

    def get(self, config: str, escape: str) -> em.Observation | str:
        self.wait()
        if isinstance(self._result, str):
            return self._result
        return self._result[(config, escape)]


@pytest.fixture(scope="module")
def checked() -> Iterator[dict[Cell, em.Observation]]:
    """Cells whose checks passed; the figures are recorded once every cell is in."""
    cells: dict[Cell, em.Observation] = {}
    yield cells
    if len(cells) == len(CELLS):
        _record(cells)


@pytest.fixture(scope="module")
def halves(request: pytest.FixtureRequest) -> Iterator[dict[str, _Half]]:
    """The selected cells of each privilege this process can run: started at once, side
    by side (as root, the unprivileged half in one process of its own as uid 65534)."""
    selected: dict[str, list[tuple[str, str]]] = {p: [] for p in em.PRIVILEGES}
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (
            isinstance(item, pytest.Function)
            and item.module is not None
            and item.module.__name__ == __name__
            and "privilege" in params
        ):
            selected[str(params["privilege"])].append((str(params["config"]), str(params["escape"])))
    runners: dict[str, Callable[[list[tuple[str, str]]], list[em.Observation] | str]] = {
        em.privilege(): em.run_matrix
    }
    if ROOT:
        runners["unprivileged"] = em.run_unprivileged
    started = {p: _Half(run, selected[p]) for p, run in runners.items() if selected[p]}
    yield started
    for half in started.values():
        half.wait()


def _observe(privilege: str, config: str, escape: str, halves: dict[str, _Half]) -> em.Observation:
    if privilege not in halves:
        return em.Observation(config, escape, privilege, "n/a", detail="the test runs unprivileged")
    got = halves[privilege].get(config, escape)
    if isinstance(got, str):
        if got.startswith("error"):
            pytest.fail(f"the {privilege} half did not run: {got}")
        return em.Observation(config, escape, privilege, "n/a", detail=got)
    return got


@pytest.mark.parametrize(("privilege", "config", "escape"), CELLS, ids=["-".join(cell) for cell in CELLS])
def test_each_escape_from_each_backend_ends_as_the_matrix_says(
    privilege: str,
    config: str,
    escape: str,
    halves: dict[str, _Half],
    checked: dict[Cell, em.Observation],
) -> None:
    """Each escape from each containment backend, as root and unprivileged, ends as the
    published matrix says: every process dead within the bound, or the escape it names."""
    obs = _observe(privilege, config, escape, halves)
    if obs.outcome == "error":
        pytest.fail(f"the cell could not run: {obs.detail}")
    if obs.outcome == "n/a":
        checked[(privilege, config, escape)] = obs
        pytest.skip(f"n/a: {config} is not available {privilege} here: {obs.detail}")
    assert (why := em.escape_made(obs)) is None, f"the escape was not made: {why}: {obs}"
    forced = em.CONFIGS[config]
    assert set(forced or ()) <= set(obs.backends), obs
    want = em.expected(config, escape, privilege, obs.backends)
    assert obs.outcome == want or (want == em.M and obs.outcome in (em.D, em.E)), (
        f"{privilege} {config} ({', '.join(obs.backends)}) against {escape}: expected {want}, "
        f"found {obs.outcome}; attempt: {obs.attempt or '-'}; survivors: {list(obs.survivors)}; "
        f"report: {list(obs.lines)}; supervisor: {obs.detail}"
    )
    if obs.outcome != em.E:
        assert obs.ms is not None
        assert not obs.survivors
    checked[(privilege, config, escape)] = obs


def test_docs_containment_shows_the_matrix_this_test_checks() -> None:
    """docs/containment.md shows exactly the expected matrix that the escape test checks."""
    text = DOC.read_text(encoding="utf-8")
    table = em.markdown_table()
    assert table in text, f"docs/containment.md's table is stale; regenerate it with\n{table}"
    assert "test_escape_matrix.py" in text


def _shown(obs: em.Observation) -> str:
    if obs.outcome == "n/a":
        return "n/a"
    if obs.outcome == em.E:
        return "escapes"
    return f"{'refused, ' if obs.outcome == em.R else ''}dies {obs.ms} ms"


def _record(cells: dict[Cell, em.Observation]) -> None:
    ran = [o for o in cells.values() if o.outcome != "n/a"]
    escaped = [o for o in cells.values() if o.outcome == em.E]
    raced = [o for o in ran if em.expected(o.config, o.escape, o.privilege, o.backends) == em.M]
    unavailable = sorted({f"{c} {p}: {o.detail}" for (p, c, _), o in cells.items() if o.outcome == "n/a"})
    slowest = max((o.ms or 0) for o in ran) if ran else 0
    record(
        "escape-matrix",
        section="Escape matrix",
        summary=[
            f"{len(ran)} cells run ({sum(o.privilege == 'root' for o in ran)} as root, "
            f"{sum(o.privilege == 'unprivileged' for o in ran)} as uid 65534), each with a fresh "
            "supervisor and a lease TTL of "
            f"{em.TTL} s; every outcome equals the expected matrix of docs/containment.md",
            f"dead within: terminate_tree's return + {em.AFTER_TERMINATE} s, or {em.AFTER_ATTACK} s "
            f"after the supervisor was killed or stopped; slowest: {slowest} ms; times are to the "
            "last process gone, from the termination request (terminate_tree with a "
            f"{em.GRACE} s SIGTERM grace, which every escapee ignores) or from the attack",
            f"escapes: {len(escaped)}, each where the matrix says escapes or may escape; cells where "
            f"a race decides (may escape): {len(raced)}, of which {sum(o.outcome == em.E for o in raced)} "
            "escaped in this run",
            *(f"n/a: {line}" for line in unavailable),
            f"kernel {platform.release()}",
        ],
        columns=["backends", "privilege", *em.ESCAPES],
        rows=[
            [em.config_label(c), p] + [_shown(cells[(p, c, e)]) for e in em.ESCAPES]
            for c in em.CONFIGS
            for p in em.PRIVILEGES
        ],
    )
