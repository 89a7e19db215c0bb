"""docs/conformance.md (scripts/gen_conformance.py) lists every conformance rule the test
files hold, and its --check names what is missing, extra or changed, without running a test."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "conformance.md"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_conformance", ROOT / "scripts" / "gen_conformance.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    target = tmp_path / "conformance"
    shutil.copytree(ROOT / "tests" / "conformance", target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_the_committed_doc_is_current(gen: ModuleType) -> None:
    problems = gen.check(DOC.read_text(encoding="utf-8"))
    assert problems == [], (
        "docs/conformance.md is out of date: run python scripts/gen_conformance.py\n" + "\n".join(problems)
    )


def test_the_doc_has_a_row_for_every_rule(gen: ModuleType) -> None:
    rows = gen.documented(DOC.read_text(encoding="utf-8"))
    rules = [rule for module in gen.collect() for rule in module.rules]
    assert len(rules) > 100
    assert len(rows) == len(rules)


def test_an_added_test_is_reported_missing(gen: ModuleType, copy: Path) -> None:
    path = copy / "test_policy_rollback.py"
    path.write_text(
        path.read_text(encoding="utf-8")
        + '\n\ndef test_a_new_rule_nobody_documented() -> None:\n    """A new rule is held."""\n',
        encoding="utf-8",
    )
    problems = gen.check(DOC.read_text(encoding="utf-8"), copy)
    assert problems == [
        "missing from docs/conformance.md: "
        "tests/conformance/test_policy_rollback.py::test_a_new_rule_nobody_documented ('A new rule is held')"
    ]


def test_a_renamed_test_is_reported(gen: ModuleType, copy: Path) -> None:
    path = copy / "test_policy_rollback.py"
    text = path.read_text(encoding="utf-8")
    old = "def test_activation_history_is_append_only("
    assert old in text
    path.write_text(text.replace(old, "def test_activation_history_only_grows("), encoding="utf-8")
    problems = gen.check(DOC.read_text(encoding="utf-8"), copy)
    assert any("missing" in p and "test_activation_history_only_grows" in p for p in problems), problems
    assert any(
        "no such test" in p and "test_policy_rollback.py::test_activation_history_is_append_only" in p
        for p in problems
    ), problems
    assert len(problems) == 2


def test_a_changed_rule_or_case_count_is_reported(gen: ModuleType, copy: Path) -> None:
    path = copy / "test_identity.py"
    text = path.read_text(encoding="utf-8")
    old = '["ALICE", "Alice", "aLiCe"]'
    assert old in text
    path.write_text(text.replace(old, '["ALICE", "Alice"]'), encoding="utf-8")
    problems = gen.check(DOC.read_text(encoding="utf-8"), copy)
    assert len(problems) == 1
    assert "test column changed" in problems[0], problems
    assert "(2 cases)" in problems[0], problems


def test_a_rule_reads_as_a_sentence(gen: ModuleType) -> None:
    assert (
        gen.name_as_sentence("test_a_revoked_admin_keeps_no_admin_right")
        == "A revoked admin keeps no admin right"
    )
    assert gen.first_sentence("Short rule (see e.g. ADR 1: here). More text.\n\nBody.") == (
        "Short rule (see e.g. ADR 1: here)"
    )
    assert gen.first_sentence("A --ttl is read in s, m or h.") == "A --ttl is read in s, m or h"
    assert gen.first_sentence("Uses `a.b`. Then more.") == "Uses `a.b`"


def test_figures_are_written_only_when_the_generator_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import figures

    monkeypatch.delenv(figures.ENV, raising=False)
    figures.record("faults-none", section="Faults injected", summary=["nothing"])
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv(figures.ENV, str(tmp_path / "figs"))
    figures.record(
        "faults-sigkill",
        section="Faults injected",
        summary=["3 rounds"],
        columns=["a", "b"],
        rows=[[1, "x|y"]],
    )
    assert [p.name for p in (tmp_path / "figs").iterdir()] == ["faults-sigkill.json"]
    with pytest.raises(ValueError, match="2 cells, the columns are 1"):
        figures.record("bad-row", section="S", columns=["a"], rows=[[1, 2]])
    with pytest.raises(ValueError, match="figure name"):
        figures.record("../escape", section="S")


def test_recorded_figures_render_under_their_section_in_order(
    gen: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import figures

    monkeypatch.setenv(figures.ENV, str(tmp_path))
    figures.record("soak-sqlite", section="Soak", summary=["60 s"], columns=["events"], rows=[[1200]])
    figures.record("faults-b", section="Faults injected", columns=["fault", "rounds"], rows=[["kill", 4]])
    figures.record("faults-a", section="Faults injected", summary=["seed 7"])
    found = gen.read_figures([tmp_path])
    doc = gen.render([], gen.Run({}, 0.0, "2026-12-04"), "here", found)
    assert "- Figures recorded by the tests: 3 blocks" in doc
    faults, soak = doc.index("### Faults injected"), doc.index("### Soak")
    assert faults < doc.index("`faults-a`") < doc.index("`faults-b`") < soak < doc.index("`soak-sqlite`")
    assert "| fault | rounds |\n| --- | --- |\n| kill | 4 |" in doc
    assert "- seed 7" in doc


def test_a_later_run_s_figures_replace_an_earlier_run_s(gen: ModuleType, tmp_path: Path) -> None:
    first, rerun = tmp_path / "first", tmp_path / "rerun"
    for directory, rounds in ((first, "1"), (rerun, "2")):
        directory.mkdir()
        (directory / "faults-x.json").write_text(
            json.dumps({"section": "Faults injected", "columns": ["rounds"], "rows": [[rounds]]})
        )
    (found,) = gen.read_figures([first, rerun])
    assert found.rows == (("2",),)


def test_a_malformed_figures_block_is_an_error_naming_the_file(gen: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{"summary": []}')
    with pytest.raises(SystemExit, match=r"broken\.json: not a figures block"):
        gen.read_figures([tmp_path])
    (tmp_path / "broken.json").write_text('{"section": "S", "columns": ["a"], "rows": [["1", "2"]]}')
    with pytest.raises(SystemExit, match="cell count"):
        gen.read_figures([tmp_path])
