"""The governor is a composition root of collaborators (ADR 0012): no mixins, no import
cycle between its modules, and parts that work as their interfaces say when built on
their own over a real data directory.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import proctor.governor
from proctor.config import QuotaConfig
from proctor.datadir import DataDir
from proctor.errors import PrincipalError
from proctor.governor._events import principal_event
from proctor.governor.admin import Administration
from proctor.governor.authorize import Authorizer
from proctor.governor.executions import Executions
from proctor.governor.issuance import WarrantIssuer
from proctor.governor.receipts import execution_receipt
from proctor.governor.recorder import Recorder
from proctor.governor.service import Governor, initialize
from proctor.governor.startup import open_trust
from proctor.governor.trust import TrustView
from proctor.lineage.log import Log
from proctor.store.state import RevocationRecord, StateStore

PACKAGE = Path(proctor.governor.__file__).parent
PARTS = (Governor, TrustView, Recorder, Administration, Authorizer, WarrantIssuer, Executions)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The sibling modules ``path`` imports, anywhere in it (under ``TYPE_CHECKING`` and
    inside functions too: import-linter counts those as well)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module == "proctor.governor":
                found.update(a.name for a in node.names if a.name in modules)
            elif node.module.startswith("proctor.governor."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[2] for a in node.names if a.name.startswith("proctor.governor."))
    return found & modules


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path (its first and last module the same), or ``None``."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        path.append(module)
        for target in sorted(graph.get(module, ())):
            cycle = visit(target)
            if cycle is not None:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle is not None:
            return cycle
    return None


def test_the_governors_modules_form_no_import_cycle() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    graph = {m: _imports(PACKAGE / f"{m}.py", modules) - {m} for m in modules}
    cycle = import_cycle(graph)
    assert cycle is None, "proctor.governor imports in a cycle: " + " -> ".join(cycle or [])


def test_no_part_imports_the_service() -> None:
    # The service composes the parts; a part that imported it would make a cycle.
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    for part in ("trust", "recorder", "issuance", "startup", "admin", "authorize", "executions", "receipts"):
        assert "service" not in _imports(PACKAGE / f"{part}.py", modules), part


def test_the_cycle_finder_finds_cycles() -> None:
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("part", PARTS, ids=[p.__name__ for p in PARTS])
def test_the_governor_and_its_parts_are_composed_not_inherited(part: type) -> None:
    assert part.__bases__ == (object,), f"{part.__name__} inherits from {part.__bases__}"


# What stands for the whole governor: the service, and the protocol that named it for
# the parts once handed it (ExecutionHost, gone since they receive their collaborators).
GOVERNOR_NAMES = frozenset({"Governor", "ExecutionHost", "governor", "gov"})
NARROW = (
    (Executions.__init__, "Executions"),
    (execution_receipt, "execution_receipt"),
)


def _annotation_names(annotation: object) -> set[str]:
    """Every name an annotation mentions (a string under ``from __future__ import
    annotations``; a class otherwise)."""
    if isinstance(annotation, type):
        return {annotation.__name__}
    if not isinstance(annotation, str):
        return set()
    return {
        node.id if isinstance(node, ast.Name) else node.attr
        for node in ast.walk(ast.parse(annotation, mode="eval"))
        if isinstance(node, ast.Name | ast.Attribute)
    }


@pytest.mark.parametrize(("function", "name"), NARROW, ids=[n for _, n in NARROW])
def test_executions_and_receipts_are_handed_their_collaborators_not_the_governor(
    function: Callable[..., object], name: str
) -> None:
    for parameter in inspect.signature(function).parameters.values():
        if parameter.name == "self":
            continue
        assert parameter.name not in GOVERNOR_NAMES, f"{name} takes a parameter {parameter.name!r}"
        named = _annotation_names(parameter.annotation) & GOVERNOR_NAMES
        assert not named, f"{name}({parameter.name}: {parameter.annotation}) names the governor"


def test_a_governors_executions_hold_no_reference_to_the_governor(tmp_path: Path) -> None:
    initialize(tmp_path / "data", origin="test.example/held")
    with Governor(tmp_path / "data") as governor:
        held = [k for k, v in vars(governor.executions).items() if v is governor]
        assert held == [], f"Executions keeps the governor as {held}"


def test_the_annotation_reader_sees_the_governor() -> None:
    assert _annotation_names("ExecutionHost") == {"ExecutionHost"}
    assert "Governor" in _annotation_names("service.Governor | None")
    assert _annotation_names(Governor) == {"Governor"}
    assert _annotation_names("StateStore") & GOVERNOR_NAMES == set()


# -- the parts on their own, over a real data directory --------------------------------


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[TrustView, Recorder, StateStore]]:
    data = tmp_path / "data"
    initialize(data, origin="test.example/parts")
    opened = DataDir.open(data)
    log = Log.open(opened.path)
    state = StateStore(opened.db_path)
    try:
        trust, report = open_trust(opened, log, state)
        assert report is not None
        assert report.ok
        yield trust, Recorder(log, state, trust), state
    finally:
        log.close()
        state.close()


def test_a_principal_change_committed_by_the_recorder_is_read_at_once(
    parts: tuple[TrustView, Recorder, StateStore],
) -> None:
    trust, recorder, state = parts
    before = trust.principal("admin")  # now held in memory
    assert before is not None
    assert trust.is_admin("admin")
    suspended = dataclasses.replace(before, status="suspended", updated="2999-01-01T00:00:00.000Z")
    event = principal_event("admin", "suspended", before.attrs, before.zone, 0.0, node="t", by="t")
    with recorder.admin_lock:
        recorder.commit_principals([event], [suspended])
    assert trust.principal("admin") == suspended
    assert not trust.is_admin("admin")
    assert state.principal("admin") == suspended


def test_a_revocation_after_the_last_change_counts_as_suspension(
    parts: tuple[TrustView, Recorder, StateStore],
) -> None:
    trust, _, state = parts
    stamp = "2999-01-01T00:00:00.000Z"  # after the row's last change
    state.put_revocation(RevocationRecord("principal", "admin", "old", "admin", stamp, 3))
    trust.forget_principal("admin")
    record = trust.principal("admin")
    assert record is not None
    assert record.status == "suspended"
    assert trust.active_admins() == []


def test_an_untrusted_state_fails_closed_in_every_read(state: StateStore) -> None:
    trust = TrustView(state, engine=None, bundle_error="x", state_problem="rows disagree")
    assert trust.state_problem == "rows disagree"
    assert trust.engine is None
    assert not trust.is_admin("admin")
    assert trust.warrant_revoked("any-warrant")


def test_executions_work_built_from_the_parts_alone(tmp_path: Path) -> None:
    initialize(tmp_path / "data", origin="test.example/executions")
    opened = DataDir.open(tmp_path / "data")
    log = Log.open(opened.path)
    state = StateStore(opened.db_path)
    suspended: list[str] = []
    try:
        trust, _ = open_trust(opened, log, state)
        executions = Executions(
            state=state,
            log=log,
            recorder=Recorder(log, state, trust),
            trust=trust,
            clock=lambda: 1_000_000.0,
            node="parts",
            quotas=QuotaConfig(),
            warrant_public_key=bytes(32),
            suspend=suspended.append,
            log_signer=opened.log_signer,
        )
        assert executions.running_count("admin") == 0
        assert executions.sweep() == []
        with pytest.raises(PrincipalError, match="no execution 'ex_none'"):
            executions.receipt("ex_none")
        with pytest.raises(PrincipalError, match="no execution 'ex_none' of 'admin'"):
            executions.renew("admin", "ex_none", {})
        assert suspended == []
    finally:
        log.close()
        state.close()
