"""Modules stay under 500 lines, or say why they are one module (issue 10, STYLE.md
"Modules stay under ~500 lines; split when a module has two reasons to change").

A module over :data:`MAX_LINES` passes only if its docstring holds a paragraph that
starts with the marker ``Why one module:`` and gives a reason: a module that grew past
the limit has to be split, or its author has to write down why it should not be.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "proctor"
MAX_LINES = 500
MARKER = "Why one module:"
MIN_REASON = 60
"""A reason shorter than this many characters after the marker is not a paragraph."""

MODULES = sorted(p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py"))


def size_problem(source: str, max_lines: int = MAX_LINES) -> str | None:
    """What is wrong with a module of ``source`` as to its size, or ``None``."""
    lines = len(source.splitlines())
    if lines <= max_lines:
        return None
    doc = ast.get_docstring(ast.parse(source)) or ""
    paragraphs = [" ".join(p.split()) for p in doc.split("\n\n")]
    reasons = [p[len(MARKER) :].strip() for p in paragraphs if p.startswith(MARKER)]
    if not reasons:
        return (
            f"{lines} lines (more than {max_lines}) and no paragraph starting {MARKER!r} in its "
            f"docstring: split it, or say why it is one module"
        )
    if len(reasons[0]) < MIN_REASON:
        return f"{lines} lines; its {MARKER!r} paragraph gives no reason ({reasons[0]!r})"
    return None


@pytest.mark.parametrize("module", MODULES)
def test_a_module_over_500_lines_says_why_it_is_one_module(module: str) -> None:
    problem = size_problem((SRC / module).read_text(encoding="utf-8"))
    assert problem is None, f"src/proctor/{module}: {problem}"


_REASON = "the parts share one invariant that is audited where every transition is written down."
_CASES = {
    "short, no marker": ('"""Short."""\nx = 1\n', True),
    "long, no marker": ('"""Long."""\n' + "x = 1\n" * 10, False),
    "long, marker in a comment only": ('"""Long."""\n# Why one module: because.\n' + "x = 1\n" * 10, False),
    "long, marker with no reason": ('"""Long.\n\nWhy one module: because.\n"""\n' + "x = 1\n" * 10, False),
    "long, marker and a reason": (f'"""Long.\n\nWhy one module: {_REASON}\n"""\n' + "x = 1\n" * 10, True),
    "long, wrapped reason": (
        f'"""Long.\n\nWhy one module: the parts share\none invariant {_REASON}\n"""\n' + "x = 1\n" * 10,
        True,
    ),
}


@pytest.mark.parametrize(("source", "passes"), list(_CASES.values()), ids=list(_CASES))
def test_the_size_rule_itself(source: str, passes: bool) -> None:
    assert (size_problem(source, max_lines=5) is None) is passes
