"""The escape matrix: every containment backend, as root and unprivileged, against a
command that tries to outlive it (setsid, a daemon's double fork, a fork storm, nohup,
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
from collections.abc import Iterator
from pathlib import Path

import pytest

import escape_matrix as em
from figures import record

ROOT = os.geteuid() == 0
DOC = Path(__file__).parents[2] / "docs" / "containment.md"
CELLS = [(p, c, e) for p in em.PRIVILEGES for c in em.CONFIGS for e in em.ESCAPES]
Cell = tuple[str, str, str]


class _Half:
    """The cells of one privilege that this process cannot run one by one: run all at once
    (in a thread, beside the other half), then looked up per test."""

    def __init__(self, cells: list[tuple[str, str]]) -> None:
        self._cells = cells
        self._done = threading.Event()
        self._result: dict[tuple[str, str], em.Observation] | str = "not run"
        threading.Thread(target=self._run, name="escape-matrix-unprivileged", daemon=True).start()

    def _run(self) -> None:
        try:
            outcome = em.run_unprivileged(self._cells)
            self._result = outcome if isinstance(outcome, str) else {(o.config, o.escape): o for o in outcome}
        except Exception as e:  # reported by every cell that needs it
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
def other_half(request: pytest.FixtureRequest) -> Iterator[_Half | None]:
    """As root, the unprivileged half (when any of its cells is selected), started at once
    in one process of its own, beside the root half."""
    wanted = [
        (str(item.callspec.params["config"]), str(item.callspec.params["escape"]))
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and hasattr(item, "callspec")
        and item.callspec.params.get("privilege") == "unprivileged"
    ]
    half = _Half(wanted) if ROOT and wanted else None
    yield half
    if half is not None:
        half.wait()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("escapes")


def _observe(privilege: str, config: str, escape: str, other: _Half | None, workdir: Path) -> em.Observation:
    if privilege == em.privilege():
        if (reason := em.unavailable(config)) is not None:
            return em.Observation(config, escape, privilege, "n/a", detail=reason)
        return em.run_cell(config, escape, privilege, workdir)
    if other is None:
        return em.Observation(config, escape, privilege, "n/a", detail="the test runs unprivileged")
    got = other.get(config, escape)
    if isinstance(got, str):
        if got.startswith("error"):
            pytest.fail(f"the unprivileged half did not run: {got}")
        return em.Observation(config, escape, privilege, "n/a", detail=got)
    return got


@pytest.mark.parametrize(("privilege", "config", "escape"), CELLS, ids=["-".join(cell) for cell in CELLS])
def test_each_escape_from_each_backend_ends_as_the_matrix_says(
    privilege: str,
    config: str,
    escape: str,
    other_half: _Half | None,
    workdir: Path,
    checked: dict[Cell, em.Observation],
) -> None:
    """Each escape from each containment backend, as root and unprivileged, ends as the
    published matrix says: every process dead within the bound, or the escape it names."""
    obs = _observe(privilege, config, escape, other_half, workdir)
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
            "last process gone, from the termination request or the attack",
            f"escapes (each one the matrix expects): {len(escaped)}; cells where a race decides "
            f"(may escape): {len(raced)}, of which {sum(o.outcome == em.E for o in raced)} escaped this run",
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
