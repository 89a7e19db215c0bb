"""What the README states about the code, checked against the code, so that it cannot drift.

The rules: the README's event-type table is the closed list the log accepts
(``EVENT_TYPES``), and the types it calls reserved are written by nothing in ``src/``
while the others are; its table of what ``proctor init`` creates is, path for path and
mode for mode, what ``initialize`` creates; the example files the walkthrough uses are
valid (the policy sets compile with Cedar, every line of ``events.jsonl`` is an
event), and the Cedar excerpt shown is the example's; every shell block of the README
is either run by the walkthrough test or marked as set-up; the revocation figure of its
status is ``docs/benchmarks-history.md``'s median of the span it names, and the demo's figures
are named as the demo prints them (they measure other spans).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

import proctor
from proctor.governor.service import initialize
from proctor.lineage.events import EVENT_TYPES, Event
from proctor.policy import PolicyBundle, PolicyEngine

SRC = Path(proctor.__file__).parent
REPO = SRC.parents[1]
README = REPO / "README.md"
BENCHMARKS = REPO / "docs" / "benchmarks-history.md"
EXAMPLES = REPO / "examples"
RESERVED = "nothing yet"


def readme() -> str:
    return README.read_text(encoding="utf-8")


def marked_table(marker: str) -> list[list[str]]:
    """The rows (cells, stripped) of the Markdown table right after ``<!-- marker -->``."""
    text = readme()
    tag = f"<!-- {marker} -->\n"
    if text.count(tag) != 1:
        raise AssertionError(f"README.md: expected one {tag.strip()}, found {text.count(tag)}")
    lines = text[text.index(tag) + len(tag) :].splitlines()
    table = []
    for line in lines:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    if len(table) < 3 or not set(table[1][0]) <= set("-: "):
        raise AssertionError(f"README.md: expected a table after {tag.strip()}, found {lines[:3]}")
    return table[2:]


def code(cell: str) -> str:
    """The one `code span` a cell holds."""
    m = re.fullmatch(r"`([^`]+)`", cell)
    if m is None:
        raise AssertionError(f"README.md: expected a `code` cell, found {cell!r}")
    return m.group(1)


# -- event types ----------------------------------------------------------------------


def _writers(kind: str) -> list[str]:
    """The source files (the log's own list aside) that build an event of this type."""
    write = re.compile(rf'(?:"type":\s*|type\s*=\s*)"{re.escape(kind)}"')
    return [
        str(path.relative_to(SRC))
        for path in sorted(SRC.rglob("*.py"))
        if path != SRC / "lineage" / "events.py" and write.search(path.read_text(encoding="utf-8"))
    ]


def test_readme_event_types_are_the_closed_list() -> None:
    rows = marked_table("event-types")
    listed = [code(row[0]) for row in rows]
    assert len(listed) == len(set(listed)), f"README.md lists an event type twice: {listed}"
    assert set(listed) == EVENT_TYPES, (
        f"README.md's event types differ from EVENT_TYPES: missing {sorted(EVENT_TYPES - set(listed))}, "
        f"not accepted by the log {sorted(set(listed) - EVENT_TYPES)}"
    )


@pytest.mark.parametrize("row", marked_table("event-types"), ids=lambda row: code(row[0]))
def test_readme_says_which_event_types_are_written(row: list[str]) -> None:
    kind, writer = code(row[0]), row[1]
    found = _writers(kind)
    if writer.startswith(RESERVED):
        assert not found, f"README.md calls {kind!r} reserved, but {found} write it"
    else:
        assert found, f"README.md says {writer} writes {kind!r}, but nothing in src/ does"


# -- what `proctor init` creates ------------------------------------------------------


def test_readme_init_table_is_what_init_creates(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    data = tmp_path / "data"
    initialize(data)
    found = {
        "./" if path == data else str(path.relative_to(data)) + ("/" if path.is_dir() else ""): (
            stat.S_IMODE(path.lstat().st_mode)
        )
        for path in [data, *data.rglob("*")]
    }
    documented = {}
    for row in marked_table("init-layout"):
        mode = row[1]
        if mode == "umask":  # created by SQLite or open(): 0666 less the umask
            documented[code(row[0])] = 0o666 & ~umask
        elif re.fullmatch(r"0[0-7]{3}", mode):
            documented[code(row[0])] = int(mode, 8)
        else:
            raise AssertionError(f"README.md: expected a mode like 0600 or 'umask', found {mode!r}")
    assert documented == found, (
        f"README.md's table of what proctor init creates differs: documented "
        f"{ {k: oct(v) for k, v in sorted(documented.items())} }, found "
        f"{ {k: oct(v) for k, v in sorted(found.items())} }"
    )


# -- the example files ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["policies", "new-policies"])
def test_example_policy_sets_compile(name: str) -> None:
    engine = PolicyEngine.compile(PolicyBundle.from_path(EXAMPLES / name, version=1))
    assert engine.bundle_digest.startswith("sha256:")


def test_example_events_are_events() -> None:
    lines = [ln for ln in (EXAMPLES / "events.jsonl").read_bytes().splitlines() if ln.strip()]
    assert lines, "examples/events.jsonl holds no event"
    for n, line in enumerate(lines, start=1):
        event = Event.from_bytes(line)  # raises EventError naming what is wrong
        assert event.data["type"] in EVENT_TYPES, f"examples/events.jsonl:{n}"


def test_readme_cedar_excerpt_is_the_example_policy() -> None:
    blocks = re.findall(r"^```cedar\n(.*?)^```$", readme(), flags=re.MULTILINE | re.DOTALL)
    assert blocks, "README.md shows no Cedar"
    example = (EXAMPLES / "policies" / "exec.cedar").read_text(encoding="utf-8")
    for block in blocks:
        assert block in example, f"README.md's Cedar excerpt is not in examples/policies/exec.cedar:\n{block}"


def test_readme_shell_blocks_are_all_run_or_set_up() -> None:
    text = readme()
    for m in re.finditer(r"^```(sh|bash|shell|console|python)$", text, flags=re.MULTILINE):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        line = text.count("\n", 0, m.start()) + 1
        assert before in ("<!-- walkthrough -->", "<!-- setup -->"), (
            f"README.md:{line}: a {m.group(1)} block that the walkthrough test does not run: "
            f"mark it <!-- walkthrough --> (and make it work as typed) or <!-- setup -->"
        )


# -- revocation latency: the benchmark's figure and the demo's ------------------------

_REVOKE_SPAN = "revoke call → every process of the tree dead"


def _flat(text: str) -> str:
    """``text`` with every run of whitespace one space (README lines wrap anywhere)."""
    return " ".join(text.split())


def test_readme_revocation_figure_is_the_benchmarks_median_of_the_span_it_names() -> None:
    rows = [
        line
        for line in BENCHMARKS.read_text(encoding="utf-8").splitlines()
        if line.startswith(f"| {_REVOKE_SPAN}")
    ]
    assert len(rows) == 1, f"docs/benchmarks-history.md: expected one '{_REVOKE_SPAN}' row, found {rows}"
    p50 = re.search(r"\*\*([0-9.]+) ms\*\*", rows[0].split("|")[2])
    assert p50 is not None, f"docs/benchmarks-history.md: expected a bold p50 in {rows[0]!r}"
    text = _flat(readme())
    stated = re.search(r"dead about ([0-9]+) ms", text)
    assert stated is not None, "README.md states no revocation figure ('dead about N ms')"
    assert int(stated.group(1)) == round(float(p50.group(1))), (stated.group(0), p50.group(1))
    # It names the span it measures and where it comes from, beside the figure.
    around = text[stated.start() : stated.start() + 400]
    assert "docs/benchmarks-history.md" in around
    assert f'"{_REVOKE_SPAN}"' in around


@pytest.mark.parametrize("label", ["revocation latency at the governor", "end to end, as a user sees it"])
def test_readme_names_the_figures_the_demo_prints(label: str) -> None:
    """The demo's two figures are quoted as it prints them, next to what each spans, and
    the README says neither is the benchmark's."""
    assert label in (SRC / "demo.py").read_text(encoding="utf-8"), f"the demo no longer prints {label!r}"
    text = _flat(readme())
    assert f'"{label}' in text, f"README.md does not name the demo's figure {label!r}"
    assert 'Neither figure is the "about' in text
